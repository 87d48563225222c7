"""Descriptors of a pool: QUIP through quippy, plus a direct path for ``distance_2b``.

:func:`describe` turns an extxyz pool into a descriptor store (:mod:`mlpdesign.io.store`):

* The pool is indexed once (byte offset of every frame), so each worker reads only its
  own chunk of configs and a shard (``--shard i/n``) reads only its own part.
* Every descriptor goes through ``quippy.descriptors.Descriptor.calc``, except a plain
  ``distance_2b`` (no Z filter, exponents, tail or residue options): its rows are just the
  pair distances within the cutoff, each pair twice (ordered pairs, as QUIP gives them), and
  its weights QUIP's ``coordination_function`` (1 below ``cutoff - cutoff_transition_width``,
  a cosine down to 0 at ``cutoff``; QUIP's default width is 0.5 A). A matscipy neighbour
  list gives those ~50x faster than quippy's per-pair Python unpacking. Pair rows are
  sorted by distance within each config on both paths (the order of pairs carries no
  information, and sorting makes the two paths give the same rows).
* Work is cut into chunks of configs; each finished chunk is saved in ``<output>.partial/``
  (atomically), so a killed run continues where it stopped when the same command is run
  again. The store is assembled from the chunks at the end, front to back, so it has the
  same bytes however the chunks were computed (one job or many, interrupted or not).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import (
    DEFAULT_GAP,
    DescriptorSpec,
    alloy_specs,
    covered_species,
    parse_gap,
    probe_descriptor,
)
from mlpdesign.generate.pool import shard_range
from mlpdesign.io.atomic import atomic_path, check_output
from mlpdesign.io.extxyz import (  # noqa: F401 - the reader's names, as before its move to io/
    Frame,
    PoolIndex,
    ase_value,
    index_pool,
    one_line,
    read_frames,
    read_frames_ase,
)
from mlpdesign.io.frames import MIN_DISTANCE, Pool, open_pool
from mlpdesign.io.lock import holding
from mlpdesign.io.store import ChunkData, StoreWriter, package_versions, structure_array

#: Keys that keep a distance_2b on the direct (neighbour-list) path.
_FAST_2B_KEYS = {"cutoff", "cutoff_transition_width", "Z1", "Z2", "n_exponents", "exponents"}


# ---------------------------------------------------------------------------- computing


def cutoff_weights(r: np.ndarray, cutoff: float, width: float) -> np.ndarray:
    """QUIP's ``coordination_function``: 1 below ``cutoff - width``, cosine to 0 at cutoff."""
    w = np.ones_like(r)
    if width > 0:
        inner = r > cutoff - width
        w[inner] = 0.5 * (np.cos(np.pi * (r[inner] - cutoff + width) / width) + 1.0)
    w[r > cutoff] = 0.0
    return w


def fast_distance_2b(spec: DescriptorSpec) -> bool:
    """Whether ``spec`` is a plain distance_2b that the neighbour-list path reproduces."""
    if spec.name != "distance_2b":
        return False
    p = spec.params
    if set(p) - _FAST_2B_KEYS or (p.get("Z1", 0) == 0) != (p.get("Z2", 0) == 0):
        return False  # one wildcard species: left to quippy
    ex = p.get("exponents", 1)
    return p.get("n_exponents", 1) == 1 and ex in (1, [1])


