"""Energy prediction with a GAP model read from ``gap_fit``'s XML, in numpy.

Cross-validation predicts every labelled set with every model. ``quippy.potential.Potential``
would recompute all descriptors for each model (and the bundled ``quip`` binary crashes), so
here the descriptors of a configuration are computed once with quippy and every model is
applied to them:

    E = sum_Z n_Z e0_Z + sum_t sum_{i in rows_t} c_i sum_s alpha_ts k_t(x_i, s)

with, per ``gpCoordinates`` block t of the XML (QUIP's ``gpCoordinates_Predict``):
``ard_se``: ``k = delta^2 exp(-|x - s|^2_theta / 2) * sparseCutoff_s``;
``dot_product``: ``k = delta^2 (x . s)^zeta``; ``c_i`` is the descriptor's covariance cutoff.
Sparse points are read from the ``*.sparseX.*`` files beside the XML (one number a line,
point after point). A test checks this against ``quippy.potential.Potential``.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from mlpdesign.describe.runner import distance_2b_direct
from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import KERNEL_KEYS

_COVARIANCE = {"1": "ard_se", "2": "dot_product"}


@dataclass
class SparseTerm:
    """One ``gpCoordinates`` block: a descriptor, its kernel, sparse points and weights."""

    descriptor: str
    covariance: str  # "ard_se" | "dot_product"
    delta: float
    sparse: np.ndarray  # (n_sparse, dim)
    alpha: np.ndarray  # (n_sparse,)
    sparse_cutoff: np.ndarray  # (n_sparse,)
    theta: np.ndarray | None = None  # (dim,) for ard_se
    zeta: float = 1.0

    def local_energies(self, rows: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
        """Energy of each descriptor row (before its covariance cutoff), shape (n_rows,)."""
        out = np.empty(len(rows))
        d2 = self.delta**2
        if self.covariance == "dot_product":
            for a in range(0, len(rows), chunk):
                k = rows[a : a + chunk] @ self.sparse.T
                out[a : a + chunk] = d2 * _power(k, self.zeta) @ self.alpha
        else:
            w = self.alpha * self.sparse_cutoff
            s = self.sparse / self.theta
            for a in range(0, len(rows), chunk):
                x = rows[a : a + chunk] / self.theta
                if s.shape[1] == 1:  # 1-d descriptors (distance_2b): direct difference
                    r2 = (x[:, :1] - s[None, :, 0]) ** 2
                else:
                    r2 = (x * x).sum(1)[:, None] + (s * s).sum(1)[None, :] - 2.0 * x @ s.T
                out[a : a + chunk] = d2 * np.exp(-0.5 * np.maximum(r2, 0.0)) @ w
        return out


def _power(k: np.ndarray, zeta: float) -> np.ndarray:
    z = int(round(zeta))
    if abs(zeta - z) < 1e-12:
        if z == 4:
            k2 = k * k
            return k2 * k2
        return k**z
    return k**zeta


@dataclass
class GapModel:
    """A GAP model: per-species e0 and a list of sparse terms."""

    path: Path
    e0: dict[int, float]
    terms: list[SparseTerm]

    @property
    def descriptors(self) -> list[str]:
        """The descriptor strings this model needs (as written in the XML)."""
        return [t.descriptor for t in self.terms]

    def energy(self, numbers: np.ndarray, desc: dict[str, tuple[np.ndarray, np.ndarray]]) -> float:
        """Total energy of one configuration from its descriptors ``{string: (rows, cutoff)}``."""
        e = float(sum(self.e0.get(int(z), 0.0) for z in numbers))
        for t in self.terms:
            rows, cut = desc[t.descriptor]
            if len(rows):
                e += float(cut @ t.local_energies(rows))
        return e


def _num(el: ET.Element, key: str, where: str) -> float:
    v = el.get(key)
    if v is None:
        raise MlpdesignError(f"{where}: missing attribute {key}")
    try:
        return float(v)
    except ValueError:
        raise MlpdesignError(f"{where}: {key}={v!r} is not a number") from None


def load_gap(path: str | os.PathLike) -> GapModel:
    """Read a ``gap_fit`` XML file (and its sparseX files) into a :class:`GapModel`.

    Refuses what this predictor does not implement (core potentials, permutations,
    covariance types other than ard_se and dot_product) with one clear line, so a result
    is never silently wrong.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "gap.xml"
    if not p.is_file():
        raise MlpdesignError(f"{p}: no such GAP model file")
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as e:
        raise MlpdesignError(f"{p}: not a GAP XML file ({e})") from None
    data = root.find(".//GAP_params/GAP_data")
    sparse = root.find(".//GAP_params/gpSparse")
    if data is None or sparse is None:
        raise MlpdesignError(f"{p}: not a GAP XML file (no GAP_params/GAP_data/gpSparse)")
    if data.get("do_core", "F").upper().startswith("T"):
        raise MlpdesignError(
            f"{p}: GAP models with a core potential are not supported by the numpy predictor"
        )
    e0 = {int(el.get("Z")): float(el.get("value")) for el in data.iter("e0")}
    terms = []
    for i, gc in enumerate(sparse.iter("gpCoordinates")):
        where = f"{p}: gpCoordinates {i + 1}"
        ctype = _COVARIANCE.get(gc.get("covariance_type", ""))
        if ctype is None:
            raise MlpdesignError(
                f"{where}: covariance_type {gc.get('covariance_type')} is not "
                "supported (only ard_se and dot_product)"
            )
        if int(gc.get("n_permutations", "1")) != 1:
            raise MlpdesignError(f"{where}: descriptors with permutations are not supported")
        if _num(gc, "signal_mean", where) != 0.0:
            raise MlpdesignError(f"{where}: a non-zero signal_mean (f0) is not supported")
        dim = int(_num(gc, "dimensions", where))
        n = int(_num(gc, "n_sparseX", where))
        pts = gc.findall("sparseX")
        if len(pts) != n:
            raise MlpdesignError(f"{where}: {len(pts)} sparse points listed, n_sparseX={n}")
        alpha = np.array([_num(s, "alpha", where) for s in pts])
        cutoff = np.array([float(s.get("sparseCutoff", "1")) for s in pts])
        fname = gc.get("sparseX_filename")
        if not fname:
            raise MlpdesignError(f"{where}: sparse points stored inline are not supported")
        xfile = p.parent / fname
        if not xfile.is_file():
            raise MlpdesignError(f"{xfile}: sparse-point file of {p.name} is missing")
        xs = np.loadtxt(xfile, dtype=float, ndmin=1)
        if xs.size != n * dim:
            raise MlpdesignError(f"{xfile}: {xs.size} numbers, expected {n} x {dim}")
        desc_el = gc.find("descriptor")
        if desc_el is None or not (desc_el.text or "").strip():
            raise MlpdesignError(f"{where}: no descriptor string")
        term = SparseTerm(
            descriptor=" ".join(desc_el.text.split()),
            covariance=ctype,
            delta=_num(gc, "signal_variance", where),
            sparse=xs.reshape(n, dim),
            alpha=alpha,
            sparse_cutoff=cutoff,
        )
        if ctype == "ard_se":
            th = gc.find("theta")
            if th is None or not (th.text or "").strip():
                raise MlpdesignError(f"{where}: ard_se without theta")
            theta = np.array(th.text.split(), dtype=float)
            term.theta = np.broadcast_to(theta, (dim,)).copy() if theta.size == 1 else theta
            if term.theta.size != dim or np.any(term.theta <= 0):
                raise MlpdesignError(f"{where}: bad theta for dimension {dim}")
        else:
            term.zeta = _num(gc, "zeta", where)
        terms.append(term)
    if not terms:
        raise MlpdesignError(f"{p}: the model has no sparse terms")
    return GapModel(path=p, e0=e0, terms=terms)


