"""The select stage: greedy designs over a pool's kernel.

:func:`run` is its front door (a store in, a selection file out; in memory, streamed or
over MPI ranks, chosen from ``memory_limit``/``comm``/``block_rows``). The loop and the
criteria protocol are in :mod:`mlpdesign.select.engine` (``engine.greedy``); the library
calls on a KernelData in memory and the textbook reference in :mod:`mlpdesign.select.greedy`
(a module: this package does not shadow it with the loop's name).
"""

from mlpdesign.select.engine import CRITERIA, Criterion, Design
from mlpdesign.select.maxent import MaxEnt
from mlpdesign.select.stage import Options, run

CRITERIA.setdefault("maxent", MaxEnt)

__all__ = ["CRITERIA", "Criterion", "Design", "MaxEnt", "Options", "run"]
