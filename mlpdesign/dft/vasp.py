"""``vasp``: one VASP run directory per configuration, written with ASE's VASP writers.

Each directory (named by ``candidate_id``) holds POSCAR (atoms grouped by species, ASE's
``ase-sort.dat`` beside it to map back), INCAR, KPOINTS (fully automatic mesh, ``Auto`` +
length), ``input.xyz`` (the configuration with every ``info`` key, for ``collect``) and,
when ``VASP_PP_PATH`` is set, POTCAR assembled by ASE from its PAW library. The output
folder also gets ``runs.txt`` (one directory per line, for a SLURM array) and an example
``submit.slurm``.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import atomic_dir, check_output_dir, require_file

#: INCAR presets. ``paper``: single point with stress at the paper's settings
#: (600 eV cut-off, Methfessel-Paxton smearing), tight electronic convergence.
PRESETS: dict[str, dict[str, str]] = {
    "paper": {
        "PREC": "Accurate",
        "ENCUT": "600",  # eV (paper, section 3)
        "EDIFF": "1E-6",  # eV: tight, forces and stress are labels too
        "NELM": "100",  # collect flags a run that used all of them as unconverged
        "ISMEAR": "1",  # Methfessel-Paxton, first order (paper)
        "SIGMA": "0.2",  # eV, usual for MP in transition metals
        "IBRION": "-1",  # no ionic update
        "NSW": "0",  # single point
        "ISIF": "2",  # compute the stress tensor (atoms and cell fixed since NSW=0)
        "LREAL": ".FALSE.",  # reciprocal-space projection: accurate forces and stress
        "LWAVE": ".FALSE.",
        "LCHARG": ".FALSE.",
    },
}
#: Length parameter of VASP's fully automatic k-mesh, per preset (paper: 60).
KPOINTS_LENGTH = {"paper": 60}

RUN_LIST = "runs.txt"
# Files VASP writes: a run folder holding any of them has results and is never rewritten.
VASP_OUTPUTS = (
    "OUTCAR",
    "vasprun.xml",
    "OSZICAR",
    "CONTCAR",
    "EIGENVAL",
    "DOSCAR",
    "IBZKPT",
    "PCDAT",
    "XDATCAR",
    "CHGCAR",
    "CHG",
    "WAVECAR",
    "vasp.out",
)
INPUT_XYZ = "input.xyz"
SORT_FILE = "ase-sort.dat"

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_TRUE = {"t", "true", ".true.", "1"}
_FALSE = {"f", "false", ".false.", "0"}


def _ase_key_kinds() -> dict[str, str]:
    """INCAR keys ASE knows, with their kind (float, int, bool, ...)."""
    from ase.calculators.vasp import create_input as ci

    kinds: dict[str, str] = {}
    for kind in (
        "float",
        "exp",
        "string",
        "int",
        "bool",
        "list_int",
        "list_bool",
        "list_float",
        "special",
        "dict",
    ):
        for k in getattr(ci, f"{kind}_keys", []):
            kinds.setdefault(k.upper(), kind)
    return kinds


def parse_incar_overrides(items: Sequence[str]) -> tuple[dict[str, str | None], list[str]]:
    """Parse ``KEY=VALUE`` overrides (``KEY=`` removes a preset key); return them and warnings.

    Values of keys ASE knows are checked by kind (number, integer, logical); logicals are
    written the VASP way (``.TRUE.``). Unknown keys are kept as given, with a warning.
    """
    kinds = _ase_key_kinds()
    out: dict[str, str | None] = {}
    warnings: list[str] = []
    for item in items:
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not _KEY.fullmatch(key):
            raise MlpdesignError(f"--incar {item!r}: expected KEY=VALUE, e.g. --incar ENCUT=500")
        if "\n" in value or "#" in value or "!" in value:
            raise MlpdesignError(f"--incar {item!r}: the value may not hold a newline or comment")
        key = key.upper()
        if key in out:
            raise MlpdesignError(f"--incar {key} given twice")
        if value == "":
            out[key] = None
            continue
        kind = kinds.get(key)
        if kind is None:
            warnings.append(f"INCAR key {key} is not one ASE knows; written as given")
        elif kind in ("float", "exp"):
            try:
                number = float(value.replace("d", "e").replace("D", "E"))
            except ValueError:
                raise MlpdesignError(f"--incar {key}={value}: expected a number") from None
            if not math.isfinite(number):
                raise MlpdesignError(f"--incar {key}={value}: expected a finite number")
        elif kind == "int":
            if not re.fullmatch(r"[+-]?\d+", value):
                raise MlpdesignError(f"--incar {key}={value}: expected an integer")
        elif kind == "bool":
            low = value.lower()
            if low not in _TRUE | _FALSE:
                raise MlpdesignError(f"--incar {key}={value}: expected .TRUE. or .FALSE.")
            value = ".TRUE." if low in _TRUE else ".FALSE."
        out[key] = value
    return out, warnings


def incar_settings(preset: str, overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    """The INCAR of ``preset`` with ``overrides`` applied (``None`` removes a key)."""
    if preset not in PRESETS:
        raise MlpdesignError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    incar = dict(PRESETS[preset])
    for k, v in (overrides or {}).items():
        if v is None:
            incar.pop(k, None)
        else:
            incar[k] = v
    return incar


def species_sort(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """ASE's ``(sort, resort)``: atoms grouped by species in order of first appearance.

    ``atoms[sort]`` is what POSCAR holds; ``vasp_atoms[resort]`` is back in input order.
    The sort is stable, so a one-element cell keeps its order.
    """
    symbols = atoms.get_chemical_symbols()
    first = {s: i for i, s in reversed(list(enumerate(symbols)))}
    key = np.array([first[s] for s in symbols])
    sort = np.argsort(key, kind="stable")
    resort = np.empty_like(sort)
    resort[sort] = np.arange(len(sort))
    return sort, resort


def read_sort_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read ASE's ``ase-sort.dat`` (columns: sort, resort)."""
    data = np.loadtxt(path, dtype=int, ndmin=2)
    if data.shape[1] != 2:
        raise ValueError("expected two integer columns")
    return data[:, 0], data[:, 1]


