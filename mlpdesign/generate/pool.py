"""Candidate pools of elastically deformed crystals (paper, section 3).

Each candidate is a primitive (or repeated) hcp/fcc/bcc cell deformed by
``F = R diag(lambda) R^T`` with eigenvalues ``lambda`` uniform in ``[lo, hi]`` and
``R`` Haar-uniform on SO(3). The random stream of candidate ``i`` is seeded from
``(seed, i)`` alone, so any index range generated anywhere (a SLURM array task, a
resumed run) is identical to the same range of a pool made in one go.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, reference_states

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import atomic_path

STRUCTURES = ("hcp", "fcc", "bcc")

#: Zr lattice of the paper (hcp a, c in Angstrom).
ZR_HCP_A = 3.232
ZR_HCP_C = 5.147


@dataclass(frozen=True)
class Lattice:
    """Lattice parameters (Angstrom) of the three structures of one element."""

    hcp_a: float
    hcp_c: float
    fcc_a: float
    bcc_a: float

    @property
    def atomic_volume(self) -> float:
        """Volume per atom of the hcp cell, the volume the other structures default to."""
        return math.sqrt(3.0) / 4.0 * self.hcp_a**2 * self.hcp_c


def _volume_from_reference(element: str) -> tuple[float, float | None] | None:
    """Atomic volume (and hcp c/a when known) from ASE's reference state of ``element``."""
    ref = reference_states[atomic_numbers[element]]
    if not ref or "a" not in ref:
        return None
    sym, a = ref.get("symmetry"), ref["a"]
    if sym == "hcp":
        covera = ref.get("c/a", math.sqrt(8.0 / 3.0))
        return math.sqrt(3.0) / 4.0 * a**3 * covera, covera
    if sym == "fcc":
        return a**3 / 4.0, None
    if sym == "bcc":
        return a**3 / 2.0, None
    if sym == "diamond":
        return a**3 / 8.0, None
    return None


def lattice_for(
    element: str,
    hcp_a: float | None = None,
    hcp_c: float | None = None,
    fcc_a: float | None = None,
    bcc_a: float | None = None,
) -> Lattice:
    """Lattice parameters for ``element``; unspecified ones are set at the hcp atomic volume.

    Zr defaults to the paper's hcp a = 3.232 A, c = 5.147 A. Other elements take the
    atomic volume of ASE's reference state (ideal c/a for hcp unless known) unless
    parameters are given.
    """
    if element not in atomic_numbers or element == "X":
        raise MlpdesignError(f"unknown element {element!r} (expected a chemical symbol like Zr)")
    for name, val in (("hcp-a", hcp_a), ("hcp-c", hcp_c), ("fcc-a", fcc_a), ("bcc-a", bcc_a)):
        if val is not None and not (val > 0 and math.isfinite(val)):
            raise MlpdesignError(f"--{name} must be a positive length in Angstrom, got {val}")
    ideal = math.sqrt(8.0 / 3.0)
    if hcp_a is None and element == "Zr":
        hcp_a, hcp_c = ZR_HCP_A, hcp_c if hcp_c is not None else ZR_HCP_C
    if hcp_a is not None:
        hcp_c = hcp_c if hcp_c is not None else ideal * hcp_a
        vol = math.sqrt(3.0) / 4.0 * hcp_a**2 * hcp_c
    elif fcc_a is not None:
        vol = fcc_a**3 / 4.0
    elif bcc_a is not None:
        vol = bcc_a**3 / 2.0
    else:
        ref = _volume_from_reference(element)
        if ref is None:
            raise MlpdesignError(
                f"no reference lattice known for {element}; give --hcp-a (and --hcp-c), "
                "--fcc-a or --bcc-a"
            )
        vol, covera = ref
        if hcp_c is not None:
            hcp_a = math.sqrt(4.0 * vol / (math.sqrt(3.0) * hcp_c))
        else:
            covera = covera or ideal
            hcp_a = (4.0 * vol / (math.sqrt(3.0) * covera)) ** (1.0 / 3.0)
            hcp_c = covera * hcp_a
    if hcp_a is None:  # only a cubic parameter given: hcp at the same volume, ideal c/a
        if hcp_c is not None:
            hcp_a = math.sqrt(4.0 * vol / (math.sqrt(3.0) * hcp_c))
        else:
            hcp_a = (4.0 * vol / (math.sqrt(3.0) * ideal)) ** (1.0 / 3.0)
            hcp_c = ideal * hcp_a
    return Lattice(
        hcp_a=hcp_a,
        hcp_c=hcp_c,
        fcc_a=fcc_a if fcc_a is not None else (4.0 * vol) ** (1.0 / 3.0),
        bcc_a=bcc_a if bcc_a is not None else (2.0 * vol) ** (1.0 / 3.0),
    )


