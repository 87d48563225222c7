"""``collect``: VASP results back to an extxyz training set that ``gap_fit`` reads as it is.

Each run directory is read through ASE (``vasprun.xml``, else ``OUTCAR``), checked
(complete file, electronic convergence, same atoms as ``input.xyz``) and turned into a
frame with ``dft_energy``, ``dft_forces`` and ``dft_virial`` plus every ``info`` key of the
configuration that was sent. A run that fails any check is reported with its reason and
never silently dropped or kept.

Virial convention: ``virial = -stress * volume`` (eV) with ASE's stress sign (positive =
tensile). ASE flips VASP's sign when it reads stress; quippy converts back the same way
(``stress = -virial / volume`` in ``quippy.potential``), and the GAP documentation warns
that VASP's sign is the opposite of QUIP's.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from mlpdesign.dft.vasp import INPUT_XYZ, RUN_LIST, SORT_FILE, read_sort_file
from mlpdesign.errors import MlpdesignError, PartialFailure
from mlpdesign.gap.label import labelled_frame
from mlpdesign.io.atomic import atomic_path, check_output
from mlpdesign.io.write import write_extxyz

#: VASP's default NELM when INCAR does not set it.
DEFAULT_NELM = 60
#: Largest displacement (Angstrom) / cell difference between input.xyz and a static run.
GEOMETRY_TOL = 1e-3
ENERGIES = ("free", "sigma0")


class RunFailed(Exception):
    """One run cannot be used; the message is the reason (one line)."""


@dataclass
class RunResult:
    """The outcome of one run directory."""

    name: str
    atoms: Atoms | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class CollectResult:
    """What :func:`collect` found and wrote."""

    results: list[RunResult]
    written: int
    output: Path | None

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if r.atoms is None]


# ---------------------------------------------------------------------------- finding runs


def _looks_like_run(d: Path) -> bool:
    return any((d / f).exists() for f in ("INCAR", "POSCAR", "vasprun.xml", "OUTCAR", INPUT_XYZ))


def find_runs(paths: list[str | os.PathLike]) -> list[tuple[str, Path]]:
    """Run directories named by ``paths``: a run itself (or its ``vasprun.xml``/``OUTCAR``),
    or a folder of runs.

    A folder with ``runs.txt`` (written by ``mlpdesign vasp``) gives exactly the listed
    runs, in that order, so a run that never produced a directory is still reported;
    otherwise its sub-folders that look like VASP runs, sorted by name.
    """
    if not paths:
        raise MlpdesignError("no run folder given")
    runs: list[tuple[str, Path]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise MlpdesignError(f"{p}: no such folder")
        if p.is_file() and p.name in ("vasprun.xml", "OUTCAR"):  # a run named by its output
            p = p.parent if str(p.parent) else Path(".")
            runs.append((str(p), p))
            continue
        if not p.is_dir():
            raise MlpdesignError(f"{p}: not a folder (expected a VASP run folder)")
        if not os.access(p, os.R_OK | os.X_OK):
            raise MlpdesignError(f"{p}: folder not readable")
        listing = p / RUN_LIST
        if listing.is_file():
            try:
                names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
            except (OSError, UnicodeDecodeError) as e:
                raise MlpdesignError(f"{listing}: cannot be read ({e})") from None
            for n in names:
                if Path(n).is_absolute() or ".." in Path(n).parts:
                    raise MlpdesignError(f"{listing}: {n!r} is not a run below {p}")
            runs += [(str(p / n) if len(paths) > 1 else n, p / n) for n in names]
        elif _looks_like_run(p):
            runs.append((str(p), p))
        else:
            subs = sorted(d for d in p.iterdir() if d.is_dir() and _looks_like_run(d))
            if not subs:
                raise MlpdesignError(
                    f"{p}: neither a VASP run nor a folder of runs "
                    f"(no {RUN_LIST}, no run sub-folders)"
                )
            runs += [(str(d) if len(paths) > 1 else d.name, d) for d in subs]
    seen: set[Path] = set()
    for name, d in runs:
        key = d.resolve()
        if key in seen:
            raise MlpdesignError(f"run {name} is given twice")
        seen.add(key)
    return runs


# ---------------------------------------------------------------------------- vasprun.xml


def _tail(path: Path, nbytes: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - nbytes))
        return fh.read()


def check_vasprun(path: Path) -> tuple[int, int, int]:
    """Check ``vasprun.xml`` is complete and electronically converged.

    Returns ``(ionic steps, electronic steps of the last one, NELM)``. Raises
    :class:`RunFailed` for a file cut off mid-write (VASP killed or still running), for
    broken XML, for a run without a finished ionic step, or for a last ionic step that
    used all NELM electronic steps (VASP stops there unconverged; pymatgen's rule).
    """
    if path.stat().st_size == 0:
        raise RunFailed("vasprun.xml is empty (VASP did not get going)")
    if b"</modeling>" not in _tail(path):
        raise RunFailed(
            "vasprun.xml is cut off mid-write (no closing </modeling>): "
            "VASP was killed or is still running"
        )
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise RunFailed(f"vasprun.xml is not valid XML ({e})") from None
    nelm = DEFAULT_NELM
    for el in root.iter("i"):
        if el.get("name") == "NELM" and el.text and el.text.strip():
            nelm = int(float(el.text))  # parameters section; INCAR echo gives the same value
    calcs = root.findall("calculation")
    if not calcs:
        raise RunFailed("vasprun.xml has no finished ionic step")
    last = calcs[-1]
    nsc = len(last.findall("scstep"))
    if last.find("energy") is None:
        raise RunFailed("the last ionic step in vasprun.xml has no energy")
    if nsc >= nelm:
        raise _not_converged(nelm)
    return len(calcs), nsc, nelm


def _not_converged(nelm: int) -> RunFailed:
    return RunFailed(
        f"not electronically converged: the last ionic step used all NELM={nelm} electronic steps"
    )


def _read_last(path: Path, fmt: str) -> Atoms:
    """The last frame of a VASP output, as ASE reads it (format ``fmt``)."""
    import ase.io

    try:
        return ase.io.read(str(path), format=fmt, index=-1)
    except Exception as e:  # ASE raises many types on odd files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunFailed(f"ASE cannot read {path.name} ({msg})") from None


# ---------------------------------------------------------------------------- OUTCAR

_ITER = re.compile(r"-+\s*Iteration\s+(\d+)\s*\(\s*(\d+)\s*\)")
_NELM = re.compile(r"\bNELM\s*=\s*(\d+)")


def check_outcar(path: Path) -> tuple[int, int, int]:
    """Check an ``OUTCAR`` the way :func:`check_vasprun` checks vasprun.xml."""
    text = path.read_text(errors="replace")
    if not text.strip():
        raise RunFailed("OUTCAR is empty (VASP did not get going)")
    if "General timing and accounting" not in text:
        raise RunFailed(
            "OUTCAR is incomplete (no final timing section): VASP crashed, was "
            "killed or is still running"
        )
    m = _NELM.search(text)
    nelm = int(m.group(1)) if m else DEFAULT_NELM
    steps: dict[int, int] = {}
    for ionic, elec in _ITER.findall(text):
        steps[int(ionic)] = max(steps.get(int(ionic), 0), int(elec))
    if not steps:
        raise RunFailed("OUTCAR has no electronic iterations")
    last = steps[max(steps)]
    if "EDIFF was not reached" in text.rsplit("Iteration", 1)[-1] or last >= nelm:
        raise _not_converged(nelm)
    return len(steps), last, nelm


# ---------------------------------------------------------------------------- one run


def _read_input(d: Path) -> Atoms | None:
    import ase.io

    p = d / INPUT_XYZ
    if not p.exists():
        return None
    try:
        return ase.io.read(str(p), format="extxyz", index=0)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunFailed(f"{INPUT_XYZ} cannot be read ({msg})") from None


def _max_displacement(a: Atoms, b: Atoms) -> float:
    """Largest minimum-image distance between matching atoms of two same-cell configs."""
    d = a.get_scaled_positions(wrap=False) - b.get_scaled_positions(wrap=False)
    d -= np.round(d)
    return float(np.max(np.linalg.norm(d @ np.asarray(b.cell), axis=1)))


def read_run(d: Path, energy: str = "free") -> RunResult:
    """Read, check and convert one run directory; failures come back with a reason."""
    name = d.name
    res = RunResult(name=name)
    try:
        if not d.exists():
            raise RunFailed("run folder is missing")
        if not d.is_dir():
            raise RunFailed("not a folder")
        if not os.access(d, os.R_OK | os.X_OK):
            raise RunFailed("run folder not readable (permissions)")
        sent = _read_input(d)
        vasprun, outcar = d / "vasprun.xml", d / "OUTCAR"
        try:
            if vasprun.exists():
                n_ionic, _, _ = check_vasprun(vasprun)
                got = _read_last(vasprun, "vasp-xml")
            elif outcar.exists():
                n_ionic, _, _ = check_outcar(outcar)
                got = _read_last(outcar, "vasp-out")
            else:
                raise RunFailed("no vasprun.xml or OUTCAR (not run yet?)")
        except PermissionError:
            raise RunFailed("VASP output not readable (permissions)") from None
        except OSError as e:
            raise RunFailed(f"VASP output cannot be read ({e.strerror or e})") from None
        if got.calc is None:
            raise RunFailed("no results in the VASP output")
        results = dict(got.calc.results)
        got.calc = None
        if (d / SORT_FILE).exists():
            try:
                _, resort = read_sort_file(d / SORT_FILE)
            except (ValueError, OSError):
                raise RunFailed(f"{SORT_FILE} cannot be read") from None
            if len(resort) != len(got) or sorted(resort.tolist()) != list(range(len(got))):
                raise RunFailed(f"{SORT_FILE} does not match the {len(got)} atoms of the run")
            got = got[resort]  # POSCAR order (grouped by species) back to input order
            if "forces" in results:
                results["forces"] = np.asarray(results["forces"])[resort]
        res.atoms = _labelled(got, results, sent, n_ionic, energy, res)
    except RunFailed as e:
        res.reason = str(e)
        res.atoms = None
    return res


def _labelled(
    got: Atoms, results: dict, sent: Atoms | None, n_ionic: int, energy: str, res: RunResult
) -> Atoms:
    """The training frame: geometry, labels, and the info of the configuration sent."""
    e = results.get("free_energy" if energy == "free" else "energy")
    forces = results.get("forces")
    if e is None or forces is None:
        raise RunFailed("no energy or forces in the VASP output")
    e = float(e)
    forces = np.asarray(forces, dtype=float)
    stress = results.get("stress")
    if forces.shape != (len(got), 3):
        raise RunFailed(f"forces for {forces.shape[0]} atoms in a run of {len(got)} atoms")
    if not (
        np.isfinite(e)
        and np.all(np.isfinite(forces))
        and (stress is None or np.all(np.isfinite(stress)))
    ):
        raise RunFailed("energy, forces or stress are not finite numbers")
    if sent is not None:
        if len(sent) != len(got) or sent.get_chemical_symbols() != got.get_chemical_symbols():
            raise RunFailed(
                f"atoms in the VASP output ({got.get_chemical_formula()}) differ "
                f"from {INPUT_XYZ} ({sent.get_chemical_formula()})"
            )
        if n_ionic == 1:
            dcell = float(np.max(np.abs(np.asarray(sent.cell) - np.asarray(got.cell))))
            disp = _max_displacement(got, sent)
            if dcell > GEOMETRY_TOL or disp > GEOMETRY_TOL:
                raise RunFailed(
                    f"structure differs from {INPUT_XYZ} (cell by {dcell:.3g} A, "
                    f"atoms by {disp:.3g} A): wrong folder?"
                )
            out = sent.copy()  # full precision of the configuration that was sent
        else:
            res.notes.append(f"{n_ionic} ionic steps: the last geometry is kept")
            out = got.copy()
            out.info = dict(sent.info)
    else:
        res.notes.append(f"no {INPUT_XYZ}: only the VASP output is known")
        out = got.copy()
        out.info = {}
    if stress is None:
        res.notes.append("no stress in the VASP output: written without dft_virial")
    # the shared writer of the labelled-set format (dft_energy, dft_forces, dft_virial)
    return labelled_frame(out, e, forces, stress)


# ---------------------------------------------------------------------------- collect


def collect(
    paths: list[str | os.PathLike],
    output: str | os.PathLike,
    allow_failed: bool = False,
    energy: str = "free",
    force: bool = False,
    progress=None,
) -> CollectResult:
    """Read every run under ``paths`` and write the good ones to ``output`` (extxyz).

    A failed run without ``allow_failed`` raises :class:`PartialFailure` (exit 1) and
    nothing is written; to list the failures first, call :func:`collect_runs` and then
    :func:`write_collected` (as the CLI does). ``energy``: ``free`` (VASP's free energy,
    the one forces and stress are derivatives of) or ``sigma0`` (extrapolated to zero
    smearing).
    """
    check_output(output, force)
    res = collect_runs(paths, energy=energy, progress=progress)
    return write_collected(res, output, allow_failed=allow_failed, force=force)


def collect_runs(
    paths: list[str | os.PathLike], energy: str = "free", progress=None
) -> list[RunResult]:
    """Read and check every run under ``paths`` (no output is written)."""
    if energy not in ENERGIES:
        raise MlpdesignError(f"unknown energy {energy!r} (one of {', '.join(ENERGIES)})")
    runs = find_runs(paths)
    out = []
    for name, d in runs:
        r = read_run(d, energy)
        r.name = name
        out.append(r)
        if progress is not None:
            progress.update(1)
    return out


def write_collected(
    results: list[RunResult],
    output: str | os.PathLike,
    allow_failed: bool = False,
    force: bool = False,
) -> CollectResult:
    """Write the good runs in run order; refuse (exit 1) on failures unless ``allow_failed``."""
    check_output(output, force)
    good = [r.atoms for r in results if r.atoms is not None]
    failed = [r for r in results if r.atoms is None]
    if failed and not allow_failed:
        raise PartialFailure(
            f"{len(failed)} of {len(results)} runs failed (listed above); "
            f"nothing written to {output}; use --allow-failed to write the "
            f"{len(good)} good ones"
        )
    if not good:
        raise PartialFailure(
            f"none of the {len(results)} runs could be collected; nothing written to {output}"
        )
    with atomic_path(output, force) as tmp:
        write_extxyz(tmp, good)
    return CollectResult(results=results, written=len(good), output=Path(output))