def run_names(frames: Sequence[Atoms], source: str) -> list[str]:
    """Directory names: zero-padded ``candidate_id`` (or ``frame-<i>`` if no frame has one)."""
    ids = [a.info.get("candidate_id") for a in frames]
    have = [i is not None for i in ids]
    if not any(have):
        width = max(6, len(str(len(frames) - 1)))
        return [f"frame-{i:0{width}d}" for i in range(len(frames))]
    if not all(have):
        k = have.index(False)
        raise MlpdesignError(
            f"{source}: frame {k} has no candidate_id but others do; "
            "run directories are named by it"
        )
    try:
        ints = [int(i) for i in ids]
    except (TypeError, ValueError):
        raise MlpdesignError(f"{source}: candidate_id must be an integer") from None
    seen: set[int] = set()
    for i in ints:
        if i in seen:
            raise MlpdesignError(f"{source}: candidate_id {i} occurs twice")
        if i < 0:
            raise MlpdesignError(f"{source}: negative candidate_id {i}")
        seen.add(i)
    width = max(6, len(str(max(ints))))
    return [f"{i:0{width}d}" for i in ints]


def _potcar_writer(pp: str, setups: str):
    """A function writing POTCAR for sorted atoms into a folder, or None without VASP_PP_PATH."""
    pppath = os.environ.get("VASP_PP_PATH")
    if not pppath:
        return None
    if not os.path.isdir(pppath):
        raise MlpdesignError(f"VASP_PP_PATH={pppath} is not a folder")
    from ase.calculators.vasp.create_input import GenerateVaspInput

    def write(atoms: Atoms, directory: Path) -> None:
        gen = GenerateVaspInput()
        gen.set(pp=pp, setups=setups)
        try:
            with warnings.catch_warnings():  # VASP_PP_PATH is the documented convention here
                warnings.filterwarnings("ignore", message=".*VASP_PP_PATH.*")
                gen.initialize(atoms)
        except (RuntimeError, OSError) as e:
            looked = re.search(r"Looking for\s+(\S+)", str(e))
            where = f" (looked for {looked.group(1)})" if looked else ""
            raise MlpdesignError(
                f"no POTCAR for {atoms.get_chemical_formula()} with "
                f"pp={pp} setups={setups} under VASP_PP_PATH={pppath}"
                f"{where}"
            ) from None
        gen.write_potcar(directory=str(directory))

    return write


SLURM_TEMPLATE = """#!/bin/bash
# One VASP run per array task over the directories in {runs} (written by mlpdesign vasp).
# Submit from this folder, e.g.:  sbatch --array=1-{n}%50 submit.slurm
# Set VASP_COMMAND to how VASP starts on your cluster (default: srun vasp_std), and add the
# #SBATCH lines your cluster needs (partition, nodes, time, account).
#SBATCH --job-name=mlpdesign-vasp
#SBATCH --array=1-{n}
set -eu
cd "${{SLURM_SUBMIT_DIR:-.}}"
run=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {runs})
cd "$run"
# A run that already has results is never started again (its outputs would be overwritten).
for f in OUTCAR vasprun.xml OSZICAR; do
  [ -e "$f" ] && {{ echo "$run: $f exists, not rerun"; exit 0; }}
done
${{VASP_COMMAND:-srun vasp_std}} > vasp.out 2>&1
"""