def parse_structures(text: str) -> dict[str, float]:
    """Parse ``"hcp:2,fcc:1,bcc:1"`` (weights optional, default 1) into normalised weights."""
    weights: dict[str, float] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, w = item.partition(":")
        name = name.strip().lower()
        if name not in STRUCTURES:
            raise MlpdesignError(
                f"unknown structure {name!r} in {text!r} (expected {', '.join(STRUCTURES)})"
            )
        try:
            wf = float(w) if w else 1.0
        except ValueError:
            raise MlpdesignError(f"bad weight {w!r} for {name} in {text!r}") from None
        if not (wf >= 0 and math.isfinite(wf)):
            raise MlpdesignError(f"weight of {name} must be a non-negative number, got {w}")
        if name in weights:
            raise MlpdesignError(f"structure {name} given twice in {text!r}")
        weights[name] = wf
    total = sum(weights.values())
    if not weights or total <= 0:
        raise MlpdesignError(f"no structure with positive weight in {text!r}")
    return {k: v / total for k, v in weights.items() if v > 0}


def parse_supercell(text: str) -> tuple[int, int, int]:
    """Parse ``"2x2x2"`` (or a single ``"2"``) into a repeat tuple."""
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) == 1:
        parts = parts * 3
    try:
        rep = tuple(int(p) for p in parts)
    except ValueError:
        rep = ()
    if len(rep) != 3 or min(rep) < 1:
        raise MlpdesignError(f"bad supercell {text!r}: expected e.g. 2x2x2 with positive integers")
    return rep  # type: ignore[return-value]


@dataclass(frozen=True)
class PoolSpec:
    """Everything that determines a pool, apart from the candidate index range."""

    element: str = "Zr"
    structures: dict[str, float] = field(
        default_factory=lambda: {"hcp": 1 / 3, "fcc": 1 / 3, "bcc": 1 / 3}
    )
    lattice: Lattice | None = None
    supercell: tuple[int, int, int] = (1, 1, 1)
    eig_min: float = 0.95
    eig_max: float = 1.05
    seed: int = 1

    def __post_init__(self) -> None:
        if self.lattice is None:
            object.__setattr__(self, "lattice", lattice_for(self.element))
        if not (0 < self.eig_min <= self.eig_max) or not math.isfinite(self.eig_max):
            raise MlpdesignError(
                f"strain eigenvalue bounds must satisfy 0 < min <= max, got "
                f"[{self.eig_min}, {self.eig_max}]"
            )
        if self.seed < 0:
            raise MlpdesignError(f"--seed must be a non-negative integer, got {self.seed}")


def eigen_bounds(
    max_strain: float, min_eig: float | None = None, max_eig: float | None = None
) -> tuple[float, float]:
    """Eigenvalue bounds ``[1-eps, 1+eps]``, optionally overridden one side at a time."""
    if not (0 <= max_strain < 1) or not math.isfinite(max_strain):
        raise MlpdesignError(f"--max-strain must be in [0, 1), got {max_strain}")
    lo = 1.0 - max_strain if min_eig is None else min_eig
    hi = 1.0 + max_strain if max_eig is None else max_eig
    if not (0 < lo <= hi) or not math.isfinite(hi):
        raise MlpdesignError(
            f"strain eigenvalue bounds must satisfy 0 < min <= max, got [{lo}, {hi}]"
        )
    return lo, hi


def _reference_cells(spec: PoolSpec) -> dict[str, Atoms]:
    from ase.build import bulk  # imported here: ase.build costs 0.5 s of every CLI start

    lat = spec.lattice
    assert lat is not None
    cells = {
        "hcp": bulk(spec.element, "hcp", a=lat.hcp_a, c=lat.hcp_c),
        "fcc": bulk(spec.element, "fcc", a=lat.fcc_a),
        "bcc": bulk(spec.element, "bcc", a=lat.bcc_a),
    }
    if spec.supercell != (1, 1, 1):
        cells = {k: v.repeat(spec.supercell) for k, v in cells.items()}
    return cells


def candidate_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of candidate ``index``: a function of ``(seed, index)`` only."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))


