"""``write``: the chosen configurations of a selection, in pick order, as extxyz.

The pool (one or several inputs, any format ASE reads) is opened by the one reader
(:func:`mlpdesign.io.frames.open_pool`): an extxyz input of 10^5-10^6 frames is never
loaded whole (one byte scan finds every frame and its ``candidate_id``; only the chosen
frames are parsed), other formats are read once. Frames come back with every info key,
array and calculator result (energy, forces, stress of an MD or DFT file), so labels a
pool carries survive ``write``. :func:`pool_frames_ase` is the plain reference (ASE
parses every frame of an extxyz pool) that the fast path is tested against.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import atomic_path, check_output, require_file
from mlpdesign.io.frames import MIN_DISTANCE, expand_inputs, open_pool, pool_checksum
from mlpdesign.io.selection import load_selection


@dataclass
class WriteResult:
    """What :func:`write_training_set` wrote."""

    n_written: int
    n_selection: int
    pool_frames: int
    checksum_checked: bool
    n_atoms: int = 0  # atoms in the written configurations
    cost: float = 0.0  # sum of n_atoms**3 over them: the DFT cost, up to a constant


def pool_frames(
    paths: str | os.PathLike | Sequence, ids: Sequence[int], min_distance: float = MIN_DISTANCE
) -> tuple[list[Atoms], int]:
    """The pool frames with candidate ids ``ids``, in that order, read back from their
    sources (every info key, array and calculator result; extxyz by byte range).

    ``paths``: the pool's inputs, as given to ``describe``. Returns ``(frames, number of
    frames in the pool)``; refuses ids not in the pool. A frame without ``candidate_id``
    gets the id the reader gave it (its pool position).
    """
    pool = open_pool(paths, min_distance, species=False)
    where = {int(c): k for k, c in enumerate(pool.candidate_id)}
    missing = [i for i in ids if int(i) not in where]
    if missing:
        shown = ", ".join(str(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise MlpdesignError(
            f"{len(missing)} selected candidate ids are not in {pool.path} "
            f"({shown}): the selection was made from another pool"
        )
    frames = pool.atoms([where[int(i)] for i in ids])
    for a, i in zip(frames, ids, strict=True):
        a.info.setdefault("candidate_id", int(i))
    return frames, pool.n_configs


def pool_frames_ase(path: str | os.PathLike, ids: Sequence[int]) -> tuple[list[Atoms], int]:
    """Reference for :func:`pool_frames`: ASE parses every frame of an extxyz pool."""
    import ase.io

    wanted = {int(i) for i in ids}
    found: dict[int, Atoms] = {}
    n = 0
    for atoms in ase.io.iread(str(path), format="extxyz"):
        cid = int(atoms.info.get("candidate_id", n))
        if cid in wanted:
            found[cid] = atoms
        n += 1
    return [found[int(i)] for i in ids], n


def annotate(frames: Iterable[Atoms], psi: Sequence[float], start_rank: int = 0) -> list[Atoms]:
    """Add ``selection_rank`` (0 = first pick) and ``min_distance`` (the pick's psi) to info."""
    out = []
    for r, (atoms, d) in enumerate(zip(frames, psi, strict=True)):
        atoms.info["selection_rank"] = start_rank + r
        atoms.info["min_distance"] = float(d) if d is not None else math.inf
        out.append(atoms)
    return out


def write_extxyz(path: Path, frames: Iterable[Atoms]) -> None:
    """Write frames with every info key, array and calculator result through ASE
    (``energy``, ``forces``, ``stress``: ASE's keys, read back as a calculator)."""
    from ase.io.extxyz import write_xyz

    with open(path, "w") as fh:
        for atoms in frames:
            write_xyz(fh, [atoms], write_results=True)


def _picks(sel, selection, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The candidate ids and psi of the first ``n`` picks (all when None), checked."""
    ids = np.asarray(sel.candidate_id, dtype=np.int64)
    psi = np.asarray(sel.psi, dtype=np.float64)
    if ids.size == 0:
        raise MlpdesignError(f"{selection}: the selection is empty")
    if n is not None:
        if n < 1:
            raise MlpdesignError(f"-n must be a positive number of configurations, got {n}")
        if n > ids.size:
            raise MlpdesignError(f"-n {n} but {selection} holds only {ids.size} picks")
        ids, psi = ids[:n], psi[:n]
    if len(set(ids.tolist())) != ids.size:
        raise MlpdesignError(f"{selection}: a candidate id is picked twice")
    return ids, psi


def write_training_set(
    pool: str | os.PathLike | Sequence,
    selection: str | os.PathLike,
    output: str | os.PathLike,
    n: int | None = None,
    force: bool = False,
    min_distance: float = MIN_DISTANCE,
) -> WriteResult:
    """Write the picks of ``selection`` (the first ``n``) from ``pool`` to ``output`` (extxyz).

    ``pool``: the inputs the store was described from (files, glob patterns, in order).
    Frames come out in selection order with every pool ``info`` key, array and
    calculator result, plus ``selection_rank`` and ``min_distance`` (the selection's psi,
    the squared kernel distance D^2 to the design at pick time; ``inf`` for the first
    pick). Refuses a selection made from another pool (checksum, then candidate ids).
    """
    paths = expand_inputs(pool)
    require_file(selection, "selection file")
    check_output(output, force)
    sel = load_selection(selection)
    ids, psi = _picks(sel, selection, n)
    want_sha = getattr(sel, "pool_sha256", "") or ""
    if want_sha:
        sha = pool_checksum(paths)
        if sha != want_sha:
            names = " ".join(str(p) for p in paths)
            raise MlpdesignError(
                f"{selection} was selected from a different pool (sha256 {want_sha[:12]}…) "
                f"than {names} (sha256 {sha[:12]}…); give the pool the store was described "
                "from (every input, in the same order)"
            )
    frames, n_frames = pool_frames(paths, ids.tolist(), min_distance)
    frames = annotate(frames, psi.tolist())
    with atomic_path(output, force) as tmp:
        write_extxyz(tmp, frames)
    sizes = np.array([len(a) for a in frames], dtype=np.float64)
    return WriteResult(
        n_written=len(frames),
        n_selection=len(sel.candidate_id),
        pool_frames=n_frames,
        checksum_checked=bool(want_sha),
        n_atoms=int(sizes.sum()),
        cost=float((sizes**3).sum()),
    )
