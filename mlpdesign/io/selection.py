"""Selection files (``select``'s output): HDF5 (default), JSON or plain text.

The layout is the contract in ``docs/formats.md``: the ordered ``candidate_id``, the 0-based
``index`` of each pick in the store, ``psi`` (min D² to the design at pick time, +inf for
the first pick of an unconditional design), and attributes describing how it was made.
A design refined by ``select --refine exchange`` is a set, not an ordered design: its
attribute ``ordered`` is false (``psi``: each member's D² to the rest of the set and the
given set; ``var``: its leave-one-out σ²), and it has no prefixes.

Library API::

    Selection(candidate_id, index, psi, attrs)  .pool_sha256 .method .n .prefix(k)
                                                .ordered   # False: a set (select --refine)
    write_selection(path, sel, fmt=None, force=False) -> Path   # fmt: h5|json|txt (default:
                                                                 # from the suffix, else h5)
    load_selection(path) -> Selection     # any of the three formats, told apart by content
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import atomic_path, require_file

FORMAT = "mlpdesign-selection"
FORMAT_VERSION = 1
FORMATS = ("h5", "json", "txt")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: attributes always written (in this order for txt/json), with their defaults
ATTR_KEYS = (
    "format",
    "format_version",
    "method",
    "pool_sha256",
    "store_path",
    "gap",
    "kernel",
    "seed",
    "first",
    "n_requested",
    "stopped_early",
    "given",
    "distance",
    "command",
)
#: attributes written only when a selection has them (after ATTR_KEYS)
OPTIONAL_KEYS = (
    "stratify",
    "strata",
    "strata_share",
    "until_psi",
    "until_var",
    "jitter",
    "total_atoms",
    "dft_cost",
    "max_atoms",
)
#: attributes of a design refined by ``select --refine exchange`` (written when present)
EXCHANGE_KEYS = (
    "ordered",
    "refine",
    "refine_tol",
    "max_swaps",
    "n_swaps",
    "objective",
    "objective_before",
    "objective_after",
    "swaps",
)
OPTIONAL_KEYS += EXCHANGE_KEYS
_INT_KEYS = ("format_version", "seed", "n_requested", "total_atoms", "max_atoms")
_INT_KEYS += ("max_swaps", "n_swaps")
_FLOAT_KEYS = ("refine_tol", "objective_before", "objective_after")


@dataclass
class Selection:
    """An ordered selection; ``index`` is None when read from a txt file."""

    candidate_id: np.ndarray
    index: np.ndarray | None
    psi: np.ndarray
    attrs: dict = field(default_factory=dict)
    var: np.ndarray | None = None  # σ² at pick time (maxent designs), else None

    def __post_init__(self) -> None:
        self.candidate_id = np.asarray(self.candidate_id, dtype=np.int64)
        self.psi = np.asarray(self.psi, dtype=np.float64)
        if self.var is not None:
            self.var = np.asarray(self.var, dtype=np.float64)
            if self.var.shape != self.psi.shape:
                raise MlpdesignError("selection arrays have different lengths")
        if self.index is not None:
            self.index = np.asarray(self.index, dtype=np.int64)
        if self.psi.shape != self.candidate_id.shape or (
            self.index is not None and self.index.shape != self.candidate_id.shape
        ):
            raise MlpdesignError("selection arrays have different lengths")

    @property
    def n(self) -> int:
        return len(self.candidate_id)

    @property
    def pool_sha256(self) -> str:
        return str(self.attrs.get("pool_sha256", ""))

    @property
    def method(self) -> str:
        return str(self.attrs.get("method", ""))

    @property
    def ordered(self) -> bool:
        """False for a set (``select --refine exchange``): no prefix of it is a design."""
        return self.attrs.get("ordered", True) is not False

    def prefix(self, k: int) -> Selection:
        """The first ``k`` picks (itself a max-min design); refused on an unordered set."""
        if not self.ordered and k < self.n:
            raise MlpdesignError(
                f"an unordered set of {self.n} (select --refine exchange) has no prefix "
                f"of {k}; take it whole or select {k} again"
            )
        return Selection(
            self.candidate_id[:k],
            None if self.index is None else self.index[:k],
            self.psi[:k],
            dict(self.attrs),
            None if self.var is None else self.var[:k],
        )


def _full_attrs(attrs: dict) -> dict:
    out = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": "maxmin",
        "pool_sha256": "",
        "store_path": "",
        "gap": "",
        "kernel": "{}",
        "seed": 0,
        "first": "",
        "n_requested": 0,
        "stopped_early": False,
        "given": "[]",
        "distance": "D2",
        "command": "",
    }
    for k, v in attrs.items():
        out[k] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
    out["format"], out["format_version"] = FORMAT, FORMAT_VERSION
    return out


def _written(attrs: dict, k: str) -> bool:
    """Whether optional attribute ``k`` goes into the file: when set (the exchange's keys:
    when present, so ``ordered: false`` and a zero tolerance are written)."""
    if k in EXCHANGE_KEYS:
        return attrs.get(k) is not None
    return bool(attrs.get(k))


def _fmt_of(path: Path, fmt: str | None) -> str:
    if fmt is None:
        suf = path.suffix.lower()
        fmt = {".json": "json", ".txt": "txt", ".dat": "txt"}.get(suf, "h5")
    if fmt == "hdf5":
        fmt = "h5"
    if fmt not in FORMATS:
        raise MlpdesignError(f"unknown selection format {fmt!r} (one of {', '.join(FORMATS)})")
    return fmt


def selection_text(sel: Selection, fmt: str) -> str:
    """``sel`` as JSON or text (``fmt`` ``json`` or ``txt``): the bytes of those files."""
    attrs = _full_attrs(sel.attrs)
    keys = [*ATTR_KEYS, *(k for k in OPTIONAL_KEYS if _written(sel.attrs, k))]
    index = sel.index if sel.index is not None else np.full(sel.n, -1, dtype=np.int64)
    if fmt == "json":
        doc = {k: attrs[k] for k in keys}
        doc["candidate_id"] = [int(x) for x in sel.candidate_id]
        doc["index"] = [int(x) for x in index]
        doc["psi"] = [None if not math.isfinite(x) else float(x) for x in sel.psi]
        if sel.var is not None:
            doc["var"] = [float(x) for x in sel.var]
        return json.dumps(doc, indent=1) + "\n"
    lines = [f"# {k}: {attrs[k]}" for k in keys]
    if sel.var is None:
        lines.append("# rank candidate_id psi")
        lines += [
            f"{r} {int(c)} {float(s)!r}"
            for r, (c, s) in enumerate(zip(sel.candidate_id, sel.psi, strict=True))
        ]
    else:
        lines.append("# rank candidate_id psi var")
        rows = zip(sel.candidate_id, sel.psi, sel.var, strict=True)
        lines += [f"{r} {int(c)} {float(s)!r} {float(v)!r}" for r, (c, s, v) in enumerate(rows)]
    return "\n".join(lines) + "\n"


def _write_h5(tmp: Path, sel: Selection) -> None:
    import h5py

    attrs = _full_attrs(sel.attrs)
    keys = [*ATTR_KEYS, *(k for k in OPTIONAL_KEYS if _written(sel.attrs, k))]
    index = sel.index if sel.index is not None else np.full(sel.n, -1, dtype=np.int64)
    with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as f:
        for k in keys:
            v = attrs[k]
            if isinstance(v, bool):
                f.attrs[k] = np.bool_(v)
            elif isinstance(v, (int, np.integer)):
                f.attrs[k] = np.int64(v)
            else:
                f.attrs[k] = str(v)
        f.create_dataset("candidate_id", data=sel.candidate_id, dtype=np.int64)
        f.create_dataset("index", data=index, dtype=np.int64)
        f.create_dataset("psi", data=sel.psi, dtype=np.float64)
        if sel.var is not None:
            f.create_dataset("var", data=sel.var, dtype=np.float64)


def write_selection(
    path: str | os.PathLike, sel: Selection, fmt: str | None = None, force: bool = False
) -> Path:
    """Write ``sel`` atomically as HDF5, JSON or text (same bytes for the same input);
    ``path`` ``-``: JSON or text (default) on standard output."""
    if str(path) == "-":
        fmt = fmt or "txt"
        if fmt == "h5":
            raise MlpdesignError("-o -: HDF5 does not go to standard output; --format json or txt")
        sys.stdout.write(selection_text(sel, fmt))
        sys.stdout.flush()
        return Path("-")
    p = Path(path)
    fmt = _fmt_of(p, fmt)
    with atomic_path(p, force) as tmp:
        if fmt == "h5":
            _write_h5(tmp, sel)
        else:
            tmp.write_text(selection_text(sel, fmt))
    return p


def _typed_attr(k: str, v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    if k in _INT_KEYS:
        try:
            return int(v)
        except (TypeError, ValueError):
            return v
    if k in _FLOAT_KEYS:
        try:
            return float(v)
        except (TypeError, ValueError):
            return v
    if k in ("stopped_early", "ordered") and isinstance(v, str):
        return v.strip().lower() in ("true", "1", "t")
    return v


def _load_h5(p: Path) -> Selection:
    import h5py

    with h5py.File(p, "r") as f:
        attrs = {k: _typed_attr(k, v) for k, v in f.attrs.items()}
        if attrs.get("format") != FORMAT:
            raise MlpdesignError(
                f"{p}: not an mlpdesign selection (format={attrs.get('format')!r}); a store?"
            )
        try:
            cid, idx, psi = f["candidate_id"][()], f["index"][()], f["psi"][()]
        except KeyError as e:
            raise MlpdesignError(f"{p}: selection lacks dataset {e}") from None
        var = f["var"][()] if "var" in f else None
    idx = None if len(idx) and np.all(idx < 0) else idx
    try:
        return Selection(cid, idx, psi, attrs, var)
    except MlpdesignError as e:
        raise MlpdesignError(f"{p}: is damaged ({e})") from None


def load_selection(path: str | os.PathLike) -> Selection:
    """Read a selection in any of the three formats (told apart by the file's content)."""
    p = require_file(path, "selection file")
    with open(p, "rb") as f:
        head = f.read(8)
    if head == _HDF5_MAGIC:
        try:
            return _load_h5(p)
        except (OSError, RuntimeError, ValueError, TypeError) as e:  # h5py on a damaged file
            detail = " ".join(str(e).split())[:160]
            raise MlpdesignError(
                f"{p}: is damaged (truncated or overwritten? {detail}); select again"
            ) from None
    text = p.read_text(errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise MlpdesignError(f"{p}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if doc.get("format") != FORMAT:
            raise MlpdesignError(f"{p}: not an mlpdesign selection (format={doc.get('format')!r})")
        try:
            psi = [math.inf if x is None else float(x) for x in doc["psi"]]
            idx = doc.get("index")
            idx = None if idx is None or (idx and all(i < 0 for i in idx)) else idx
            attrs = {
                k: _typed_attr(k, v)
                for k, v in doc.items()
                if k not in ("candidate_id", "index", "psi", "var")
            }
            return Selection(doc["candidate_id"], idx, psi, attrs, doc.get("var"))
        except (KeyError, TypeError, ValueError) as e:
            raise MlpdesignError(f"{p}: malformed selection JSON ({e})") from None
    if stripped.startswith("#"):
        attrs, cid, psi, var = {}, [], [], []
        for n, line in enumerate(text.splitlines(), 1):
            if line.startswith("#"):
                key, sep, val = line[1:].strip().partition(": ")
                if sep and (key in ATTR_KEYS or key in OPTIONAL_KEYS):
                    attrs[key] = _typed_attr(key, val)
                continue
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) not in (3, 4) or (var and len(parts) == 3):
                    raise ValueError
                cid.append(int(parts[1]))
                psi.append(float(parts[2]))
                if len(parts) == 4:
                    var.append(float(parts[3]))
            except ValueError:
                raise MlpdesignError(
                    f"{p}:{n}: expected 'rank candidate_id psi', got {line.strip()!r}"
                ) from None
        if attrs.get("format") != FORMAT:
            raise MlpdesignError(f"{p}: not an mlpdesign selection (no '# format: {FORMAT}')")
        if var and len(var) != len(cid):
            raise MlpdesignError(f"{p}: some lines have a var column and some do not")
        return Selection(cid, None, psi, attrs, var or None)
    raise MlpdesignError(
        f"{p}: not a selection file (expected HDF5, JSON or text written by mlpdesign select)"
    )
