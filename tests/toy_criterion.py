"""A criterion written once, for tests/test_engine.py: the largest Psi per atom."""

from __future__ import annotations

import numpy as np

from mlpdesign.select.engine import Criterion


class PsiPerAtom(Criterion):
    """Pick the candidate with the largest Psi divided by its number of atoms."""

    name = "psi_per_atom"

    def start(self, space) -> None:
        super().start(space)  # floor = eps: a duplicate (Psi <= eps) is at most eps per atom
        self.atoms = np.asarray(space.n_atoms, dtype=np.float64)

    def values(self, space) -> np.ndarray:
        return space.psi / self.atoms


def reference(kd, n: int) -> list[int]:
    """The textbook loop of this criterion: full rows, min, divide, argmax (tie rule)."""
    from mlpdesign.kernels.nearest import pool_eps
    from mlpdesign.select.engine import tie_argmax, tie_window

    eps = pool_eps(kd)
    tie = tie_window(eps, kd.terms[0].rows.dtype)
    s = tie_argmax(kd.d2_row(0), tie)
    picks, psi = [s], kd.d2_row(s)
    psi[s] = -1.0
    while len(picks) < n:
        v = psi / kd.n_atoms
        s = tie_argmax(v, tie)
        picks.append(s)
        psi = np.minimum(psi, kd.d2_row(s))
        psi[picks] = -1.0
    return picks


if __name__ == "__main__":  # mpiexec -n 3 python toy_criterion.py STORE N OUT.h5
    import sys

    from mpi4py import MPI

    from mlpdesign.select import run

    run(
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        criterion=PsiPerAtom(),
        stratify=False,
        comm=MPI.COMM_WORLD,
    )
