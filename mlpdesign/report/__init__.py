"""The report stage: label-free quality of designs, metrics and figures.

:func:`run` is the stage's one front door: it takes ``memory_limit``, ``comm`` and
``block_rows`` and picks the engine itself (in memory: :func:`mlpdesign.report.metrics.report`;
streamed from HDF5 and/or split over MPI ranks: :func:`mlpdesign.report.streamed.report_scaled`).
"""

from __future__ import annotations

from typing import Any

from mlpdesign.report import metrics
from mlpdesign.report.metrics import ReportData


def run(
    store_path,
    selection_paths,
    output,
    *,
    memory_limit: Any = None,
    comm: Any = None,
    block_rows: int | None = None,
    **options: Any,
) -> ReportData | None:
    """Measure selections of a store against random designs; write ``metrics.json`` + PNGs.

    ``options`` are those of :func:`mlpdesign.report.metrics.report` (``n_random``, ``sizes``,
    ``seed``, ``jitter``, ``bins``, ``kernel``, ``force``, ``show_progress``). With a
    ``memory_limit``, an MPI ``comm`` or ``block_rows`` the pool is streamed in blocks and/or
    split over the ranks; rank 0 returns the ReportData, the other ranks None.
    """
    if memory_limit is None and comm is None and block_rows is None:
        return metrics.report(store_path, selection_paths, output, **options)
    from mlpdesign.kernels.blocks import BLOCK_ROWS
    from mlpdesign.report.streamed import report_scaled

    return report_scaled(
        store_path,
        selection_paths,
        output,
        memory_limit=memory_limit,
        comm=comm,
        block_rows=block_rows or BLOCK_ROWS,
        **options,
    )


__all__ = ["ReportData", "metrics", "run"]