_TOKEN = re.compile(r'([A-Za-z_]\w*)=(\{[^}]*\}|"[^"]*"|\S+)')


def _plain_distance_2b(descriptor: str) -> tuple[float, float, int, int] | None:
    """(cutoff, transition width, Z1, Z2) when ``descriptor`` is a plain distance_2b.

    Such a descriptor is just the pair distances within the cutoff (of the pairs of
    elements Z1 and Z2, both orders; 0, 0: any pair) with QUIP's cutoff weights, which a
    neighbour list gives ~50x faster than quippy's per-pair unpacking
    (:func:`mlpdesign.describe.runner.distance_2b_direct`).
    """
    name = descriptor.split(None, 1)[0]
    if name != "distance_2b":
        return None
    keys = {k: v for k, v in _TOKEN.findall(descriptor) if k not in KERNEL_KEYS}
    if set(keys) - {"cutoff", "cutoff_transition_width", "Z1", "Z2"} or "cutoff" not in keys:
        return None
    try:
        z1, z2 = int(keys.get("Z1", 0)), int(keys.get("Z2", 0))
        cutoff = float(keys["cutoff"])
        width = float(keys.get("cutoff_transition_width", 0.5))
    except ValueError:
        return None
    if (z1 == 0) != (z2 == 0):
        return None
    return cutoff, width, z1, z2


