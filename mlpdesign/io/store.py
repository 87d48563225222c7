"""The descriptor store (HDF5): writer, streaming reader and pool check.

Layout (see docs/formats.md): per descriptor ``k`` a CSR block ``/descriptors/<k>/rows``
(``n_rows x dim``), ``weights`` (QUIP's covariance cutoff of each row) and ``offsets``
(``n_configs + 1``), plus per-config ``candidate_id``, ``n_atoms``, ``structure``, ``F`` and
provenance attributes. Rows are float64 by default (what QUIP computes; float32 halves the
file and the selection's memory traffic at ~1e-7 relative error). Datasets are chunked
along rows (~1 MiB chunks), uncompressed, so a reader streams a config range at disk speed.

A store is always written front to back in one deterministic sequence of HDF5 calls
(:class:`StoreWriter`), so the same data give the same bytes however it was computed
(resumed, sharded and merged, any number of jobs).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlpdesign import __version__
from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import DescriptorSpec, parse_gap
from mlpdesign.io.atomic import atomic_path, check_output, require_file

FORMAT = "mlpdesign-store"
FORMAT_VERSION = 1
DTYPES = ("float64", "float32")
#: Narrowest type of ``/structure``: wider labels widen it (never cut: "hcp_bulk_300K").
STRUCTURE_DTYPE = "S8"
#: Target size of one HDF5 chunk of rows, in bytes.
CHUNK_BYTES = 1 << 20


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine the numbers in a store."""
    from importlib import metadata

    import h5py

    out = {"mlpdesign": __version__, "python": sys.version.split()[0]}
    for pkg in ("quippy-ase", "numpy", "ase", "h5py", "matscipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = ""
    out["hdf5"] = h5py.version.hdf5_version
    return out


# ---------------------------------------------------------------------------- chunk data


@dataclass
class ChunkData:
    """Everything describe computes for configs ``c0 .. c1-1`` (positions in the file)."""

    c0: int
    c1: int
    candidate_id: np.ndarray  # (n,) int64
    n_atoms: np.ndarray  # (n,) int32
    structure: np.ndarray  # (n,) S8
    F: np.ndarray  # (n, 9) float64
    rows: list[np.ndarray] = field(default_factory=list)  # per descriptor (n_rows, dim)
    weights: list[np.ndarray] = field(default_factory=list)  # per descriptor (n_rows,)
    counts: list[np.ndarray] = field(default_factory=list)  # per descriptor (n,) int64

    def save(self, path: str | os.PathLike, sync: bool = False) -> None:
        """Write to ``path`` (.npz) atomically: a killed write never leaves a readable chunk.

        Written to a temporary and renamed, so a killed process leaves the whole chunk or
        none. No ``fsync`` by default: a killed process loses nothing that reached the
        page cache, and after an OS crash a damaged chunk fails its zip CRC on loading
        (``describe`` then recomputes it); ``sync=True`` also survives power loss.
        """
        arrays = {
            "c": np.array([self.c0, self.c1], dtype=np.int64),
            "candidate_id": self.candidate_id,
            "n_atoms": self.n_atoms,
            "structure": self.structure,
            "F": self.F,
        }
        for k, (r, w, n) in enumerate(zip(self.rows, self.weights, self.counts, strict=True)):
            arrays[f"rows{k}"], arrays[f"weights{k}"], arrays[f"counts{k}"] = r, w, n
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, p)

    @classmethod
    def concat(cls, chunks: Sequence[ChunkData]) -> ChunkData:
        """Consecutive chunks as one (fewer, larger HDF5 writes; same bytes)."""
        if len(chunks) == 1:
            return chunks[0]
        nd = len(chunks[0].rows)
        return cls(
            chunks[0].c0,
            chunks[-1].c1,
            np.concatenate([c.candidate_id for c in chunks]),
            np.concatenate([c.n_atoms for c in chunks]),
            np.concatenate([c.structure for c in chunks]),
            np.concatenate([c.F for c in chunks]),
            [np.concatenate([c.rows[k] for c in chunks]) for k in range(nd)],
            [np.concatenate([c.weights[k] for c in chunks]) for k in range(nd)],
            [np.concatenate([c.counts[k] for c in chunks]) for k in range(nd)],
        )

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.rows)

    @classmethod
    def load(cls, path: str | os.PathLike, n_desc: int) -> ChunkData:
        with np.load(path, allow_pickle=False) as z:
            c0, c1 = (int(x) for x in z["c"])
            return cls(
                c0,
                c1,
                z["candidate_id"],
                z["n_atoms"],
                z["structure"],
                z["F"],
                [z[f"rows{k}"] for k in range(n_desc)],
                [z[f"weights{k}"] for k in range(n_desc)],
                [z[f"counts{k}"] for k in range(n_desc)],
            )


# ---------------------------------------------------------------------------- writer


