"""Stand-in labels: energies, forces and virials from a classical potential instead of DFT.

Before paying for DFT, a design can be checked end to end (fit a GAP on the chosen
configurations, cross-validate it) with any ASE calculator standing in for the reference
method. The labelled set is written with the same keys and conventions as ``collect``
(``docs/formats.md``): ``dft_energy`` (eV), ``dft_forces`` (eV/A, per atom) and
``dft_virial`` (eV, = -stress x volume with ASE's stress sign, 9 numbers row-major so that
QUIP can read it). The key names are distinct from ``energy``/``forces`` so that ASE does not
swallow them into a calculator on read-back.

:func:`labelled_frame` and :func:`write_labelled` are the shared writers of this format;
:func:`read_labelled` is the shared reader (``fit`` and ``crossval`` use it).
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import atomic_path, check_output, require_file

#: Key names of the labelled-set format (shared with ``collect``).
ENERGY_KEY = "dft_energy"
FORCES_KEY = "dft_forces"
VIRIAL_KEY = "dft_virial"

#: ``gap_fit`` arguments that tell QUIP the key names above.
GAP_FIT_KEY_ARGS = (
    f"energy_parameter_name={ENERGY_KEY}",
    f"force_parameter_name={FORCES_KEY}",
    f"virial_parameter_name={VIRIAL_KEY}",
)


# ---------------------------------------------------------------------------- calculators


def eam_kind(path: str | os.PathLike) -> str:
    """The LAMMPS EAM format of a file, from its header and table size: ``eam`` (DYNAMO
    funcfl), ``eam/alloy`` or ``eam/fs`` (setfl; the same header, but eam/fs tabulates a
    density function per pair of elements: N*Nr values per element instead of Nr).

    One element: eam/alloy and eam/fs files are identical (read as eam/alloy).
    """
    p = require_file(path, "EAM potential file")
    with open(p, encoding="utf-8", errors="replace") as fh:
        head = [fh.readline() for _ in range(5)]
        rest = fh.read()
    w4 = head[3].split()
    try:
        setfl = len(w4) >= 2 and int(w4[0]) == len(w4) - 1
    except ValueError:
        setfl = False
    if not setfl:
        return "eam"
    n = len(w4) - 1
    try:
        w5 = head[4].split()
        nrho, nr = int(w5[0]), int(w5[2])
    except (ValueError, IndexError):
        raise MlpdesignError(
            f"{p}: line 5 should be 'Nrho drho Nr dr cutoff' of an EAM setfl file"
        ) from None
    values = len(" ".join(ln.split("#")[0] for ln in rest.splitlines()).split())
    pairs = n * (n + 1) // 2 * nr
    kinds = {
        "eam/alloy": n * (4 + nrho + nr) + pairs,
        "eam/fs": n * (4 + nrho + n * nr) + pairs,
    }
    for kind, want in kinds.items():
        if values == want:
            return kind
    raise MlpdesignError(
        f"{p}: {values} tabulated values fit neither eam/alloy ({kinds['eam/alloy']}) nor "
        f"eam/fs ({kinds['eam/fs']}) for {n} elements, Nrho={nrho}, Nr={nr}; truncated?"
    )


def eam_calculator(path: str | os.PathLike):
    """matscipy's EAM calculator for a LAMMPS ``eam``/``eam/alloy``/``eam/fs`` file, its
    kind read from the file (:func:`eam_kind`), whatever its name.

    matscipy is ~50x faster than ASE's own EAM on small cells (about 1 ms per cell).
    """
    p = require_file(path, "EAM potential file")
    from matscipy.calculators.eam import EAM

    kind = eam_kind(p)
    try:
        calc = EAM(str(p), kind=kind)
    except Exception as e:  # noqa: BLE001 - any parse failure is bad input
        raise MlpdesignError(
            f"{p}: not a readable EAM potential file (read as {kind}: "
            f"{type(e).__name__}: {str(e).strip() or 'parse error'})"
        ) from None
    calc.mlpdesign_source = str(p)
    return calc


def calculator_from_spec(spec: str, kwargs: dict[str, Any] | None = None):
    """Instantiate ``module:Class`` (any ASE calculator) with keyword arguments."""
    mod_name, colon, cls_name = spec.partition(":")
    if not colon or not mod_name or not cls_name:
        raise MlpdesignError(
            f"--calculator expects module:Class, e.g. ase.calculators.emt:EMT, got {spec!r}"
        )
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise MlpdesignError(f"--calculator {spec}: cannot import {mod_name} ({e})") from None
    cls = getattr(mod, cls_name, None)
    if cls is None:
        raise MlpdesignError(f"--calculator {spec}: {mod_name} has no {cls_name}")
    known = calculator_parameters(cls)
    unknown = sorted(set(kwargs or {}) - known) if known is not None else []
    if unknown:
        raise MlpdesignError(
            f"--calc-arg {unknown[0]}: {cls_name} has no such parameter "
            f"(it takes {', '.join(sorted(known)) or 'none'})"
        )
    try:
        calc = cls(**(kwargs or {}))
    except Exception as e:  # noqa: BLE001 - a wrong argument is bad input
        raise MlpdesignError(
            f"--calculator {spec}: cannot create it ({type(e).__name__}: {e})"
        ) from None
    calc.mlpdesign_source = spec
    return calc


def calculator_parameters(cls) -> set[str] | None:
    """The keyword arguments ``cls`` takes: the named ones of every ``__init__`` in its
    class hierarchy plus an ASE calculator's ``default_parameters`` (ASE files any other
    keyword away silently); None when ``cls`` takes any keyword and says no more."""
    import inspect

    names: set[str] = set(getattr(cls, "default_parameters", None) or {})
    open_ended = True
    for klass in getattr(cls, "__mro__", [cls]):
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        kinds = {p.kind for p in params}
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {
            "self"
        }
        if inspect.Parameter.VAR_KEYWORD not in kinds:
            open_ended = False
            break
    if open_ended and not hasattr(cls, "default_parameters"):
        return None
    return names


def parse_calc_args(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> kwargs; values are JSON when they parse as JSON, else strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise MlpdesignError(f"--calc-arg expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def check_species(calc, frames: Sequence[Atoms], where: str = "") -> None:
    """Refuse frames with elements the calculator has no parameters for (EAM only).

    matscipy would stop on the first such frame with a long message; checking all
    species up front gives one clear line before any work.
    """
    known = getattr(calc, "_db_atomic_numbers", None)
    if known is None:
        return
    from ase.data import chemical_symbols

    have = {int(z) for a in frames for z in np.unique(a.numbers)}
    missing = sorted(have - {int(z) for z in known})
    if missing:
        src = getattr(calc, "mlpdesign_source", "the EAM potential")
        names = ", ".join(chemical_symbols[z] for z in missing)
        knows = ", ".join(chemical_symbols[int(z)] for z in known)
        raise MlpdesignError(
            f"{src} has parameters for {knows} only; {where or 'the set'} contains {names}"
        )


# ---------------------------------------------------------------------------- the format


def labelled_frame(
    atoms: Atoms, energy: float, forces: np.ndarray | None, stress: np.ndarray | None
) -> Atoms:
    """A copy of ``atoms`` carrying the labels in the shared format (no calculator attached).

    ``stress`` is ASE's stress (3x3 or Voigt 6, eV/A^3); the virial written is
    ``-stress * volume`` as 9 plain numbers.
    """
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    for k, v in atoms.info.items():
        if k not in (ENERGY_KEY, VIRIAL_KEY, "energy", "stress", "virial", "free_energy"):
            out.info[k] = v
    for k, v in atoms.arrays.items():
        if k not in ("numbers", "positions", FORCES_KEY, "forces"):
            out.arrays[k] = v.copy()
    if not math.isfinite(energy):
        raise MlpdesignError(
            f"non-finite energy {energy} for a configuration "
            f"(candidate_id {atoms.info.get('candidate_id', '?')})"
        )
    out.info[ENERGY_KEY] = float(energy)
    if forces is not None:
        f = np.asarray(forces, dtype=float).reshape(len(atoms), 3)
        if not np.all(np.isfinite(f)):
            raise MlpdesignError(
                "non-finite forces for a configuration "
                f"(candidate_id {atoms.info.get('candidate_id', '?')})"
            )
        out.arrays[FORCES_KEY] = f
    if stress is not None:
        s = np.asarray(stress, dtype=float)
        if s.shape == (6,):
            from ase.stress import voigt_6_to_full_3x3_stress

            s = voigt_6_to_full_3x3_stress(s)
        out.info[VIRIAL_KEY] = (-s * atoms.get_volume()).reshape(9)
    return out


def write_labelled(path: str | os.PathLike, frames: Iterable[Atoms], force: bool = False) -> int:
    """Write labelled frames as extxyz atomically; return how many were written.

    ``path`` ``-``: standard output, written in one go once every frame is done."""
    from ase.io.extxyz import write_xyz

    n = 0
    if str(path) == "-":
        buf = io.StringIO()
        for a in frames:
            write_xyz(buf, [a])
            n += 1
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
        return n
    with atomic_path(path, force) as tmp, open(tmp, "w") as fh:
        for a in frames:
            write_xyz(fh, [a])
            n += 1
    return n


def read_frames(path: str | os.PathLike, what: str = "extxyz file") -> list[Atoms]:
    """All frames of ``path`` (any format ASE reads) through the one reader
    (:func:`mlpdesign.io.frames.read_configs`: physically checked, one clear line for
    unreadable input)."""
    from mlpdesign.io.frames import read_configs

    return read_configs(path, what, assign_ids=False)


def _calc_result(a: Atoms, name: str):
    """A calculator result ASE attached on read (``energy``, ``forces``, ``stress``), or None."""
    calc = getattr(a, "calc", None)
    results = getattr(calc, "results", None) or {}
    return results.get(name)


def _ase_labels(a: Atoms, keys: tuple[str | None, str | None, str | None], i: int, path):
    """``(energy, forces, virial)`` of a frame under ``keys`` (None: ASE's own names,
    from info, arrays or the calculator ASE made on read); virial from ``stress`` when
    the frame has no virial (``-stress * volume``, periodic cells only)."""
    ek, fk, vk = keys
    e = a.info.get(ek or "energy", _calc_result(a, ek or "energy"))
    if e is None:
        raise MlpdesignError(
            f"{path}: configuration {i} has no {ek or ENERGY_KEY} label (nor ASE's energy); "
            "run 'mlpdesign label' (or 'collect' for DFT) first, or name it with --energy-key"
        )
    f = a.arrays.get(fk or "forces", _calc_result(a, fk or "forces"))
    if fk is not None and f is None:
        raise MlpdesignError(f"{path}: configuration {i} has no {fk} array")
    v = a.info.get(vk or "virial")
    if vk is not None and v is None:
        raise MlpdesignError(f"{path}: configuration {i} has no {vk} label")
    if v is None:
        stress = a.info.get("stress", _calc_result(a, "stress"))
        if stress is not None and all(a.pbc):
            from ase.stress import voigt_6_to_full_3x3_stress

            st = np.asarray(stress, dtype=float)
            st = voigt_6_to_full_3x3_stress(st) if st.shape == (6,) else st.reshape(3, 3)
            v = -st * a.get_volume()
    return e, f, v


def _relabelled(a: Atoms, keys, i: int, path) -> Atoms:
    """The frame in the labelled-set format from the keys ``keys`` (see :func:`_ase_labels`)."""
    e, f, v = _ase_labels(a, keys, i, path)
    try:
        e = float(e)
    except (TypeError, ValueError):
        raise MlpdesignError(f"{path}: configuration {i}: energy {e!r} is not a number") from None
    out = labelled_frame(a, e, f, None)
    if v is not None:
        out.info[VIRIAL_KEY] = np.asarray(v, dtype=float).reshape(-1)
    return out


def read_labelled(
    path: str | os.PathLike,
    need_forces: bool = False,
    keys: tuple[str | None, str | None, str | None] = (None, None, None),
) -> list[Atoms]:
    """:func:`labelled_set` without its second value."""
    return labelled_set(path, need_forces, keys)[0]


def labelled_set(
    path: str | os.PathLike,
    need_forces: bool = False,
    keys: tuple[str | None, str | None, str | None] = (None, None, None),
) -> tuple[list[Atoms], bool]:
    """Read a labelled set and check that every frame carries an energy.

    Frames read back keep the labels in ``info``/``arrays`` (no calculator), as
    ``dft_energy``/``dft_forces``/``dft_virial``. ``keys`` = (energy, forces, virial) key
    names to take the labels from instead; by default a frame without ``dft_energy``
    falls back on ASE's ``energy``/``forces``/``virial`` (or ``stress``), from its info
    and arrays or the calculator ASE made on read (an MD ``.traj``, a VASP output, an
    extxyz with ``energy=``): those frames are returned converted to the format.
    Returns ``(frames, whether any frame was converted)``.
    """
    frames = read_frames(path, "labelled set")
    converted = False
    for i, a in enumerate(frames):
        if keys != (None, None, None) or ENERGY_KEY not in a.info:
            frames[i] = a = _relabelled(a, keys, i, path)
            converted = True
        check_labels(a, i, path, need_forces)
    return frames, converted


def check_labels(a: Atoms, i: int, path, need_forces: bool = False) -> None:
    """One line naming the file and configuration for a missing, non-numeric or non-finite
    energy, forces of the wrong shape or not finite, or a virial not 9 finite numbers."""
    where = f"{path}: configuration {i}"
    e = a.info.get(ENERGY_KEY)
    if not isinstance(e, (int, float, np.floating, np.integer)) or not math.isfinite(e):
        shown = float(e) if isinstance(e, (np.floating, np.integer)) else e
        raise MlpdesignError(f"{where} has a non-numeric or non-finite {ENERGY_KEY} ({shown!r})")
    f = a.arrays.get(FORCES_KEY)
    if need_forces and f is None:
        raise MlpdesignError(f"{where} has no {FORCES_KEY}")
    if f is not None and (np.shape(f) != (len(a), 3) or not np.all(np.isfinite(f))):
        raise MlpdesignError(f"{where}: {FORCES_KEY} must be {len(a)}x3 finite numbers")
    v = a.info.get(VIRIAL_KEY)
    if v is None:
        return
    if np.size(v) != 9:
        raise MlpdesignError(f"{where}: {VIRIAL_KEY} must be 9 numbers, got {np.size(v)}")
    try:
        finite = bool(np.all(np.isfinite(np.asarray(v, dtype=float))))
    except (TypeError, ValueError):
        finite = False
    if not finite:
        raise MlpdesignError(f"{where}: {VIRIAL_KEY} must be 9 finite numbers")


# ---------------------------------------------------------------------------- labelling


def label_frames(
    frames: Sequence[Atoms], calc, forces: bool = True, virial: bool = True, progress=None
) -> Iterable[Atoms]:
    """Yield each frame labelled by ``calc`` (energy, and forces/virial when asked).

    The virial is only computed for fully periodic cells (a stress needs a volume).
    """
    for a in frames:
        work = a.copy()
        work.calc = calc
        try:
            e = work.get_potential_energy()
            f = work.get_forces() if forces else None
            s = work.get_stress(voigt=False) if virial and all(work.pbc) else None
        except MlpdesignError:
            raise
        except Exception as ex:  # noqa: BLE001 - a calculator failure on one input
            cid = a.info.get("candidate_id", "?")
            raise MlpdesignError(
                f"the calculator failed on candidate_id {cid}: "
                f"{type(ex).__name__}: {str(ex).strip()[:200]}"
            ) from None
        yield labelled_frame(a, e, f, s)
        if progress is not None:
            progress.update(1)


def label(
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    calc,
    forces: bool = True,
    virial: bool = True,
    force: bool = False,
    progress_factory: Callable[[int], Any] | None = None,
) -> int:
    """Label every configuration of ``input_path`` with ``calc``; write ``output`` (extxyz).

    Returns the number of configurations written. Nothing is written on failure.
    ``output`` ``-``: standard output.
    """
    if str(output) != "-":
        check_output(output, force)
    if str(output) != "-" and Path(output).resolve() == Path(input_path).resolve():
        raise MlpdesignError("the output would overwrite the input; choose another -o")
    frames = read_frames(input_path, "input file")
    check_species(calc, frames, str(input_path))
    bar = progress_factory(len(frames)) if progress_factory else None
    try:
        return write_labelled(output, label_frames(frames, calc, forces, virial, bar), force)
    finally:
        if bar is not None:
            bar.close()