def distance_2b_direct(
    atoms, cutoff: float, width: float = 0.5, z1: int = 0, z2: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (ordered pair distances, sorted) and weights of a plain ``distance_2b``.

    ``atoms``: ASE Atoms or :class:`Frame` (anything with ``positions``, ``cell``, ``pbc``,
    ``numbers``). ``z1, z2`` (both non-zero): only the pairs of those two elements, in
    both orders, as QUIP's ``Z1=``/``Z2=`` give them.
    """
    from matscipy.neighbours import neighbour_list

    kw = dict(
        positions=atoms.positions,
        cell=np.asarray(atoms.cell, dtype=np.float64),
        pbc=np.asarray(atoms.pbc, dtype=bool),
        cell_origin=np.zeros(3),
        cutoff=float(cutoff),
    )
    if z1 and z2:
        i, j, d = neighbour_list("ijd", **kw)
        zi, zj = np.asarray(atoms.numbers)[i], np.asarray(atoms.numbers)[j]
        d = d[((zi == z1) & (zj == z2)) | ((zi == z2) & (zj == z1))]
    else:
        d = neighbour_list("d", **kw)
    d.sort()
    return d.reshape(-1, 1), cutoff_weights(d, cutoff, width)


def _sort_pairs(rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if rows.shape[0] < 2:
        return rows, weights
    order = np.lexsort(rows.T[::-1])
    return rows[order], weights[order]


def quippy_rows(descriptor, atoms, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and covariance-cutoff weights from ``quippy`` ``Descriptor.calc`` (reference)."""
    out = descriptor.calc(atoms, grad=False)
    if "covariance_cutoff" not in out:  # no descriptor in this config
        return np.zeros((0, dim)), np.zeros(0)
    data = np.asarray(out["data"], dtype=np.float64).reshape(-1, dim)
    w = np.asarray(out["covariance_cutoff"], dtype=np.float64).reshape(-1)
    keep = np.asarray(out.get("has_data", np.ones(len(w), bool)), dtype=bool).reshape(-1)
    if not keep.all():
        data, w = data[keep], w[keep]
    return data, w


class QuipDescriptor:
    """One quippy descriptor called the way ``Descriptor.calc`` calls it, minus the overhead.

    ``Descriptor.calc`` converts ASE Atoms to QUIP Atoms (through every ASE array), builds
    the neighbour list twice (once in ``calc``, once more to count the descriptors) and
    unpacks the result through a dict per row. Here a QUIP Atoms is built from the four
    arrays QUIP uses (lattice, positions, pbc, Z), connected once at the same cutoff as
    quippy's (descriptor cutoff + 1 A, so neighbour order and hence every bit of the rows
    is the same), and the rows are read straight from QUIP's result.
    """

    def __init__(self, descriptor, dim: int, pair: bool) -> None:
        import quippy

        self._atoms_type = quippy.atoms_types_module.Atoms
        self._raw = descriptor._quip_descriptor
        self._calc = type(self._raw)._calc_1  # the Fortran calc, not the overload dispatch
        self.connect_cutoff = float(descriptor.cutoff()) + 1.0
        self.dim, self.pair = dim, pair

    def quip_atoms(self, frame: Frame):
        """QUIP Atoms of ``frame`` with the connectivity quippy would give it."""
        q = self._atoms_type(len(frame), np.ascontiguousarray(frame.cell.T))
        q.pos[:] = frame.positions.T
        q.is_periodic[:] = frame.pbc
        q.z[:] = frame.numbers
        q.set_atoms(q.z)  # species and masses, as quippy.convert.ase_to_quip
        if q.cutoff < self.connect_cutoff:
            q.set_cutoff(self.connect_cutoff)
        q.calc_connect()
        return q

    def __call__(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        out = self._calc(
            self._raw,
            self.quip_atoms(frame),
            do_descriptor=True,
            do_grad_descriptor=False,
            args_str="",
        )
        x = out.x
        n = len(x)
        data = np.empty((n, self.dim))
        w = np.empty(n)
        keep = np.ones(n, dtype=bool)
        for i in range(n):
            m = x[i]
            if m.has_data:
                data[i] = m.data
            else:
                keep[i] = False
            w[i] = m.covariance_cutoff
        if not keep.all():
            data, w = data[keep], w[keep]
        return _sort_pairs(data, w) if self.pair else (data, w)


class DescriptorCalculator:
    """Computes every descriptor of a GAP string for one configuration at a time.

    ``fast=True``: a plain ``distance_2b`` from a neighbour list, others through
    :class:`QuipDescriptor`. ``fast=False``: everything through quippy's public
    ``Descriptor.calc`` on ASE Atoms (the reference path the tests compare against).
    """

    def __init__(self, specs: Sequence[DescriptorSpec], fast: bool = True) -> None:
        from quippy.descriptors import Descriptor

        self.specs = list(specs)
        self.fast = fast
        self._calls: list[Callable] = []
        for spec in self.specs:
            p = spec.params
            if fast and fast_distance_2b(spec):
                cut = float(p["cutoff"])
                width = float(p.get("cutoff_transition_width", 0.5))
                z1, z2 = int(p.get("Z1", 0)), int(p.get("Z2", 0))
                self._calls.append(
                    lambda a, c=cut, w=width, z1=z1, z2=z2: distance_2b_direct(a, c, w, z1, z2)
                )
                if spec.dim is None:
                    spec.dim = 1
            else:
                try:
                    d = Descriptor(spec.descriptor)
                except RuntimeError as e:
                    raise MlpdesignError(
                        f"quippy rejects descriptor {spec.descriptor!r}: {one_line(e)}"
                    ) from None
                dim = int(d.dimensions())
                if spec.dim is None:
                    spec.dim = dim
                pair = spec.name == "distance_2b"
                if fast:
                    self._calls.append(QuipDescriptor(d, dim, pair))
                else:
                    self._calls.append(
                        lambda a, d=d, n=dim, pair=pair: (
                            _sort_pairs(*quippy_rows(d, a, n)) if pair else quippy_rows(d, a, n)
                        )
                    )

    def compute(self, atoms) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(rows, weights), ...]`` per descriptor for ``atoms`` (ASE Atoms or Frame)."""
        if self.fast and not isinstance(atoms, Frame):
            atoms = Frame.from_atoms(atoms)
        elif not self.fast and isinstance(atoms, Frame):
            from ase import Atoms

            atoms = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        return [call(atoms) for call in self._calls]


def required_species(specs: Sequence[DescriptorSpec]) -> set[int] | None:
    """Atomic numbers every config must be limited to: the SOAP centre lists together
    (one SOAP per centre species is the alloy default), within every SOAP's neighbour
    list (:func:`mlpdesign.gap.strings.covered_species`); None = any."""
    return covered_species(list(specs))


def _element_error(symbol: str, allowed: set[int], where: str) -> MlpdesignError:
    from ase.data import atomic_numbers

    z = atomic_numbers.get(symbol, "?")
    zs = "{" + " ".join(str(x) for x in sorted(allowed)) + "}"
    return MlpdesignError(
        f"{where} has {symbol} (Z={z}), which is not in the SOAP Z list "
        f"{zs}; add it to Z= and n_Z= (and species_Z=, n_species=) of --gap"
    )


def compute_chunk(
    pool: Pool,
    c0: int,
    c1: int,
    calc: DescriptorCalculator,
    allowed: set[int] | None = None,
) -> ChunkData:
    """Descriptors of pool positions ``c0 .. c1-1`` as :class:`ChunkData` (every frame
    checked by the reader before QUIP sees it; ids are the pool's)."""
    from ase.data import chemical_symbols

    n, nd = c1 - c0, len(calc.specs)
    cid = np.asarray(pool.candidate_id[c0:c1], dtype=np.int64)
    nat = np.empty(n, np.int32)
    labels = []
    F = np.full((n, 9), np.nan)
    rows = [[] for _ in range(nd)]
    wts = [[] for _ in range(nd)]
    counts = [np.zeros(n, np.int64) for _ in range(nd)]
    for j, atoms in enumerate(pool.frames(c0, c1)):
        c = c0 + j
        if allowed is not None:
            bad = set(atoms.numbers.tolist()) - allowed
            if bad:
                raise _element_error(chemical_symbols[min(bad)], allowed, pool.where(c))
        info = atoms.info
        nat[j] = len(atoms)
        labels.append(info.get("structure", ""))
        if "F" in info:
            f = np.asarray(info["F"], dtype=np.float64).reshape(-1)
            if f.shape == (9,):
                F[j] = f
        try:
            res = calc.compute(atoms)
        except RuntimeError as e:  # quippy reports Fortran errors this way
            raise MlpdesignError(f"{pool.where(c)}: quippy failed: {one_line(e)}") from None
        for k, (r, w) in enumerate(res):
            rows[k].append(r)
            wts[k].append(w)
            counts[k][j] = r.shape[0]
    out_rows = [
        np.concatenate(r, axis=0) if r else np.zeros((0, s.dim))
        for r, s in zip(rows, calc.specs, strict=True)
    ]
    out_w = [np.concatenate(w) if w else np.zeros(0) for w in wts]
    struct = structure_array(labels, n)
    return ChunkData(c0, c1, cid, nat, struct, F, out_rows, out_w, counts)


# ---------------------------------------------------------------------------- workers


class Resumable(MlpdesignError):
    """A run stopped for a reason other than its input; the finished chunks are kept."""

    exit_code = 1


class WorkerDied(Resumable):
    """A worker process was killed (QUIP abort, out of memory); finished chunks are kept."""


class DamagedChunk(Resumable):
    """A saved chunk cannot be read back (OS crash while it was written); it is removed."""


_WORKER: dict = {}


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies (e.g. SIGKILL of the run)."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _init_worker(pool: Pool, specs: list[DescriptorSpec], allowed, partial: str) -> None:
    _die_with_parent()
    _WORKER.update(
        pool=pool, calc=DescriptorCalculator(specs), allowed=allowed, partial=Path(partial)
    )


def _chunk_name(c0: int, c1: int) -> str:
    return f"chunk-{c0:012d}-{c1:012d}.npz"


def _run_chunk(c0: int, c1: int) -> tuple[int, int]:
    w = _WORKER
    chunk = compute_chunk(w["pool"], c0, c1, w["calc"], w["allowed"])
    chunk.save(w["partial"] / _chunk_name(c0, c1))
    return c0, c1


# ---------------------------------------------------------------------------- describe


def default_chunk_size(count: int) -> int:
    """Configs per resumable chunk: ~64 chunks for small pools, at most 256 configs."""
    return max(1, min(256, math.ceil(count / 64)))


def _manifest(
    sha: str, specs: list[DescriptorSpec], start: int, count: int, chunk: int, pool_n: int
) -> dict:
    v = package_versions()
    return {
        "pool_sha256": sha,
        "gap": " : ".join(s.segment for s in specs),
        "dims": [s.dim for s in specs],
        "config_start": start,
        "count": count,
        "chunk_size": chunk,
        "pool_n_configs": pool_n,
        "quippy": v.get("quippy-ase", ""),
        "matscipy": v.get("matscipy", ""),
    }


def prepare_specs(gap: str | None, index: Pool) -> list[DescriptorSpec]:
    """Parse the GAP string and fit it to the pool's species.

    The default (the paper's Zr model) follows the pool's elements: SOAP's ``Z`` (and
    ``species_Z`` when several) become the pool's atomic numbers. An explicit ``gap`` is
    used as given, and a pool element outside its SOAP ``Z`` list is an error.
    """
    from ase.data import atomic_numbers

    specs = parse_gap(gap if gap is not None else DEFAULT_GAP)
    for s in specs:  # QUIP may abort on a bad string: try unknown kinds in a child first
        if s.name not in ("soap", "distance_2b"):
            s.dim = probe_descriptor(s.descriptor)
    unknown = [s for s in index.first_seen if s not in atomic_numbers]
    if unknown:
        raise MlpdesignError(
            f"{index.where(index.first_seen[unknown[0]])} has unknown element {unknown[0]!r}"
        )
    numbers = sorted(atomic_numbers[s] for s in index.first_seen)
    if gap is None and index.species_known and numbers and numbers != [40]:
        specs = alloy_specs(specs, numbers)  # one element: SOAP's Z set to it
    allowed = required_species(specs)
    if allowed is not None and index.species_known:
        for sym, c in sorted(index.first_seen.items(), key=lambda kv: kv[1]):
            if atomic_numbers[sym] not in allowed:
                raise _element_error(sym, allowed, index.where(c))
    return specs


def open_partial(out: Path, manifest: dict, sha: str, restart: bool) -> Path:
    """The ``<output>.partial/`` folder of this run: made with its manifest, or an earlier
    killed run's for the same manifest (its stale temporaries removed); another run's is
    refused, ``restart`` discards it."""
    partial = out.with_name(out.name + ".partial")
    mfile = partial / "manifest.json"
    if restart and partial.exists():
        shutil.rmtree(partial)
    if partial.exists():
        try:
            old = json.loads(mfile.read_text())
        except (OSError, ValueError):
            old = None
        if old != manifest:
            what = (
                "another pool"
                if old and old.get("pool_sha256") != sha
                else "other settings (gap string, shard or chunk size)"
            )
            raise MlpdesignError(
                f"{partial} holds an interrupted run for {what}; remove it "
                "or pass --restart to start over"
            )
    else:
        partial.mkdir()
        tmp = partial / ".manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, mfile)
    for stale in partial.glob(".*.tmp-*"):  # a chunk being written when a run was killed
        stale.unlink(missing_ok=True)
    return partial


def _locked(fn: Callable[..., Path]) -> Callable[..., Path]:
    """``fn(pool, output, ...)`` holding the output's lock (:mod:`mlpdesign.io.lock`)."""

    @functools.wraps(fn)
    def run(pool, output, *args, **kwargs) -> Path:
        with holding(output):
            return fn(pool, output, *args, **kwargs)

    return run


@dataclass
class _Plan:
    """What a describe run works on: the pool, its strings, the part and its chunks."""

    index: Pool
    specs: list[DescriptorSpec]
    calc: DescriptorCalculator
    start: int
    count: int
    chunk: int
    tasks: list[tuple[int, int]]
    sha: str


def _plan(pool, gap, shard, chunk_size, min_distance) -> _Plan:
    """Open and check the pool (every frame of the part, before any work) and cut the
    part into chunks."""
    index = open_pool(pool, min_distance)
    specs = prepare_specs(gap, index)
    calc = DescriptorCalculator(specs)  # fixes dims; also checks quippy accepts the strings
    n_pool = index.n_configs
    start, count = shard_range(n_pool, *shard) if shard else (0, n_pool)
    chunk = chunk_size or default_chunk_size(count)
    if chunk < 1:
        raise MlpdesignError(f"--chunk-size must be >= 1, got {chunk}")
    index.check(start, start + count)  # bad input: one line, before any work
    tasks = [(c0, min(c0 + chunk, start + count)) for c0 in range(start, start + count, chunk)]
    return _Plan(index, specs, calc, start, count, chunk, tasks, index.checksum())


@_locked
def describe(
    pool: str | os.PathLike | Sequence,
    output: str | os.PathLike,
    gap: str | None = None,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    chunk_size: int | None = None,
    dtype: str = "float64",
    force: bool = False,
    restart: bool = False,
    command: str = "",
    progress=None,
    log: Callable[[str], None] | None = None,
    min_distance: float = MIN_DISTANCE,
) -> Path:
    """Describe ``pool`` into the store ``output``; resumable, shardable, parallel.

    ``pool``: one input or several (files any format ASE reads, glob patterns), read as
    one pool by :func:`mlpdesign.io.frames.open_pool`; every frame of the part to describe
    is checked (``min_distance``) before any descriptor is computed.
    ``gap``: GAP string (default :data:`DEFAULT_GAP`, species fitted to the pool).
    ``jobs``: worker processes. ``shard=(i, n)``: only part i of n (1-based) of the pool.
    A previous killed run of the same command is continued from ``<output>.partial/``;
    ``restart=True`` discards it. ``progress(total, initial)``: makes a progress object
    with ``update(k)``/``close()`` (see :mod:`mlpdesign.progress`); ``log``: where to say
    that a run is resumed. The output is locked for the run (:mod:`mlpdesign.io.lock`):
    a second run on it is refused at once.
    """
    out = check_output(output, force)
    if dtype not in ("float64", "float32"):
        raise MlpdesignError(f"--dtype must be float64 or float32, got {dtype!r}")
    if jobs < 1:
        raise MlpdesignError(f"--jobs must be >= 1, got {jobs}")
    pl = _plan(pool, gap, shard, chunk_size, min_distance)
    index, specs, tasks, count = pl.index, pl.specs, pl.tasks, pl.count
    manifest = _manifest(pl.sha, specs, pl.start, count, pl.chunk, index.n_configs)
    partial = open_partial(out, manifest, pl.sha, restart)
    done = [t for t in tasks if _chunk_ok(partial / _chunk_name(*t), len(specs))]
    todo = [t for t in tasks if t not in set(done)]
    if done and log is not None:
        log(
            f"resuming: {sum(b - a for a, b in done)} of {count} configs already described "
            f"in {partial}"
        )
    bar = progress(count, sum(b - a for a, b in done)) if progress is not None else None
    try:
        try:
            _run(todo, index, specs, pl.calc, required_species(specs), partial, jobs, bar)
        finally:
            if bar is not None:
                bar.close()
        attrs = {
            "pool_sha256": pl.sha,
            "pool_path": index.path,
            "pool_files": json.dumps([str(p) for p in index.paths]),
            "pool_n_configs": index.n_configs,
            "config_start": pl.start,
            "shard": f"{shard[0]}/{shard[1]}" if shard else "",
            "versions": package_versions(),
            "command": command,
        }
        sources = index.source_arrays(pl.start, pl.start + count)
        assemble(partial, tasks, specs, out, attrs, dtype, force, sources)
    except Resumable:
        raise
    except MlpdesignError:
        # bad input: the chunks could never be completed; leave nothing behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(partial, ignore_errors=True)
    return out


def _run(tasks, index, specs, calc, allowed, partial, jobs, progress) -> None:
    """Compute and save the chunks in ``tasks``, in this process or in ``jobs`` workers."""
    if not tasks:
        return
    if jobs == 1 or len(tasks) == 1:
        for c0, c1 in tasks:
            compute_chunk(index, c0, c1, calc, allowed).save(partial / _chunk_name(c0, c1))
            if progress is not None:
                progress.update(c1 - c0)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pending, queue = set(), list(reversed(tasks))
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(index, specs, allowed, str(partial)),
    ) as ex:
        try:
            while queue or pending:
                while queue and len(pending) < 4 * jobs:
                    pending.add(ex.submit(_run_chunk, *queue.pop()))
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        c0, c1 = fut.result()
                    except BrokenProcessPool:
                        raise WorkerDied(
                            "a worker process died (QUIP abort or out of memory?); finished "
                            f"chunks are kept in {partial}: run the same command to resume"
                        ) from None
                    if progress is not None:
                        progress.update(c1 - c0)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


#: Bytes of descriptor rows gathered from saved chunks before one HDF5 write.
ASSEMBLE_BYTES = 64 << 20

_CHUNK_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def _chunk_ok(path: Path, n_desc: int) -> bool:
    """Whether a saved chunk exists and its zip directory lists every array (cheap: the
    data are CRC-checked when :func:`assemble` reads them). A damaged one is removed."""
    if not path.exists():
        return False
    try:
        with np.load(path) as z:
            need = {"c", "candidate_id"} | {f"rows{k}" for k in range(n_desc)}
            if need <= set(z.files):
                return True
    except _CHUNK_ERRORS:
        pass
    path.unlink(missing_ok=True)
    return False


def _load_chunk(partial: Path, c0: int, c1: int, nd: int) -> ChunkData:
    path = partial / _chunk_name(c0, c1)
    try:
        return ChunkData.load(path, nd)
    except _CHUNK_ERRORS as e:
        path.unlink(missing_ok=True)
        raise DamagedChunk(
            f"{path} was damaged ({one_line(e)}; an OS crash while it was written?) and is "
            "removed: run the same command again to recompute it"
        ) from None


def assemble(
    partial: Path,
    tasks,
    specs: list[DescriptorSpec],
    output: Path,
    attrs: dict,
    dtype: str,
    force: bool,
    sources: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Write the store from the saved chunks, in config order (deterministic bytes).

    ``sources``: ``(source_file, source_frame)`` of every config. Consecutive chunks are
    gathered into writes of up to :data:`ASSEMBLE_BYTES`; the store's layout is fixed when
    it is created, so this changes no byte of it.
    """
    nd = len(specs)
    n_rows = [0] * nd
    ids, width = [], 0
    for c0, c1 in tasks:
        try:
            with np.load(partial / _chunk_name(c0, c1)) as z:
                for k in range(nd):
                    n_rows[k] += int(z[f"counts{k}"].sum())
                ids.append(z["candidate_id"])
                width = max(width, z["structure"].dtype.itemsize)
        except _CHUNK_ERRORS:
            _load_chunk(partial, c0, c1, nd)  # removes it and says so
            raise
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    uniq, cnt = np.unique(ids, return_counts=True)
    if (cnt > 1).any():
        raise MlpdesignError(
            f"{attrs['pool_path']}: candidate_id {int(uniq[cnt > 1][0])} "
            "appears more than once in the pool"
        )
    n = int(ids.shape[0])
    with atomic_path(output, force) as tmp:
        w = StoreWriter(tmp, specs, n, n_rows, attrs, dtype, sources, width)
        try:
            base = tasks[0][0] if tasks else 0
            batch: list[ChunkData] = []
            size = 0
            for i, (c0, c1) in enumerate(tasks):
                ch = _load_chunk(partial, c0, c1, nd)
                ch.c0, ch.c1 = c0 - base, c1 - base
                batch.append(ch)
                size += ch.nbytes
                if size >= ASSEMBLE_BYTES or i == len(tasks) - 1:
                    w.append(ChunkData.concat(batch))
                    batch, size = [], 0
        except BaseException:
            w.abort()
            raise
        w.close()
