"""mlpdesign: optimal design of training sets for GAP interatomic potentials.

The folders are the pipeline: ``generate`` -> ``describe`` (QUIP descriptors into an HDF5
store, ``io``) -> ``select`` (greedy designs on the GAP kernel, ``kernels``) -> ``report``;
``io.write`` and ``dft`` (VASP inputs, collect) -> ``gap`` (gap_fit, label, crossval).
``cli`` is a thin click layer over them.
"""

__version__ = "0.1.0"
