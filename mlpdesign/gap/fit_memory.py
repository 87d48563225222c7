"""gap_fit's peak memory, estimated before a fit starts, and the check against what is free.

gap_fit holds, per descriptor term of the GAP string, every descriptor vector of the training
set (``d`` numbers per instance: an atom for SOAP, an ordered pair for ``distance_2b``) and,
for configurations with forces or virials, its gradient with respect to the centre and every
neighbour inside the cut-off (``3 d`` numbers each; more again where a virial is fitted);
then the covariance of the sparse points with every target (energies, force and virial
components). The estimate is

    peak = BASE + GRAD * 24 Σ_t d_t G_t + VIRIAL * 24 Σ_t d_t V_t + X * 8 Σ_t d_t n_t
           + COV * 8 M n_obs

(``G_t``: centres plus neighbours over the instances of term t in configurations with
forces or virials, ``V_t`` the same over configurations with a virial, ``n_t`` its
instances, ``M`` the sparse points of every term, ``n_obs`` the targets). The gradients
dominate: a 96-atom Zr cell at the paper's SOAP holds ~0.8 MB of them per atom, an alloy
SOAP over two species ~4x that. The factors come from real gap_fit runs measured by
``benchmarks/fit_memory.py`` and are recorded with those runs in
``benchmarks/results/fit_memory.json`` (a test checks the two agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import DescriptorSpec, soap_species

#: Calibration of :func:`estimate` (bytes, and factors on the counted bytes): see the module
#: docstring; benchmarks/results/fit_memory.json holds the runs they were fitted to.
CALIBRATION = {"base": 140 << 20, "grad": 1.15, "virial": 2.0, "x": 2.0, "cov": 1.0}
#: Descriptors whose instances are pairs (gradient on two atoms), not atoms.
PAIR_TERMS = ("distance_2b", "co_distance_2b", "as_distance_2b")
MIB = 1 << 20


@dataclass
class TermCount:
    """What gap_fit stores for one descriptor term."""

    name: str
    dim: int
    instances: int  # descriptor vectors (atoms or ordered pairs)
    grad_points: int  # centres plus neighbours, over instances with forces or virials
    sparse: int
    virial_points: int = 0  # the same, over configurations with a virial


@dataclass
class MemoryEstimate:
    """An estimate of gap_fit's peak resident memory, with the counts it comes from."""

    bytes: int
    terms: list[TermCount] = field(default_factory=list)
    n_configs: int = 0
    n_atoms: int = 0
    n_obs: int = 0
    gradients: bool = True

    def columns(self) -> list[float]:
        """The counted bytes the :data:`CALIBRATION` factors multiply, in its order."""
        t = self.terms
        return [
            1.0,
            float(sum(24 * x.dim * x.grad_points for x in t)),
            float(sum(24 * x.dim * x.virial_points for x in t)),
            float(sum(8 * x.dim * x.instances for x in t)),
            float(8 * sum(x.sparse for x in t) * self.n_obs),
        ]

    @property
    def mib(self) -> float:
        """The estimate in MiB."""
        return self.bytes / MIB

    def summary(self) -> str:
        """``2880 atoms; soap d=606, 161 k gradient points, 500 sparse; ...``."""
        parts = [
            f"{t.name} d={t.dim}"
            + (f", {t.grad_points / 1e3:.0f}k gradient points" if self.gradients else "")
            + f", {t.sparse} sparse"
            for t in self.terms
            if t.instances
        ]
        return f"{self.n_configs} configurations, {self.n_atoms} atoms; " + "; ".join(parts)


def descriptor_dim(spec: DescriptorSpec) -> int:
    """The descriptor's dimension from quippy (in a child process for other types than
    soap and distance_2b, which QUIP may abort on)."""
    if spec.dim:
        return int(spec.dim)
    if spec.name in ("soap", "distance_2b"):
        from quippy.descriptors import Descriptor

        return int(Descriptor(spec.descriptor).dimensions())
    from mlpdesign.gap.strings import probe_descriptor

    return probe_descriptor(spec.descriptor)


def _cutoff(spec: DescriptorSpec) -> float:
    try:
        return float(spec.params.get("cutoff", 0.0))
    except (TypeError, ValueError):
        return 0.0