def _root_attrs(f, specs, n_configs: int, dtype: str, attrs: dict) -> None:
    """The store's root attributes, in sorted order (deterministic bytes)."""
    base = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gap": " : ".join(s.segment or s.render() for s in specs),
        "dtype": dtype,
        "n_configs": n_configs,
    }
    for key in (
        "pool_sha256",
        "pool_path",
        "pool_files",
        "pool_n_configs",
        "config_start",
        "shard",
        "versions",
        "command",
    ):
        base[key] = attrs.get(key, "")
    if base["pool_n_configs"] == "":
        base["pool_n_configs"] = n_configs
    if base["config_start"] == "":
        base["config_start"] = 0
    if isinstance(base["versions"], dict):
        base["versions"] = json.dumps(base["versions"], sort_keys=True)
    for key in sorted(base):
        val = base[key]
        f.attrs[key] = np.int64(val) if isinstance(val, (int, np.integer)) else str(val)


class StoreWriter:
    """Writes a store front to back: all sizes known up front, chunks appended in order.

    ``n_rows[k]`` is the total number of rows of descriptor ``k``; :meth:`append` takes
    :class:`ChunkData` in config order. Use on a temporary path (the caller renames).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        specs: Sequence[DescriptorSpec],
        n_configs: int,
        n_rows: Sequence[int],
        attrs: dict,
        dtype: str = "float64",
        sources: tuple[np.ndarray, np.ndarray] | None = None,
        structure_width: int = 8,
    ) -> None:
        """``sources``: ``(source_file, source_frame)`` of every config (written at once);
        ``structure_width``: bytes of the longest structure label (at least 8)."""
        import h5py

        if dtype not in DTYPES:
            raise MlpdesignError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if any(s.dim is None for s in specs):
            raise MlpdesignError("internal error: descriptor dimensions unknown when writing")
        self.specs, self.n_configs, self.dtype = list(specs), int(n_configs), dtype
        self.f = h5py.File(path, "w", libver=("earliest", "v110"))
        f = self.f
        _root_attrs(f, self.specs, self.n_configs, dtype, attrs)
        n = self.n_configs
        cchunk = (max(1, min(n, 1 << 16)),)
        self.cid = _dataset(f, "candidate_id", (n,), np.int64, cchunk)
        self.nat = _dataset(f, "n_atoms", (n,), np.int32, cchunk)
        sdt = f"S{max(8, int(structure_width))}"
        self.struct = _dataset(f, "structure", (n,), sdt, cchunk)
        self.F = _dataset(f, "F", (n, 9), np.float64, (cchunk[0], 9))
        if sources is not None:
            sf, sk = (np.asarray(a) for a in sources)
            if sf.shape != (n,) or sk.shape != (n,):
                raise MlpdesignError("internal error: source arrays do not match the configs")
            _dataset(f, "source_file", (n,), np.int32, cchunk)[:] = sf
            _dataset(f, "source_frame", (n,), np.int64, cchunk)[:] = sk
        g = f.create_group("descriptors")
        self.rows, self.weights, self.offsets = [], [], []
        for k, (spec, nr) in enumerate(zip(self.specs, n_rows, strict=True)):
            d = g.create_group(str(k))
            for key, val in (
                ("name", spec.name),
                ("descriptor", spec.descriptor),
                ("kernel", spec.kernel_json()),
                ("segment", spec.segment or spec.render()),
                ("dim", int(spec.dim)),
            ):
                d.attrs[key] = np.int64(val) if isinstance(val, int) else val
            itemsize = np.dtype(dtype).itemsize
            rchunk = max(1, min(int(nr), CHUNK_BYTES // (itemsize * max(1, spec.dim))))
            self.rows.append(_dataset(d, "rows", (int(nr), spec.dim), dtype, (rchunk, spec.dim)))
            self.weights.append(
                _dataset(d, "weights", (int(nr),), np.float64, (max(1, min(int(nr), 1 << 17)),))
            )
            self.offsets.append(
                _dataset(d, "offsets", (n + 1,), np.int64, (max(1, min(n + 1, 1 << 16)),))
            )
            self.offsets[-1][0] = 0
        self._next_config = 0
        self._next_row = [0] * len(self.specs)

    def append(self, chunk: ChunkData) -> None:
        """Write the next configs; chunks must come in order and without gaps."""
        n = chunk.c1 - chunk.c0
        a, b = self._next_config, self._next_config + n
        if b > self.n_configs:
            raise MlpdesignError("internal error: more configs than announced")
        self.cid[a:b] = chunk.candidate_id
        self.nat[a:b] = chunk.n_atoms
        self.struct[a:b] = np.asarray(chunk.structure).astype(self.struct.dtype)
        self.F[a:b] = chunk.F
        for k in range(len(self.specs)):
            r0 = self._next_row[k]
            counts = np.asarray(chunk.counts[k], dtype=np.int64)
            r1 = r0 + int(counts.sum())
            rows = np.asarray(chunk.rows[k])
            if rows.shape != (r1 - r0, self.specs[k].dim):
                raise MlpdesignError(
                    f"internal error: rows of descriptor {k} have shape "
                    f"{rows.shape}, expected {(r1 - r0, self.specs[k].dim)}"
                )
            if r1 > r0:
                self.rows[k][r0:r1] = rows.astype(self.dtype, copy=False)
                self.weights[k][r0:r1] = chunk.weights[k]
            self.offsets[k][a + 1 : b + 1] = r0 + np.cumsum(counts)
            self._next_row[k] = r1
        self._next_config = b

    def abort(self) -> None:
        """Close without the completeness check (the caller discards the file)."""
        self.f.close()

    def close(self) -> None:
        """Check completeness and close the file."""
        try:
            if self._next_config != self.n_configs:
                raise MlpdesignError(
                    f"internal error: wrote {self._next_config} of {self.n_configs} configs"
                )
            for k, r in enumerate(self.rows):
                if self._next_row[k] != r.shape[0]:
                    raise MlpdesignError(
                        f"internal error: descriptor {k} has "
                        f"{self._next_row[k]} of {r.shape[0]} rows"
                    )
        finally:
            self.f.close()


def _dataset(group, name: str, shape: tuple, dtype, chunks: tuple):
    """A chunked dataset whose chunks are all allocated at creation, in a fixed order.

    Early allocation makes the file layout independent of how the data are later
    written (one go, per chunk, resumed, merged), so equal data give equal bytes.
    Fill values are never written (every element is written exactly once).
    """
    import h5py

    if 0 in shape:  # nothing to chunk (e.g. a pair descriptor with no pair in range)
        return group.create_dataset(name, shape, dtype)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return group.create_dataset(name, shape, dtype, chunks=chunks, dcpl=dcpl)


def structure_array(values, n: int) -> np.ndarray:
    """Structure labels as bytes at full length (``S8`` or wider); ``None``: all empty."""
    if values is None:
        return np.zeros(n, dtype=STRUCTURE_DTYPE)
    b = [v if isinstance(v, bytes) else str(v).encode() for v in values]
    return np.array(b, dtype=f"S{max([8, *map(len, b)])}")


def _checked_layout(k: int, r: np.ndarray, n: int, spec: DescriptorSpec, offsets, weights):
    """Offsets and weights of descriptor ``k`` (defaults filled in), checked against its rows."""
    o = (
        np.arange(n + 1, dtype=np.int64)
        if offsets is None or offsets[k] is None
        else np.asarray(offsets[k], dtype=np.int64)
    )
    if o.shape != (n + 1,) or o[0] != 0 or o[-1] != r.shape[0] or np.any(np.diff(o) < 0):
        raise MlpdesignError(
            f"offsets of descriptor {k} must be non-decreasing, length "
            f"{n + 1}, from 0 to {r.shape[0]}"
        )
    if spec.dim is None:
        spec.dim = int(r.shape[1])
    elif spec.dim != r.shape[1]:
        raise MlpdesignError(f"descriptor {k}: dim {spec.dim} but rows have {r.shape[1]} columns")
    w = (
        np.ones(r.shape[0])
        if weights is None or weights[k] is None
        else np.asarray(weights[k], dtype=np.float64)
    )
    if w.shape != (r.shape[0],):
        raise MlpdesignError(f"weights of descriptor {k} must have {r.shape[0]} entries")
    return o, w


def write_store_arrays(
    path: str | os.PathLike,
    gap: str | Sequence[DescriptorSpec],
    candidate_id,
    rows: Sequence,
    weights: Sequence | None = None,
    offsets: Sequence | None = None,
    *,
    n_atoms=None,
    structure=None,
    F=None,
    pool_sha256: str = "",
    pool_path: str = "",
    pool_n_configs: int | None = None,
    config_start: int = 0,
    shard: str = "",
    command: str = "",
    dtype: str = "float64",
    force: bool = False,
) -> Path:
    """Write a complete store from in-memory arrays (tests, synthetic stores, small pools).

    ``gap``: a GAP string or specs (one per entry of ``rows``). ``rows[k]``: (n_rows, dim)
    array of descriptor ``k``; ``weights[k]`` defaults to ones; ``offsets[k]`` (n_configs+1)
    defaults to one row per config. ``n_atoms`` defaults to ``offsets`` of the first
    descriptor's row counts. Written atomically; returns the path.
    """
    specs = (
        parse_gap(gap)
        if isinstance(gap, str)
        else [DescriptorSpec(s.name, s.descriptor, dict(s.kernel), s.segment, s.dim) for s in gap]
    )
    cid = np.asarray(candidate_id, dtype=np.int64)
    n = cid.shape[0]
    if len(rows) != len(specs):
        raise MlpdesignError(f"{len(rows)} row arrays for {len(specs)} descriptors")
    rows = [np.asarray(r, dtype=np.float64) for r in rows]
    for k, r in enumerate(rows):
        if r.ndim != 2:
            raise MlpdesignError(f"rows of descriptor {k} must be a 2-D (n_rows, dim) array")
    counts, wts = [], []
    for k, r in enumerate(rows):
        o, w = _checked_layout(k, r, n, specs[k], offsets, weights)
        counts.append(np.diff(o))
        wts.append(w)
    if n_atoms is None:  # one SOAP row per atom; else the first descriptor's rows
        per_atom = [k for k, s in enumerate(specs) if s.name == "soap"] or [0]
        n_atoms = counts[per_atom[0]] if counts else np.zeros(n)
    nat = np.asarray(n_atoms, dtype=np.int32)
    Fa = np.full((n, 9), np.nan) if F is None else np.asarray(F, dtype=np.float64).reshape(n, 9)
    struct = structure_array(structure, n)
    chunk = ChunkData(0, n, cid, nat, struct, Fa, rows, wts, counts)
    attrs = {
        "pool_sha256": pool_sha256,
        "pool_path": pool_path,
        "pool_n_configs": n if pool_n_configs is None else pool_n_configs,
        "config_start": config_start,
        "shard": shard,
        "versions": package_versions(),
        "command": command,
    }
    with atomic_path(path, force) as tmp:
        w = StoreWriter(
            tmp, specs, n, [r.shape[0] for r in rows], attrs, dtype, None, struct.itemsize
        )
        try:
            w.append(chunk)
        finally:
            w.close()
    return Path(path)


# ---------------------------------------------------------------------------- reader


def _column(name: str, doc: str, optional: bool = False) -> property:
    """A per-config array of a :class:`Store`, read once and cached; None when ``optional``
    and the store has none."""

    def get(self: Store) -> np.ndarray | None:
        if optional and name not in self.f:
            return None
        return self._array(name)

    return property(get, doc=doc)


class Store:
    """Read access to a store; datasets are read lazily, by config range.

    Use as a context manager or call :meth:`close`. ``k`` in the accessors is the
    descriptor position (0, 1, ...) or its name (``"soap"``) when unique.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import h5py

        self.path = Path(path)
        require_file(self.path, "store")
        try:
            self.f = h5py.File(self.path, "r")
        except OSError as e:
            raise _open_error(self.path, e) from None
        self._offsets: dict[int, np.ndarray] = {}
        self._cache: dict[str, np.ndarray] = {}
        try:
            self._validate()
            check_layout(self)
        except _READ_ERRORS as e:  # h5py on a damaged heap or B-tree; a missing attribute
            self.f.close()
            raise _damaged(self.path, _one_line(e)) from None
        except BaseException:
            self.f.close()
            raise

    def _validate(self) -> None:
        a = self.f.attrs
        fmt = a.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != FORMAT:
            raise MlpdesignError(f"{self.path}: not an mlpdesign descriptor store (format={fmt!r})")
        if int(a.get("format_version", -1)) != FORMAT_VERSION:
            raise MlpdesignError(
                f"{self.path}: store format version {a.get('format_version')}"
                f" is not supported (expected {FORMAT_VERSION})"
            )
        for key in ("gap", "n_configs"):
            if key not in a:
                raise _damaged(self.path, f"no attribute {key!r}")
        if "descriptors" not in self.f:
            raise _damaged(self.path, "no group 'descriptors'")
        self.attrs = {
            k: (
                v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v
            )
            for k, v in a.items()
        }
        self.gap: str = self.attrs["gap"]
        self.n_configs: int = int(self.attrs["n_configs"])
        self.pool_sha256: str = self.attrs.get("pool_sha256", "")
        self.pool_path: str = self.attrs.get("pool_path", "")
        self.pool_n_configs: int = int(self.attrs.get("pool_n_configs", self.n_configs))
        self.config_start: int = int(self.attrs.get("config_start", 0))
        self.shard: str = self.attrs.get("shard", "")
        self.dtype: str = self.attrs.get("dtype", "float64")
        self.descriptors: list[DescriptorSpec] = []
        g = self.f["descriptors"]
        for k in range(len(g)):
            d = g[str(k)].attrs
            self.descriptors.append(
                DescriptorSpec(
                    name=str(d["name"]),
                    descriptor=str(d["descriptor"]),
                    kernel=json.loads(d["kernel"]),
                    segment=str(d["segment"]),
                    dim=int(d["dim"]),
                )
            )

    # -- lifetime
    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- per-config arrays (loaded once, cached)
    def _array(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self.f[name][()]
        return self._cache[name]

    candidate_id = _column("candidate_id", "``(n_configs,)`` stable candidate ids.")
    n_atoms = _column("n_atoms", "``(n_configs,)`` atoms per config.")
    structure = _column(
        "structure", '``(n_configs,)`` bytes (``b"hcp"``, ...; ``b""`` when unknown).'
    )
    F = _column("F", "``(n_configs, 9)`` deformation gradients (NaN when unknown).")
    source_file = _column(
        "source_file",
        "``(n_configs,)`` input number (into :attr:`pool_files`) of each config, or None "
        "for a store written before sources were kept.",
        optional=True,
    )
    source_frame = _column(
        "source_frame",
        "``(n_configs,)`` frame of each config within its input file, or None.",
        optional=True,
    )

    @property
    def pool_files(self) -> list[str]:
        """The pool's input files in order (one: :attr:`pool_path`)."""
        try:
            files = json.loads(self.attrs.get("pool_files") or "[]")
        except json.JSONDecodeError:
            files = []
        return files or ([self.pool_path] if self.pool_path else [])

    @property
    def versions(self) -> dict:
        try:
            return json.loads(self.attrs.get("versions") or "{}")
        except json.JSONDecodeError:
            return {}

    # -- descriptors
    def index(self, k: int | str) -> int:
        """Position of descriptor ``k`` (a position or a unique name)."""
        if isinstance(k, str):
            hits = [i for i, s in enumerate(self.descriptors) if s.name == k]
            if len(hits) != 1:
                raise MlpdesignError(
                    f"{self.path}: {'no' if not hits else 'several'} descriptor named {k!r}"
                )
            return hits[0]
        if not 0 <= int(k) < len(self.descriptors):
            raise MlpdesignError(f"{self.path}: no descriptor {k} (has {len(self.descriptors)})")
        return int(k)

    def offsets(self, k: int | str) -> np.ndarray:
        """CSR offsets (n_configs+1) of descriptor ``k``."""
        i = self.index(k)
        if i not in self._offsets:
            self._offsets[i] = self.f[f"descriptors/{i}/offsets"][()]
        return self._offsets[i]

    def n_rows(self, k: int | str) -> int:
        return int(self.f[f"descriptors/{self.index(k)}/rows"].shape[0])

    def _range(self, k: int | str, c0: int, c1: int | None) -> tuple[int, int, int]:
        i = self.index(k)
        c1 = self.n_configs if c1 is None else c1
        if not 0 <= c0 <= c1 <= self.n_configs:
            raise MlpdesignError(f"config range {c0}:{c1} outside 0:{self.n_configs}")
        o = self.offsets(i)
        return i, int(o[c0]), int(o[c1])

    def rows(self, k: int | str, c0: int = 0, c1: int | None = None) -> np.ndarray:
        """Rows of configs ``c0 .. c1-1`` of descriptor ``k`` (in the store's dtype)."""
        i, r0, r1 = self._range(k, c0, c1)
        return self.f[f"descriptors/{i}/rows"][r0:r1]

    def weights(self, k: int | str, c0: int = 0, c1: int | None = None) -> np.ndarray:
        """Covariance-cutoff weights of the rows of configs ``c0 .. c1-1``."""
        i, r0, r1 = self._range(k, c0, c1)
        return self.f[f"descriptors/{i}/weights"][r0:r1]

    def config_ranges(self, max_rows: int = 1 << 18) -> list[tuple[int, int]]:
        """Split the configs into consecutive ranges of at most ``max_rows`` rows per
        descriptor (at least one config each), for streaming."""
        bounds = [0]
        offs = [self.offsets(k) for k in range(len(self.descriptors))]
        c = 0
        while c < self.n_configs:
            hi = self.n_configs
            for o in offs:
                j = int(np.searchsorted(o, o[c] + max_rows, side="right")) - 1
                hi = min(hi, max(j, c + 1))
            bounds.append(hi)
            c = hi
        return list(zip(bounds[:-1], bounds[1:], strict=False))

    def row_check(self, k: int) -> RowCheck | None:
        """A :class:`RowCheck` for a reader of all of descriptor ``k``'s rows, or None when
        this process has checked the store's values already."""
        return None if values_checked(self) else RowCheck(self, k)

    def mark_checked(self) -> None:
        """After every :meth:`row_check` was fed all rows and finished."""
        mark_checked(self)

    def summary(self) -> dict:
        """What the store holds, as plain data (for ``mlpdesign info``)."""
        desc = []
        for k, s in enumerate(self.descriptors):
            nr = self.n_rows(k)
            desc.append(
                {
                    "index": k,
                    "name": s.name,
                    "descriptor": s.descriptor,
                    "kernel": s.kernel,
                    "dim": s.dim,
                    "n_rows": nr,
                    "rows_per_config": nr / self.n_configs if self.n_configs else 0.0,
                    "bytes": nr * s.dim * np.dtype(self.dtype).itemsize,
                }
            )
        structs, counts = np.unique(self.structure, return_counts=True)
        return {
            "path": str(self.path),
            "file_bytes": self.path.stat().st_size,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "n_configs": self.n_configs,
            "pool_n_configs": self.pool_n_configs,
            "config_start": self.config_start,
            "shard": self.shard,
            "pool_path": self.pool_path,
            "pool_files": self.pool_files,
            "pool_sha256": self.pool_sha256,
            "gap": self.gap,
            "dtype": self.dtype,
            "n_atoms": int(self.n_atoms.sum()),
            "candidate_id_range": (
                [int(self.candidate_id.min()), int(self.candidate_id.max())]
                if self.n_configs
                else []
            ),
            "structures": {s.decode() or "?": int(c) for s, c in zip(structs, counts, strict=True)},
            "descriptors": desc,
            "versions": self.versions,
            "command": self.attrs.get("command", ""),
        }


def open_store(path: str | os.PathLike, check: bool = True) -> Store:
    """Open a store for reading; refuse anything that is not one, or a damaged one, with
    one line. ``check``: also read every row once (block by block, once per process,
    :func:`check_values`): non-finite numbers, or a SOAP row off the unit sphere."""
    s = Store(path)
    if check:
        try:
            check_values(s)
        except _READ_ERRORS as e:
            s.close()
            raise _damaged(s.path, _one_line(e)) from None
        except BaseException:
            s.close()
            raise
    return s


_READ_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:200] if isinstance(e, KeyError) else text[:200]