class DescriptorCalculator:
    """Descriptors for a set of descriptor strings, each initialised once.

    quippy computes them, except a plain ``distance_2b`` (any pair, or the pairs of two
    given elements), which goes through the neighbour-list path of :mod:`mlpdesign.describe.runner`
    (``fast=False`` sends everything through quippy: the reference path).
    """

    def __init__(self, strings: Iterable[str], fast: bool = True) -> None:
        from quippy.descriptors import Descriptor

        self.strings = list(dict.fromkeys(strings))
        self._desc = {}
        for s in self.strings:
            try:
                self._desc[s] = Descriptor(s)
            except RuntimeError as e:
                raise MlpdesignError(
                    f"quippy rejects descriptor {s!r}: {str(e).strip().splitlines()[-1][:200]}"
                ) from None
        self._fast = {s: _plain_distance_2b(s) for s in self.strings} if fast else {}

    def __call__(self, atoms: Atoms) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for s, d in self._desc.items():
            plain = self._fast.get(s)
            if plain is not None:
                out[s] = distance_2b_direct(atoms, *plain)
                continue
            r = d.calc(atoms, grad=False)
            if "covariance_cutoff" not in r:  # no descriptor in this configuration
                out[s] = (np.zeros((0, int(d.dimensions()))), np.zeros(0))
                continue
            cut = np.asarray(r["covariance_cutoff"], dtype=float).reshape(-1)
            rows = np.asarray(r["data"], dtype=float).reshape(len(cut), -1)
            keep = np.asarray(r.get("has_data", np.ones(len(cut), bool)), bool).reshape(-1)
            out[s] = (rows[keep], cut[keep]) if not keep.all() else (rows, cut)
        return out


def predict_energies(
    models: Sequence[GapModel], frames: Sequence[Atoms], progress=None, fast: bool = True
) -> np.ndarray:
    """Total energies, shape (n_models, n_frames); descriptors computed once per frame.

    Descriptors are gathered for all frames and each model's kernel is applied to the
    stacked rows in one pass per term (a few large matrix products instead of many small).
    """
    if not models:
        return np.empty((0, len(frames)))
    calc = DescriptorCalculator((s for m in models for s in m.descriptors), fast=fast)
    rows: dict[str, list[np.ndarray]] = {s: [] for s in calc.strings}
    cuts: dict[str, list[np.ndarray]] = {s: [] for s in calc.strings}
    owner: dict[str, list[np.ndarray]] = {s: [] for s in calc.strings}
    for j, a in enumerate(frames):
        for s, (r, c) in calc(a).items():
            rows[s].append(r)
            cuts[s].append(c)
            owner[s].append(np.full(len(c), j, dtype=np.int64))
        if progress is not None:
            progress.update(1)
    stacked = {}
    for s in calc.strings:
        dims = {r.shape[1] for r in rows[s] if len(r)}
        dim = dims.pop() if dims else 1
        stacked[s] = (
            np.concatenate([r.reshape(-1, dim) for r in rows[s]])
            if rows[s]
            else np.empty((0, dim)),
            np.concatenate(cuts[s]) if cuts[s] else np.empty(0),
            np.concatenate(owner[s]) if owner[s] else np.empty(0, np.int64),
        )
    out = np.zeros((len(models), len(frames)))
    for m_i, m in enumerate(models):
        out[m_i] = [sum(m.e0.get(int(z), 0.0) for z in a.numbers) for a in frames]
        for t in m.terms:
            r, c, o = stacked[t.descriptor]
            if len(r):
                if r.shape[1] != t.sparse.shape[1]:
                    raise MlpdesignError(
                        f"{m.path}: descriptor {t.descriptor!r} has dimension "
                        f"{r.shape[1]} but the model's sparse points have "
                        f"{t.sparse.shape[1]}"
                    )
                out[m_i] += np.bincount(o, weights=c * t.local_energies(r), minlength=len(frames))
    return out