def _neighbours(a, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ordered pairs (i, j, distance) of one frame within ``cutoff`` (periodic images too)."""
    from matscipy.neighbours import neighbour_list

    from mlpdesign.io.frames import open_cell

    pbc = np.asarray(a.pbc, dtype=bool)
    cell = open_cell(np.asarray(a.cell, dtype=float), pbc, "frame")
    return neighbour_list(
        "ijd",
        positions=np.asarray(a.positions, dtype=float),
        cell=cell,
        pbc=pbc,
        cell_origin=np.zeros(3),
        cutoff=float(cutoff),
    )


def _count_frame(a, specs: Sequence[DescriptorSpec], cut: list[float]) -> np.ndarray:
    """One frame's (instances, gradient points) per term (terms x 2)."""
    out = np.zeros((len(specs), 2), dtype=np.int64)
    z = np.asarray(a.numbers)
    big = max(cut) if cut else 0.0
    i, j, d = _neighbours(a, big) if big > 0 else (np.zeros(0, int),) * 2 + (np.zeros(0),)
    for t, (s, rc) in enumerate(zip(specs, cut, strict=True)):
        near = d < rc
        if s.name in PAIR_TERMS:
            p = s.params
            z1, z2 = int(p.get("Z1", 0) or 0), int(p.get("Z2", 0) or 0)
            keep = near
            if z1 and z2:
                zi, zj = z[i], z[j]
                keep = near & (((zi == z1) & (zj == z2)) | ((zi == z2) & (zj == z1)))
            n = int(np.count_nonzero(keep))
            out[t] = (n, 2 * n)
            continue
        centres = soap_species(s) if s.name == "soap" else None
        mask = np.ones(len(z), bool) if centres is None else np.isin(z, centres)
        per = np.bincount(i[near], minlength=len(z))
        out[t] = (int(mask.sum()), int((per[mask] + 1).sum()))
    return out


def _flags(value, frames: Sequence, key: str, where: str) -> np.ndarray:
    """Per frame: has it ``key`` (``value`` None: looked up in ``where``), else ``value``."""
    if value is None:
        return np.array([key in getattr(a, where) for a in frames], dtype=bool)
    return np.full(len(frames), bool(value))


def estimate(
    specs: Sequence[DescriptorSpec],
    frames: Sequence,
    forces: bool | None = None,
    virials: bool | None = None,
) -> MemoryEstimate:
    """gap_fit's peak memory for ``frames`` (ASE Atoms) with the fit-time ``specs``
    (n_sparse filled in, :func:`mlpdesign.gap.fit.fit_specs`). ``forces``/``virials``:
    whether the frames carry them (None: each frame's ``dft_forces``/``dft_virial``);
    gap_fit stores descriptor gradients for those configurations."""
    from mlpdesign.gap.label import FORCES_KEY, VIRIAL_KEY

    specs = list(specs)
    cut = [_cutoff(s) for s in specs]
    has_f = _flags(forces, frames, FORCES_KEY, "arrays")
    has_v = _flags(virials, frames, VIRIAL_KEY, "info")
    counts = np.zeros((len(specs), 3), dtype=np.int64)  # instances, grad, virial grad
    n_obs = 0
    for a, f, v in zip(frames, has_f, has_v, strict=True):
        c = _count_frame(a, specs, cut)
        counts[:, 0] += c[:, 0]
        counts[:, 1] += c[:, 1] if (f or v) else 0
        counts[:, 2] += c[:, 1] if v else 0
        n_obs += 1 + (3 * len(a) if f else 0) + (9 if v else 0)
    terms = [
        TermCount(
            s.name,
            descriptor_dim(s),
            int(c[0]),
            int(c[1]),
            int(s.kernel.get("n_sparse", 0)),
            int(c[2]),
        )
        for s, c in zip(specs, counts, strict=True)
    ]
    n_atoms = int(sum(len(a) for a in frames))
    est = MemoryEstimate(0, terms, len(frames), n_atoms, n_obs, bool(has_f.any() or has_v.any()))
    factors = [CALIBRATION[k] for k in ("base", "grad", "virial", "x", "cov")]
    est.bytes = int(sum(f * c for f, c in zip(factors, est.columns(), strict=True)))
    return est


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> tuple[int | None, str]:
    """Bytes a new process may use now, and where that comes from: MemAvailable of
    /proc/meminfo, or the room left under this process's cgroup limit (a SLURM job's
    memory) when that is smaller. ``(None, "unknown")`` where neither can be read."""
    found: list[tuple[int, str]] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        lim, used = _read_int(limit), _read_int(usage)
        if lim is not None and used is not None and lim < 1 << 60:
            found.append((max(0, lim - used), "the cgroup's memory limit"))
    if not found:
        return None, "unknown"
    return min(found)


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / MIB:.0f} MiB"


def check_memory(
    need: int, limit: int | None = None, ignore: bool = False, what: str = "gap_fit"
) -> str:
    """One line saying what ``what`` needs against the limit (``limit`` bytes, else what is
    available now); raises :class:`MlpdesignError` when it would not fit, unless ``ignore``."""
    if limit is not None:
        room, have = limit, f"the limit is {_gib(limit)} (--memory-limit)"
    else:
        room, source = available_memory()
        have = f"{_gib(room)} is available ({source})" if room is not None else ""
    if room is None:
        return f"{what} needs about {_gib(need)} (estimate; free memory unknown)"
    line = f"{what} needs about {_gib(need)} (estimate); {have}"
    if need > room and not ignore:
        raise MlpdesignError(
            f"{what} would need about {_gib(need)} (estimate) but {have}; fit fewer or "
            "smaller configurations, fewer sparse points or a smaller descriptor, or run "
            "anyway with --ignore-memory"
        )
    return line + (" - running anyway (--ignore-memory)" if need > room else "")


class HighWater:
    """The peak resident memory of a running child process and its descendants (the sum of
    their ``VmHWM`` in /proc), polled by a thread until :meth:`stop`.

    ``wait4``'s ``ru_maxrss`` is not it: Linux carries the parent's peak into a child over
    ``fork``/``exec``, so a fit started from a 3 GB Python process reports 3 GB whatever
    gap_fit used. ``VmHWM`` belongs to each process's own address space; descendants count
    because a ``gap_fit`` on PATH may be a wrapper (quippy-ase's is a Python script that
    starts the Fortran binary). Polled every ``interval`` seconds, it misses only a peak in
    a process's last interval.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import threading

        self.pid = pid
        self.seen: dict[int, int] = {}  # pid -> its VmHWM (KiB), kept after it exits
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            for task in Path(f"/proc/{p}/task").glob("*/children"):
                try:
                    todo += [int(c) for c in task.read_text().split()]
                except (OSError, ValueError):
                    pass
        return out

    def _read(self) -> None:
        for p in self._tree():
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.seen[p] = max(self.seen.get(p, 0), int(line.split()[1]))
                        break
            except (OSError, ValueError, IndexError):
                pass

    def _run(self) -> None:
        while True:
            self._read()
            if self._stop.wait(self._interval):
                return

    def stop(self) -> float | None:
        """Stop polling; the peak in MiB, or None when /proc could not be read."""
        self._stop.set()
        self._thread.join()
        self._read()
        return sum(self.seen.values()) / 1024.0 if self.seen else None
