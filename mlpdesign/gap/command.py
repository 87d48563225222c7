"""``gap-command``: the ``gap_fit`` command line for the kernel that chose the data.

The descriptor and kernel keys come verbatim from the store's GAP string, so the model is
fitted with the kernel the design was made with. The rest is what ``mlpdesign fit`` runs
(:mod:`mlpdesign.gap.fit` builds the arguments, so the two never disagree): per descriptor
``n_sparse``/``sparse_method`` unless the string sets them (``distance_2b``: 20 points on a
uniform grid; SOAP and other many-body descriptors: CUR on points), ``default_sigma``,
``e0_method=average`` (one element, no isolated-atom frame), ``sparse_jitter``,
``rnd_seed`` and the ``*_parameter_name`` keys of the labelled-set format. Here, the
many-body ``n_sparse`` is also capped at the number of atoms in the training set (gap_fit
would otherwise lower it itself, with a warning, to the number of distinct environments).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.fit import (
    DEFAULT_N_SPARSE,
    DEFAULT_SIGMA,
    PAIR_DESCRIPTORS,
    FitOptions,
    check_species,
    fit_specs,
    gap_fit_args,
)
from mlpdesign.gap.label import read_labelled
from mlpdesign.gap.strings import parse_gap
from mlpdesign.io.store import open_store

#: Descriptors whose value is one distance: sparse points on a uniform grid, not capped.


@dataclass
class TrainingSet:
    """What the command depends on in the labelled set."""

    n_configs: int
    n_atoms: int
    frames: list


def read_training_set(path: str | os.PathLike) -> TrainingSet:
    """Read a labelled set (checking its labels) and count configurations and atoms."""
    frames = read_labelled(path)
    return TrainingSet(n_configs=len(frames), n_atoms=sum(len(a) for a in frames), frames=frames)


def command_args(
    gap: str,
    at_file: str,
    gp_file: str = "gap.xml",
    sigma: Sequence[float] | None = None,
    seed: int = 1,
    train: TrainingSet | None = None,
) -> list[str]:
    """The ``gap_fit`` argument list (without the program name) for GAP string ``gap``."""

    sig = tuple(float(x) for x in (DEFAULT_SIGMA if sigma is None else sigma))
    if len(sig) != 4 or any(not x >= 0 for x in sig) or not sig[0] > 0:
        raise MlpdesignError(
            "--default-sigma needs 4 numbers, none negative and the first "
            "positive: energy (eV/atom), forces (eV/A), virials (eV/atom), "
            "Hessians"
        )
    n_sparse: dict[str, int] = {}
    if train is not None:
        for i, s in enumerate(parse_gap(gap)):
            if s.name in PAIR_DESCRIPTORS:
                continue
            want = int(s.kernel.get("n_sparse", 0)) or _default_n_sparse(s.name)
            if want > train.n_atoms:
                n_sparse[str(i + 1)] = max(1, train.n_atoms)
    options = FitOptions(gap=gap, sigma=sig, seed=seed, n_sparse=n_sparse)  # type: ignore[arg-type]
    specs = fit_specs(options)
    if train is not None:
        check_species(specs, train.frames, at_file)
    return gap_fit_args(specs, options, at_file=at_file, gp_file=gp_file)


def _default_n_sparse(name: str) -> int:
    return DEFAULT_N_SPARSE.get(name, 200)


def gap_fit_command(
    store: str | os.PathLike,
    at_file: str = "labelled.xyz",
    gp_file: str = "gap.xml",
    sigma: Sequence[float] | None = None,
    seed: int = 1,
    program: str = "gap_fit",
) -> tuple[str, list[str]]:
    """The shell command line fitting a GAP with the store's kernel; returns it and notes.

    ``at_file`` is checked (labels, species) and caps the sparse sets when it exists;
    otherwise a note says the defaults assume a large training set.
    """
    with open_store(store) as st:
        gap = st.gap
    notes: list[str] = []
    train = None
    if Path(at_file).exists():
        train = read_training_set(at_file)
    else:
        notes.append(
            f"{at_file} does not exist yet: n_sparse is not capped by its size "
            "(gap_fit lowers it, with a warning, if the set is smaller)"
        )
    args = command_args(gap, at_file, gp_file, sigma, seed, train)
    return " ".join(shlex.quote(a) for a in [program, *args]), notes