def deformation(rng: np.random.Generator, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``F = R diag(lam) R^T`` (exactly symmetric) and its eigenvalues ``lam``."""
    from scipy.spatial.transform import Rotation

    lam = rng.uniform(lo, hi, size=3)
    rot = Rotation.random(rng=rng).as_matrix()
    f = (rot * lam) @ rot.T
    return 0.5 * (f + f.T), lam


class _Drawer:
    """Per-candidate draws shared by the ASE path and the fast text path (same numbers)."""

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        self.cells = _reference_cells(spec)
        self.names = list(spec.structures)
        probs = np.array([spec.structures[k] for k in self.names], dtype=float)
        self.cum = np.cumsum(probs / probs.sum())
        self.scaled = {k: v.get_scaled_positions(wrap=False) for k, v in self.cells.items()}

    def draw(self, index: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """Structure name, new cell, F (3x3) and eigenvalues of candidate ``index``."""
        rng = candidate_rng(self.spec.seed, index)
        u = rng.random()
        name = self.names[min(int(np.searchsorted(self.cum, u, side="right")), len(self.names) - 1)]
        f, lam = deformation(rng, self.spec.eig_min, self.spec.eig_max)
        cell = self.cells[name].cell.array @ f.T
        return name, cell, f, lam


def iter_candidates(spec: PoolSpec, start: int, count: int) -> Iterator[Atoms]:
    """Yield candidates ``start .. start+count-1`` of the pool described by ``spec`` as Atoms."""
    if start < 0 or count < 0:
        raise MlpdesignError("candidate range must be non-negative")
    drawer = _Drawer(spec)
    for index in range(start, start + count):
        name, cell, f, lam = drawer.draw(index)
        ref = drawer.cells[name]
        atoms = Atoms(
            ref.get_chemical_symbols(), scaled_positions=drawer.scaled[name], cell=cell, pbc=True
        )
        atoms.info = {
            "candidate_id": index,
            "structure": name,
            "config_type": name,
            # 9 plain numbers, row-major: QUIP reads a 3x3 info array only in this form.
            "F": f.reshape(9),
            "strain_eigenvalues": lam,
        }
        yield atoms


def deformation_of(atoms: Atoms) -> np.ndarray:
    """The 3x3 deformation F stored in ``atoms.info`` (written as 9 numbers)."""
    return np.asarray(atoms.info["F"], dtype=float).reshape(3, 3)


def write_frames(fh, frames) -> int:
    """Write Atoms to an open text file through ASE's extxyz writer; returns the count.

    This is the reference writer; :func:`format_candidates` produces the same bytes faster.
    """
    from ase.io.extxyz import write_xyz

    n = 0
    for atoms in frames:
        write_xyz(fh, [atoms], columns=["symbols", "positions"], write_results=False)
        n += 1
    return n


def _nums(values) -> str:
    return " ".join(f"{v}" for v in values)


def format_candidates(spec: PoolSpec, start: int, count: int) -> str:
    """Extxyz text of candidates ``start .. start+count-1``, byte-identical to ASE's writer.

    ASE's generic writer spends ~0.2 ms per frame on formatting; the frames here always
    have the same columns and info keys, so the text is formatted directly (a test holds
    the two side by side on pools of every structure and supercell).
    """
    drawer = _Drawer(spec)
    rows = {}
    for name, ref in drawer.cells.items():
        syms = [f"{s:<2}" for s in ref.get_chemical_symbols()]
        rows[name] = (len(syms), " ".join(["%s"] + ["%16.8f"] * 3) + "\n", syms)
    out = []
    for index in range(start, start + count):
        name, cell, f, lam = drawer.draw(index)
        nat, fmt, syms = rows[name]
        pos = drawer.scaled[name] @ cell
        out.append(
            f'{nat}\nLattice="{_nums(cell.reshape(9))}" Properties=species:S:1:pos:R:3 '
            f"candidate_id={index} structure={name} config_type={name} "
            f'F="{_nums(f.reshape(9))}" strain_eigenvalues="{_nums(lam)}" pbc="T T T"\n'
        )
        out.extend(fmt % (syms[i], p[0], p[1], p[2]) for i, p in enumerate(pos.tolist()))
    return "".join(out)


def shard_range(n: int, shard: int, nshards: int) -> tuple[int, int]:
    """Contiguous ``(start, count)`` of shard ``shard`` (1-based) of ``n`` items in ``nshards``."""
    if nshards < 1 or not (1 <= shard <= nshards):
        raise MlpdesignError(f"bad shard {shard}/{nshards}: expected i/n with 1 <= i <= n")
    lo = (shard - 1) * n // nshards
    hi = shard * n // nshards
    return lo, hi - lo


def generate(
    path: str | os.PathLike,
    n: int,
    spec: PoolSpec | None = None,
    start: int = 0,
    force: bool = False,
    progress=None,
) -> int:
    """Write candidates ``start .. start+n-1`` to ``path`` (extxyz), atomically and streamed.

    Memory does not grow with ``n``: frames are written as they are made.
    ``progress`` is an optional object with ``update(k)``. Returns the number written.
    """
    spec = spec or PoolSpec()
    if n < 0:
        raise MlpdesignError(f"the number of candidates must not be negative, got {n}")
    if start < 0:
        raise MlpdesignError(f"--start must be >= 0, got {start}")
    written = 0
    with atomic_path(path, force) as tmp, open(tmp, "w") as fh:
        block = 1000
        for lo in range(start, start + n, block):
            cnt = min(block, start + n - lo)
            fh.write(format_candidates(spec, lo, cnt))
            written += cnt
            if progress is not None:
                progress.update(cnt)
    return written
