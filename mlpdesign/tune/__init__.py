"""The tune stage: choose the descriptor before the design (paper, section 3).

:func:`run` is the stage's one front door. On a seeded random sample of the pool it describes
the sample once per distinct descriptor setting of a grid (``--vary``), computes every pairwise
D² with the kernel ``select`` would use, and reports per setting the fractions of overlapping
(D² ≈ 0) and orthogonal (D² ≈ 2) pairs, D² quantiles and each kernel term's share; it
recommends one setting by the rule of :func:`mlpdesign.tune.measure.recommend` and writes
``summary.json``, ``fractions.png`` and ``histograms.png`` into the output folder (atomically:
all or nothing). The rule and the defaults are explained in docs/tune.md.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.tune import measure
from mlpdesign.tune.grid import Setting, build_grid, descriptor_groups, parse_vary

#: Defaults, justified in docs/tune.md.
OVERLAP = 1e-3
ORTHOGONAL = 0.1
TIE = 0.1
RULE = (
    "smallest overlap + orthogonal fraction; settings within (1 + tie) x best + 1/n_pairs of it "
    "tie, and the tie goes to the fewest descriptor numbers per config, then the smaller sum of "
    "cutoffs, then the fewest keys changed from the starting gap string, then grid order"
)


@dataclass
class TuneResult:
    """What :func:`run` found: the summary (as in summary.json), the pair D² of every setting
    (pairs i < j of the sample, in store order), the sample's pool positions, the settings."""

    summary: dict
    d2: list[np.ndarray] = field(repr=False)
    sample: np.ndarray = field(repr=False)
    settings: list[Setting] = field(repr=False)
    output: Path | None = None


def _check_options(sample: int, overlap: float, orthogonal: float, tie: float) -> None:
    if sample < 2:
        raise MlpdesignError(f"--sample must be at least 2 (pairs are counted), got {sample}")
    if not 0 < overlap < 2:
        raise MlpdesignError(f"--overlap must lie in (0, 2), got {overlap}")
    if not 0 < orthogonal < 2:
        raise MlpdesignError(f"--orthogonal must lie in (0, 2), got {orthogonal}")
    if overlap > 2 - orthogonal:
        raise MlpdesignError(
            f"--overlap {overlap} and --orthogonal {orthogonal} overlap: a pair would count "
            "as both (need overlap <= 2 - orthogonal)"
        )
    if tie < 0:
        raise MlpdesignError(f"--tie must be >= 0, got {tie}")


def plan(pool, gap: str | None, vary: Sequence[str], min_distance: float | None = None):
    """Index the pool and build the validated grid: ``(pool, base specs, varies, settings)``."""
    from mlpdesign.describe.runner import prepare_specs
    from mlpdesign.io.frames import open_pool

    index = open_pool(pool) if min_distance is None else open_pool(pool, min_distance)
    base = prepare_specs(gap, index)
    varies = [parse_vary(v, base) for v in vary]
    return index, base, varies, build_grid(base, varies)


def _describe_group(sample_xyz: Path, store_path: Path, setting: Setting, opts: dict, progress):
    from mlpdesign import describe as describe_stage

    extra = {} if opts["min_distance"] is None else {"min_distance": opts["min_distance"]}
    return describe_stage.run(
        sample_xyz,
        store_path,
        gap=setting.gap,
        jobs=opts["jobs"],
        **extra,
        force=True,
        command="mlpdesign tune (sample store)",
        progress=progress,
    )


def _cutoff_sum(setting: Setting) -> float:
    return float(sum(float(s.params.get("cutoff", 0.0)) for s in setting.specs))


def _measure_all(sample_xyz, tmp, settings, opts, log, progress):
    """Describe each descriptor group once and measure each of its settings."""
    from mlpdesign.io.store import open_store

    groups = descriptor_groups(settings)
    records: list[dict | None] = [None] * len(settings)
    d2s: list[np.ndarray | None] = [None] * len(settings)
    done = 0
    for g, group in enumerate(groups):
        bar = None
        if progress is not None:
            bar = lambda total, initial, g=g: progress(total, f"describe {g + 1}/{len(groups)}")  # noqa: E731
        path = _describe_group(sample_xyz, Path(tmp) / f"group{g}.h5", group[0], opts, bar)
        with open_store(path) as store:
            for k, s in enumerate(group):
                rec, d2 = measure.measure(
                    store,
                    s.specs,
                    balance=opts["balance"],
                    overlap=opts["overlap"],
                    orthogonal=opts["orthogonal"],
                )
                rec.update(
                    index=s.index,
                    values=dict(s.values),
                    gap=s.gap,
                    descriptor_group=g,
                    described=k == 0,
                    changed=s.changed,
                    cutoff_sum=_cutoff_sum(s),
                )
                records[s.index], d2s[s.index] = rec, d2
                done += 1
                if log is not None:
                    log(_progress_line(done, len(settings), s, rec, k > 0))
    return records, d2s, len(groups)


