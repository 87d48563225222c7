"""mlpdesign: optimal design of training sets for GAP interatomic potentials.

Stages (each a plain library function with a thin CLI over it):
``pool.generate`` -> ``descriptors``/``store`` (describe) -> ``select`` -> ``vasp`` (write,
collect) -> ``report``.
"""

__version__ = "0.1.0"