@dataclass
class VaspInputs:
    """What :func:`write_vasp_inputs` wrote."""

    runs: list[str]
    incar: dict[str, str]
    kpoints_length: int
    potcar: bool
    warnings: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def write_run(
    directory: Path,
    atoms: Atoms,
    name: str,
    incar: dict[str, str],
    kpoints_length: int,
    potcar=None,
) -> None:
    """Write POSCAR, INCAR, KPOINTS, ase-sort.dat, input.xyz (and POTCAR) for one config."""
    from ase.calculators.vasp.create_input import format_kpoints
    from ase.io.extxyz import write_xyz
    from ase.io.vasp import write_vasp
    from ase.io.vasp_parsers.incar_writer import write_incar

    directory.mkdir()
    sort, resort = species_sort(atoms)
    sorted_atoms = atoms[sort]
    sorted_atoms.info = {}
    with open(directory / "POSCAR", "w") as fh:
        write_vasp(fh, sorted_atoms, direct=True, vasp5=True)
    with open(directory / SORT_FILE, "w") as fh:
        fh.writelines(f"{s:5d} {r:5d} \n" for s, r in zip(sort, resort, strict=True))
    write_incar(
        str(directory), {"SYSTEM": f"mlpdesign {name}", **incar}, header=f"# mlpdesign run {name}"
    )
    with open(directory / "KPOINTS", "w") as fh:
        fh.write(format_kpoints(int(kpoints_length), sorted_atoms))
    with open(directory / INPUT_XYZ, "w") as fh:
        write_xyz(fh, [atoms], write_results=False)
    if potcar is not None:
        potcar(sorted_atoms, directory)


def write_vasp_inputs(
    source: str | os.PathLike,
    output: str | os.PathLike,
    preset: str = "paper",
    incar: Sequence[str] = (),
    kpoints_length: int | None = None,
    pp: str = "PBE",
    setups: str = "recommended",
    force: bool = False,
    progress=None,
) -> VaspInputs:
    """One VASP run directory per frame of ``source`` (extxyz) under ``output``.

    ``incar``: ``KEY=VALUE`` overrides of the preset (``KEY=`` removes a key).
    POTCAR only when ``VASP_PP_PATH`` is set (ASE's conventions: ``pp`` names the PAW
    set, ``setups`` the variants, e.g. ``recommended`` gives Zr_sv).
    """
    from mlpdesign.io.frames import read_configs

    src = require_file(source, "configuration file")
    check_output_dir(output, force)
    overrides, warnings = parse_incar_overrides(incar)
    settings = incar_settings(preset, overrides)
    length = KPOINTS_LENGTH.get(preset, 60) if kpoints_length is None else kpoints_length
    if length <= 0:
        raise MlpdesignError(f"--kpoints-length must be a positive integer, got {length}")
    # the one reader: any format ASE reads, every frame physically checked
    frames = read_configs(src, "configuration file", assign_ids=False)
    for k, a in enumerate(frames):
        if len(a) == 0:
            raise MlpdesignError(f"{src}: frame {k} has no atoms")
        if not a.pbc.all() or a.cell.rank < 3:
            raise MlpdesignError(f"{src}: frame {k} is not a periodic 3-D cell")
    names = run_names(frames, str(src))
    potcar = _potcar_writer(pp, setups)
    out = Path(output)
    kept = [n for n in names if has_results(out / n)] if out.is_dir() else []
    with atomic_dir(output, force) as tmp:
        for atoms, name in zip(frames, names, strict=True):
            if name not in kept:
                write_run(tmp / name, atoms, name, settings, length, potcar)
            if progress is not None:
                progress.update(1)
        (tmp / RUN_LIST).write_text("".join(f"{n}\n" for n in names))
        (tmp / "submit.slurm").write_text(SLURM_TEMPLATE.format(runs=RUN_LIST, n=len(names)))
    return VaspInputs(
        runs=names,
        incar=settings,
        kpoints_length=length,
        potcar=potcar is not None,
        warnings=warnings,
        kept=kept,
    )


def has_results(run: Path) -> bool:
    """True when a run folder holds any VASP output: such a run is never rewritten."""
    return run.is_dir() and any((run / f).exists() for f in VASP_OUTPUTS)
