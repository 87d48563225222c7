"""Dense linear algebra of the MaxEnt criteria, with scipy loaded on first use.

``scipy.linalg`` brings its own BLAS (about 27 MiB resident once imported); only the
criteria that solve with a Cholesky factor (``--criterion maxent``, ``--refine exchange``,
``score``) need it, so a max-min ``select`` or a ``report`` never loads it.
"""

from __future__ import annotations

import numpy as np


def solve_triangular(a: np.ndarray, b: np.ndarray, **options) -> np.ndarray:
    """:func:`scipy.linalg.solve_triangular` (the same call, the same bits)."""
    from scipy.linalg import solve_triangular as solve  # scipy on first use (module doc)

    return solve(a, b, **options)