#: Bytes of rows read at a time when a store's values are checked on open.
CHECK_BYTES = 16 << 20
#: A SOAP row of a normalised store whose norm is further than this from 1 is damaged.
NORM_TOLERANCE = 1e-3
#: Stores whose values were checked in this process: (path, inode, size, mtime).
_CHECKED: set[tuple] = set()

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _damaged(path: Path, what: str) -> MlpdesignError:
    return MlpdesignError(f"{path}: is damaged ({what}); describe the pool again")


def _open_error(path: Path, e: OSError) -> MlpdesignError:
    """Why h5py could not open ``path``: a damaged store, or not HDF5 at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        head = b""
    if _HDF5_SIGNATURE in head:
        msg = " ".join(str(e).split())
        return _damaged(path, f"truncated or overwritten? {msg[:160]}")
    return MlpdesignError(
        f"{path}: not an HDF5 file (expected a store written by mlpdesign describe)"
    )


def _require(f, name: str, shape: tuple, path: Path):
    """Dataset ``name`` of ``f``, checked to have ``shape`` (None: any length)."""
    import h5py

    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise _damaged(path, f"no dataset {name!r}")
    if len(obj.shape) != len(shape) or any(
        want is not None and got != want for got, want in zip(obj.shape, shape, strict=True)
    ):
        raise _damaged(path, f"dataset {name!r} has shape {obj.shape}, expected {shape}")
    return obj


def check_layout(store: Store) -> None:
    """Every dataset a reader needs, with consistent shapes and CSR offsets."""
    f, n, p = store.f, store.n_configs, store.path
    for name, shape in (("candidate_id", (n,)), ("n_atoms", (n,)), ("structure", (n,))):
        _require(f, name, shape, p)
    _require(f, "F", (n, 9), p)
    if not store.descriptors:
        raise _damaged(p, "no descriptor")
    for k, d in enumerate(store.descriptors):
        rows = _require(f, f"descriptors/{k}/rows", (None, d.dim), p)
        nr = rows.shape[0]
        _require(f, f"descriptors/{k}/weights", (nr,), p)
        o = _require(f, f"descriptors/{k}/offsets", (n + 1,), p)[()]
        if o[0] != 0 or o[-1] != nr or np.any(np.diff(o) < 0):
            raise _damaged(p, f"offsets of descriptor {k} are not 0 .. {nr}, non-decreasing")


class RowCheck:
    """The value rules of :func:`check_values` for descriptor ``k``, fed block by block
    by whoever reads the rows anyway (the kernel's load: one read instead of two).

    Non-finite rows or weights raise at once; a SOAP row off the unit sphere, in a store
    whose rows are mostly unit vectors (QUIP's normalize=T), raises in :meth:`finish`.
    Thread-safe: blocks may come in any order; the lowest off-norm row is the one named."""

    def __init__(self, store: Store, k: int) -> None:
        import threading

        self.store, self.k = store, k
        self.soap = store.descriptors[k].name == "soap"
        self.unit, self.off_norm = 0, None
        self._lock = threading.Lock()
        self._seen: set[tuple[int, int]] = set()

    def rows(self, r0: int, x: np.ndarray) -> None:
        """Rows ``r0 ..`` of the store (as stored). One pass of squared row norms finds
        both faults: a row's squared norm is finite only if every number in it is."""
        x = x.reshape(len(x), -1)
        with self._lock:  # a block read twice (a reader's first look) counts once
            if (r0, len(x)) in self._seen:
                return
            self._seen.add((r0, len(x)))
        sq = np.einsum("ij,ij->i", x, x)
        self._finite(r0, sq, "rows")
        if self.soap:
            ok = np.abs(np.sqrt(sq, dtype=np.float64) - 1.0) <= NORM_TOLERANCE
            with self._lock:
                self.unit += int(ok.sum())
                if not ok.all():
                    row = r0 + int(np.argmin(ok))
                    self.off_norm = row if self.off_norm is None else min(self.off_norm, row)

    def weights(self, r0: int, w: np.ndarray) -> None:
        self._finite(r0, np.asarray(w), "weights")

    def _finite(self, r0: int, v: np.ndarray, what: str) -> None:
        bad = ~np.isfinite(v)
        if bad.any():
            row = r0 + int(np.argmax(bad))
            raise _damaged(
                self.store.path, _where(self.store, self.k, row, f"NaN or infinite {what}")
            )

    def finish(self) -> None:
        """Raise for an off-norm SOAP row once every row has been seen."""
        nr = self.store.f[f"descriptors/{self.k}/rows"].shape[0]
        if self.off_norm is not None and 2 * self.unit >= nr:
            row = self.off_norm
            x = np.asarray(self.store.f[f"descriptors/{self.k}/rows"][row], dtype=np.float64)
            raise _damaged(
                self.store.path,
                _where(
                    self.store,
                    self.k,
                    row,
                    f"norm {np.linalg.norm(x):.6g} where SOAP rows are unit",
                ),
            )


def _check_rows(store: Store, k: int) -> None:
    """Every row and weight of descriptor ``k`` through :class:`RowCheck`, block by block."""
    d = store.descriptors[k]
    rows = store.f[f"descriptors/{k}/rows"]
    weights = store.f[f"descriptors/{k}/weights"]
    nr = rows.shape[0]
    step = max(1, CHECK_BYTES // (rows.dtype.itemsize * max(1, d.dim)))
    check = RowCheck(store, k)
    for r0 in range(0, nr, step):
        r1 = min(nr, r0 + step)
        check.rows(r0, rows[r0:r1])
        check.weights(r0, weights[r0:r1])
    check.finish()


def _where(store: Store, k: int, row: int, what: str) -> str:
    c = int(np.searchsorted(store.offsets(k), row, side="right")) - 1
    return f"{what} in row {row} of descriptor {k} ({store.descriptors[k].name}), config {c}"


def _checked_key(store: Store) -> tuple:
    st = store.path.stat()
    return (os.path.realpath(store.path), st.st_ino, st.st_size, st.st_mtime_ns)


def values_checked(store: Store) -> bool:
    """Whether this process has checked every stored number of ``store`` already."""
    return _checked_key(store) in _CHECKED


def mark_checked(store: Store) -> None:
    """Record that every number of ``store`` passed :class:`RowCheck` (and its finish)."""
    _CHECKED.add(_checked_key(store))


def check_values(store: Store) -> None:
    """Check every stored number once per process (block by block: memory stays small)."""
    if values_checked(store):
        return
    for k in range(len(store.descriptors)):
        _check_rows(store, k)
    mark_checked(store)


def verify_pool(store: Store, pool_path: str | os.PathLike | Sequence) -> None:
    """Refuse (MlpdesignError) unless ``pool_path`` (one input or several, in order) is the
    pool ``store`` was made from."""
    from mlpdesign.io.frames import expand_inputs, pool_checksum

    sha = pool_checksum(expand_inputs(pool_path))
    if store.pool_sha256 and sha != store.pool_sha256:
        raise MlpdesignError(
            f"{store.path} was described from a different pool (sha256 "
            f"{store.pool_sha256[:12]}…) than {pool_path} (sha256 {sha[:12]}…); "
            "run mlpdesign describe again"
        )


def stores_equal(
    a: str | os.PathLike, b: str | os.PathLike, ignore_attrs: Sequence[str] = ("command",)
) -> list[str]:
    """Differences between two stores' datasets and attributes (empty list = identical).

    ``command`` is ignored by default: it records how a store was made (a merged store
    and an unsharded run hold the same data but were made by different commands).
    """
    import h5py

    diffs: list[str] = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:

        def walk(ga, gb, prefix):
            for key in sorted(set(ga.attrs) | set(gb.attrs)):
                if key in ignore_attrs:
                    continue
                va, vb = ga.attrs.get(key), gb.attrs.get(key)
                if not np.array_equal(np.asarray(va), np.asarray(vb)):
                    diffs.append(f"{prefix or '/'} attr {key}: {va!r} != {vb!r}")
            for key in sorted(set(ga) | set(gb)):
                if key not in ga or key not in gb:
                    diffs.append(f"{prefix}/{key} missing in one")
                    continue
                oa, ob = ga[key], gb[key]
                if isinstance(oa, h5py.Group):
                    walk(oa, ob, f"{prefix}/{key}")
                elif (
                    oa.shape != ob.shape
                    or oa.dtype != ob.dtype
                    or not np.array_equal(oa[()], ob[()], equal_nan=oa.dtype.kind == "f")
                ):
                    diffs.append(f"{prefix}/{key} differs")

        walk(fa, fb, "")
    return diffs


# ---------------------------------------------------------------------------- merge


def check_shards(stores: list[Store]) -> None:
    """Refuse shards of different pools, strings or dtypes, and gaps or overlaps; sorts
    ``stores`` by their first config."""
    first = stores[0]
    for s in stores[1:]:
        if s.pool_sha256 != first.pool_sha256:
            raise MlpdesignError(
                f"{s.path} and {first.path} were made from different pools (pool_sha256 differs)"
            )
        if s.gap != first.gap or [d.dim for d in s.descriptors] != [
            d.dim for d in first.descriptors
        ]:
            raise MlpdesignError(
                f"{s.path} and {first.path} have different descriptor strings "
                f"({s.gap!r} vs {first.gap!r})"
            )
        if (s.dtype, s.pool_n_configs) != (first.dtype, first.pool_n_configs):
            raise MlpdesignError(f"{s.path} and {first.path} differ in dtype or pool size")
    stores.sort(key=lambda s: (s.config_start, s.n_configs))
    pos = 0
    for s in stores:
        a, b = s.config_start, s.config_start + s.n_configs
        if a > pos:
            raise MlpdesignError(
                f"configs {pos}..{a - 1} of the pool are missing (no "
                f"shard covers them; next is {s.path})"
            )
        if a < pos:
            raise MlpdesignError(
                f"{s.path} (configs {a}..{b - 1}) overlaps another "
                f"shard (configs up to {pos - 1} already covered)"
            )
        pos = b
    if pos != first.pool_n_configs:
        raise MlpdesignError(
            f"configs {pos}..{first.pool_n_configs - 1} of the pool are "
            "missing (no shard covers them)"
        )


def copy_shards(stores: list[Store], w: StoreWriter, bar=None) -> None:
    """Append every config of ``stores`` (sorted, contiguous) to ``w``, chunk by chunk."""
    nd = len(stores[0].descriptors)
    pos = 0
    for s in stores:
        for c0, c1 in s.config_ranges():
            offs = [s.offsets(k) for k in range(nd)]
            ch = ChunkData(
                pos + c0,
                pos + c1,
                s.f["candidate_id"][c0:c1],
                s.f["n_atoms"][c0:c1],
                s.f["structure"][c0:c1],
                s.f["F"][c0:c1],
                [s.rows(k, c0, c1) for k in range(nd)],
                [s.weights(k, c0, c1) for k in range(nd)],
                [np.diff(o[c0 : c1 + 1]) for o in offs],
            )
            w.append(ch)
            if bar is not None:
                bar.update(c1 - c0)
        pos += s.n_configs


def _merged_sources(stores: list[Store]) -> tuple[np.ndarray, np.ndarray] | None:
    """The shards' source arrays joined (None unless every shard has them)."""
    if any(s.source_file is None or s.source_frame is None for s in stores):
        return None
    return (
        np.concatenate([s.source_file for s in stores]),
        np.concatenate([s.source_frame for s in stores]),
    )


def merge_stores(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    force: bool = False,
    command: str = "",
    progress=None,
) -> Path:
    """Join the shards of one pool (``describe --shard i/n``) into one store.

    Refuses stores of different pools, GAP strings or dtypes, and shards that leave
    configs missing or cover some twice. The result equals an unsharded run's store in
    every dataset and attribute but ``command``. ``progress(total)``: optional factory.
    """
    import h5py  # noqa: F401  (fail early with a clear import error)

    if not paths:
        raise MlpdesignError("merge needs at least one store")
    out = Path(output)
    for p in paths:
        if Path(p).resolve() == out.resolve():
            raise MlpdesignError(f"{out} is both an input and the output")
    check_output(out, force)
    stores = [open_store(p) for p in paths]
    try:
        first = stores[0]  # its versions attribute is kept
        check_shards(stores)
        nd = len(first.descriptors)
        n_rows = [sum(s.n_rows(k) for s in stores) for k in range(nd)]
        ids = np.concatenate([s.candidate_id for s in stores])
        if np.unique(ids).shape[0] != ids.shape[0]:
            raise MlpdesignError("the shards hold a candidate_id more than once")
        attrs = {
            "pool_sha256": first.pool_sha256,
            "pool_path": first.pool_path,
            "pool_files": first.attrs.get("pool_files", ""),
            "pool_n_configs": first.pool_n_configs,
            "config_start": 0,
            "shard": "",
            "versions": first.attrs.get("versions", ""),
            "command": command,
        }
        bar = progress(first.pool_n_configs) if progress is not None else None
        with atomic_path(out, force) as tmp:
            w = StoreWriter(
                tmp,
                first.descriptors,
                first.pool_n_configs,
                n_rows,
                attrs,
                first.dtype,
                _merged_sources(stores),
                max(s.f["structure"].dtype.itemsize for s in stores),
            )
            try:
                copy_shards(stores, w, bar)
            finally:
                w.close()
                if bar is not None:
                    bar.close()
    finally:
        for s in stores:
            s.close()
    return out