def _progress_line(done: int, total: int, s: Setting, rec: dict, reused: bool) -> str:
    how = "rows reused" if reused else "described"
    return (
        f"tune: setting {done}/{total} ({s.label}; {how}): overlap "
        f"{100 * rec['overlap_fraction']:.3f} %, "
        f"orthogonal {100 * rec['orthogonal_fraction']:.3f} %, "
        f"median D2 {rec['quantiles']['50%']:.4g}"
    )


def run(
    pool: str | os.PathLike,
    output: str | os.PathLike | None,
    *,
    gap: str | None = None,
    vary: Sequence[str] = (),
    sample: int = 500,
    seed: int = 1,
    overlap: float = OVERLAP,
    orthogonal: float = ORTHOGONAL,
    tie: float = TIE,
    balance: bool = False,
    jobs: int = 1,
    min_distance: float | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    progress: Callable | None = None,
) -> TuneResult:
    """Tune the descriptor on a sample of ``pool``; write ``output``/summary.json and figures.

    ``pool``: one input or a list, as for describe; ``vary``: ``--vary`` texts (see
    :mod:`mlpdesign.tune.grid`); ``gap``: the starting GAP string (default: describe's
    default for this pool); ``min_distance``: as describe's (None: its default).
    ``output=None`` writes nothing.
    Everything is checked before any work: a bad option, key or value raises a one-line
    :class:`MlpdesignError` and writes nothing. ``progress(total, desc)`` makes the describe
    progress bars; ``log`` gets one line per setting.
    """
    from mlpdesign.io.atomic import check_output_dir
    from mlpdesign.io.lock import holding

    _check_options(sample, overlap, orthogonal, tie)
    if jobs < 1:
        raise MlpdesignError(f"--jobs must be >= 1, got {jobs}")
    opts = dict(balance=balance, overlap=overlap, orthogonal=orthogonal, jobs=jobs, tie=tie)
    opts["min_distance"] = min_distance
    if output is None:
        return _tune(pool, None, gap, vary, sample, seed, opts, force, log, progress)
    with holding(output):  # one run per output folder, for the whole run
        check_output_dir(output, force)
        return _tune(pool, output, gap, vary, sample, seed, opts, force, log, progress)


def _tune(pool, output, gap, vary, sample, seed, opts, force, log, progress) -> TuneResult:
    """:func:`run` once its options are checked and its output claimed."""
    from mlpdesign.io.atomic import atomic_dir

    index, base, varies, settings = plan(pool, gap, vary, opts["min_distance"])
    idx = measure.sample_indices(index.n_configs, sample, seed)
    with tempfile.TemporaryDirectory(prefix="mlpdesign-tune-") as tmp:
        sample_xyz = measure.write_sample(index, idx, Path(tmp) / "sample.xyz")
        records, d2s, n_groups = _measure_all(sample_xyz, tmp, settings, opts, log, progress)
    ids = [int(x) for x in index.candidate_id[idx]]
    n_pairs = len(idx) * (len(idx) - 1) // 2
    pick, tied = measure.recommend(records, n_pairs, opts["tie"])
    summary = _summary(pool, index, base, varies, opts)
    summary.update(
        sample={"size": len(idx), "seed": seed, "candidate_id": ids},
        n_pairs=n_pairs,
        n_described=n_groups,
        settings=records,
        tied=tied,
        recommended={"index": pick, "values": records[pick]["values"], "gap": records[pick]["gap"]},
    )
    out = None
    if output is not None:
        with atomic_dir(output, force) as tmpdir:
            write_outputs(summary, Path(tmpdir))
        out = Path(output)
    return TuneResult(summary, d2s, idx, settings, out)


def _summary(pool, index, base, varies, opts: dict) -> dict:
    """The parts of summary.json that the settings do not change."""
    return {
        "pool": index.path,
        "pool_sha256": index.checksum(),
        "pool_n_configs": index.n_configs,
        "start_gap": " : ".join(s.render() for s in base),
        "vary": [
            {"descriptor": v.name, "keys": list(v.keys), "values": list(v.values)} for v in varies
        ],
        "kernel": {"normalize": True, "balance": opts["balance"]},
        "overlap": opts["overlap"],
        "orthogonal": opts["orthogonal"],
        "tie": opts["tie"],
        "rule": RULE,
        "histogram_edges": [float(x) for x in measure.HIST_EDGES],
    }


def write_outputs(summary: dict, folder: Path) -> None:
    """summary.json, fractions.png and histograms.png into ``folder``."""
    from mlpdesign.tune import figures

    (folder / "summary.json").write_text(json_dumps(summary))
    figures.fractions(summary, folder / "fractions.png")
    figures.histograms(summary, folder / "histograms.png")


def json_dumps(summary: dict) -> str:
    """The summary as stable JSON text (sorted keys, one value per line)."""
    return json.dumps(summary, indent=1, sort_keys=True) + "\n"


__all__ = ["ORTHOGONAL", "OVERLAP", "TIE", "TuneResult", "run"]
