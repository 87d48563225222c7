"""Fit a GAP with quippy-ase's ``gap_fit`` on a labelled set, with the store's gap string.

The model folder holds ``gap.xml`` and its sparse-point files, ``train.xyz`` (the exact
labelled set fitted), ``gap_fit.log`` (gap_fit's own output, streamed while it runs) and
``fit.json`` (the command line, wall time, peak memory and a hash of every input, so that
``crossval`` can reuse a folder whose inputs have not changed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.fit_memory import MemoryEstimate, check_memory, estimate
from mlpdesign.gap.label import GAP_FIT_KEY_ARGS, labelled_set, write_labelled
from mlpdesign.gap.strings import (
    DEFAULT_GAP,
    DescriptorSpec,
    covered_species,
    gap_fit_argument,
    parse_gap,
    render_gap,
)
from mlpdesign.io.atomic import atomic_dir, atomic_path, check_output_dir, file_sha256
from mlpdesign.io.lock import holding
from mlpdesign.io.store import open_store

#: Sparse points per descriptor when neither the options nor the gap string set them
#: (paper: 500 for SOAP; many-body counts are capped at the atoms of the training set).
DEFAULT_N_SPARSE = {"distance_2b": 20, "soap": 500}
DEFAULT_SPARSE_METHOD = {"distance_2b": "uniform", "soap": "cur_points"}
#: Descriptors whose value is one distance (their sparse points are a grid, never capped).
PAIR_DESCRIPTORS = ("distance_2b", "co_distance_2b", "as_distance_2b")
#: default_sigma of gap_fit: energy (eV/atom), force (eV/A), virial (eV/atom), hessian.
DEFAULT_SIGMA = (0.002, 0.05, 0.05, 0.0)


@dataclass
class FitOptions:
    """Everything besides the data that decides a fit (all of it enters the input hash)."""

    gap: str = DEFAULT_GAP
    sigma: tuple[float, float, float, float] = DEFAULT_SIGMA
    n_sparse: dict[str, int] = field(default_factory=dict)  # by descriptor name or index "1"
    sparse_method: dict[str, str] = field(default_factory=dict)
    e0: float | None = None  # None: e0_method=average
    seed: int = 1
    sparse_jitter: float = 1e-8
    extra: tuple[str, ...] = ()  # further key=value arguments for gap_fit
    #: label keys (energy, forces, virial) of the labelled set; None: dft_*, else ASE's
    keys: tuple[str | None, str | None, str | None] = (None, None, None)


@dataclass
class FitResult:
    """What a fit produced and what it cost."""

    folder: Path
    wall_s: float
    peak_rss_mib: float | None
    n_configs: int
    reused: bool = False
    command: list[str] = field(default_factory=list)


def gap_fit_binary() -> str:
    """The ``gap_fit`` of quippy-ase: beside the running Python first, then on PATH."""
    here = Path(sys.executable).parent / "gap_fit"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("gap_fit")
    if not found:
        raise MlpdesignError(
            "gap_fit not found: install quippy-ase (pip install quippy-ase), which ships it"
        )
    return found


def _key_of(spec: DescriptorSpec, index: int, table: dict) -> str | None:
    for k in (str(index + 1), spec.name):
        if k in table:
            return k
    return None


def fit_specs(options: FitOptions, n_atoms: int | None = None) -> list[DescriptorSpec]:
    """The gap string's specs with sparse settings filled in (options > string > defaults).

    With ``n_atoms`` (atoms in the training set), the sparse points of many-body
    descriptors are capped at it: CUR cannot pick more points than there are.
    """
    specs = parse_gap(options.gap)
    known = {s.name for s in specs} | {str(i + 1) for i in range(len(specs))}
    for table, what in (
        (options.n_sparse, "--n-sparse"),
        (options.sparse_method, "--sparse-method"),
    ):
        for k in table:
            if k not in known:
                raise MlpdesignError(
                    f"{what} {k}=...: the gap string has no descriptor {k!r} "
                    f"(it has {', '.join(s.name for s in specs)})"
                )
    for i, s in enumerate(specs):
        k = _key_of(s, i, options.n_sparse)
        if k is not None:
            if int(options.n_sparse[k]) < 1:
                raise MlpdesignError(f"--n-sparse {k} must be at least 1")
            s.kernel["n_sparse"] = int(options.n_sparse[k])
        elif "n_sparse" not in s.kernel:
            s.kernel["n_sparse"] = DEFAULT_N_SPARSE.get(s.name, 200)
        k = _key_of(s, i, options.sparse_method)
        if k is not None:
            s.kernel["sparse_method"] = options.sparse_method[k]
        elif "sparse_method" not in s.kernel:
            s.kernel["sparse_method"] = DEFAULT_SPARSE_METHOD.get(s.name, "cur_points")
        if n_atoms is not None and s.name not in PAIR_DESCRIPTORS:
            s.kernel["n_sparse"] = max(1, min(int(s.kernel["n_sparse"]), int(n_atoms)))
    return parse_gap(render_gap(specs))  # validates what the options added


def gap_fit_args(
    specs: Sequence[DescriptorSpec],
    options: FitOptions,
    at_file: str = "train.xyz",
    gp_file: str = "gap.xml",
) -> list[str]:
    """The ``gap_fit`` argument list (without the program) for these specs and options.

    ``mlpdesign gap-command`` prints the same arguments (it calls this function).
    """
    sig = " ".join(repr(float(x)) for x in options.sigma)
    args = [f"at_file={at_file}", gap_fit_argument(list(specs))]
    args.append("e0_method=average" if options.e0 is None else f"e0={float(options.e0)!r}")
    args += [
        f"default_sigma={{{sig}}}",
        *GAP_FIT_KEY_ARGS,
        f"sparse_jitter={options.sparse_jitter!r}",
        f"rnd_seed={int(options.seed)}",
        "do_copy_at_file=F",
        "sparse_separate_file=T",
        f"gp_file={gp_file}",
        *options.extra,
    ]
    return args


def check_species(specs: Sequence[DescriptorSpec], frames, where: str) -> None:
    """Refuse a set whose elements the SOAP species lists do not cover.

    gap_fit would "succeed" and fit a model that only knows e0 for the missing species.
    """
    have = sorted({int(z) for a in frames for z in set(a.numbers.tolist())})
    z = covered_species(list(specs))
    if z is not None and set(have) - z:
        raise MlpdesignError(
            f"{where} contains Z={have} but the gap string's soap has "
            f"Z={sorted(z)}; pass a --gap (or store) for these species"
        )


def inputs_hash(labelled: str | os.PathLike, args: Sequence[str]) -> str:
    """SHA-256 of the labelled file's bytes, the gap_fit arguments and the quippy version."""
    h = hashlib.sha256()
    h.update(file_sha256(labelled).encode())
    for a in args:
        h.update(b"\0" + a.encode())
    h.update(b"\0quippy-ase " + _quippy_version().encode())
    return h.hexdigest()


def _quippy_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("quippy-ase")
    except PackageNotFoundError:
        return "unknown"


def _gap_fit_error(log_text: str, code: int) -> str:
    """gap_fit's own message: its SYSTEM ABORT line with the line before it, else its last.

    QUIP often prints the cause (``param_read_line: unknown key x``) just before a generic
    ``SYSTEM ABORT``, so both are kept.
    """
    noise = ("STOP", "libAtoms::", "TIMER", "===")
    lines = [
        ln.strip()
        for ln in log_text.splitlines()
        if ln.strip() and not ln.strip().startswith(noise)
    ]
    if not lines:
        return f"gap_fit ended with code {code} and no output"
    aborts = [i for i, ln in enumerate(lines) if "SYSTEM ABORT" in ln]
    if not aborts:
        return lines[-1][:400]
    i = aborts[-1]
    msg = re.sub(r"^.*SYSTEM ABORT:\s*", "", lines[i]).strip()
    if i > 0 and "SYSTEM ABORT" not in lines[i - 1]:
        msg = f"{lines[i - 1]} ({msg})"
    return msg[:400]


def run_gap_fit(
    args: Sequence[str], cwd: Path, log_path: Path, echo: Callable[[str], None] | None = None
) -> tuple[float, float | None]:
    """Run gap_fit in ``cwd``, streaming its output to ``log_path`` (and ``echo``).

    Returns (wall seconds, peak resident memory in MiB of the gap_fit process: its own
    ``VmHWM``, see :class:`mlpdesign.gap.fit_memory.HighWater`).
    Raises :class:`MlpdesignError` with gap_fit's own message when it fails.
    """
    from mlpdesign.gap.fit_memory import HighWater

    cmd = [gap_fit_binary(), *args]
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        hwm = HighWater(proc.pid)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if echo is not None:
                    echo(line.rstrip("\n"))
            peak = hwm.stop()
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            hwm.stop()
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if peak is None and usage.ru_maxrss:  # no /proc: an upper bound (includes this process's)
        peak = usage.ru_maxrss / 1024.0  # KiB on Linux
    if proc.returncode != 0:
        msg = _gap_fit_error(log_path.read_text(errors="replace"), proc.returncode)
        raise MlpdesignError(f"gap_fit failed (exit {proc.returncode}): {msg}")
    return wall, peak


def read_fit_info(folder: str | os.PathLike) -> dict | None:
    """``fit.json`` of a model folder, or None when absent or unreadable."""
    p = Path(folder) / "fit.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _prepared(labelled: Path, options: FitOptions) -> tuple[list, bool, list, list, str]:
    """The frames (converted?), descriptor specs, gap_fit arguments and input hash of a fit."""
    frames, converted = labelled_set(labelled, keys=tuple(options.keys))
    specs = fit_specs(options, n_atoms=sum(len(a) for a in frames))
    check_species(specs, frames, str(labelled))
    args = gap_fit_args(specs, options)
    keys = [] if options.keys == (None, None, None) else [f"keys={list(options.keys)}"]
    return frames, converted, specs, args, inputs_hash(labelled, args + keys)


def _same_fit(out: Path, info: dict | None, digest: str) -> bool:
    return bool(info) and info.get("inputs_sha256") == digest and (out / "gap.xml").is_file()


def memory_estimate(specs: Sequence[DescriptorSpec], frames: Sequence) -> MemoryEstimate:
    """gap_fit's estimated peak memory for these fit-time specs and labelled frames."""
    return estimate(specs, frames)  # forces, virials: each frame's own


def fit_estimate(labelled: str | os.PathLike, options: FitOptions) -> MemoryEstimate:
    """:func:`memory_estimate` of the fit :func:`fit` would run on ``labelled``."""
    frames, _, specs, _, _ = _prepared(Path(labelled), options)
    return memory_estimate(specs, frames)


def kept_fit(output: str | os.PathLike, labelled: str | os.PathLike, options: FitOptions) -> bool:
    """True when ``output`` holds a fit of exactly these inputs (what :func:`fit` reuses)."""
    out = Path(output)
    if not out.is_dir():
        return False
    return _same_fit(out, read_fit_info(out), _prepared(Path(labelled), options)[4])


def fit(
    labelled: str | os.PathLike,
    output: str | os.PathLike,
    options: FitOptions,
    force: bool = False,
    echo: Callable[[str], None] | None = None,
    reuse: bool = True,
    announce: Callable[[str], None] | None = None,
    memory_limit: int | None = None,
    ignore_memory: bool = False,
) -> FitResult:
    """Fit a GAP on ``labelled`` into the folder ``output`` (written atomically).

    With ``reuse`` (the default), an existing ``output`` whose ``fit.json`` records the
    same input hash (labelled bytes, gap_fit arguments, quippy-ase version) is kept as it
    is (no refit, no ``force`` needed); any other existing ``output`` is refused unless
    ``force``, and then refitted into it (files replaced, nothing else deleted).
    ``announce`` gets one line once the inputs are checked and gap_fit starts; ``echo``
    gets gap_fit's output line by line. When gap_fit fails, its log is kept as
    ``<output>.gap_fit.log`` beside the (not created) folder and its message is raised.

    Before gap_fit starts, its peak memory is estimated (:mod:`mlpdesign.gap.fit_memory`)
    and the fit refused when the estimate exceeds ``memory_limit`` bytes (default: the
    memory available now), unless ``ignore_memory``; ``announce`` gets the estimate.
    """
    labelled = Path(labelled)
    frames, converted, specs, args, digest = _prepared(labelled, options)
    out = Path(output)
    if reuse and out.is_dir():
        info = read_fit_info(out)
        if _same_fit(out, info, digest):
            return FitResult(
                folder=out,
                wall_s=float(info.get("wall_s", 0.0)),
                peak_rss_mib=info.get("peak_rss_mib"),
                n_configs=int(info.get("n_configs", len(frames))),
                reused=True,
                command=info.get("command", []),
            )
    if out.is_dir() and not force and read_fit_info(out) is not None:
        why = "its inputs differ" if reuse else "--no-reuse"
        raise MlpdesignError(f"{out} holds a fit ({why}); use --force to refit into it")
    with holding(out):  # the folder and its fit.json, written last, are one claim
        check_output_dir(out, force)
        need = memory_estimate(specs, frames)
        line = check_memory(need.bytes, memory_limit, ignore_memory)
        if announce is not None:
            announce(f"{line}: {need.summary()}")
        wall, peak = _fit_into(out, labelled, frames, converted, args, force, echo, announce)
        # fit.json last, after every model file is in place, and the old one removed before
        # they are: a run killed between leaves no fit.json to reuse a half-merged model by
        info = _fit_info(labelled, frames, specs, options, args, digest, wall, peak)
        info["memory_estimate_mib"] = round(need.mib, 1)
        with atomic_path(out / "fit.json", force=True) as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n")
    return FitResult(
        folder=out,
        wall_s=wall,
        peak_rss_mib=peak,
        n_configs=len(frames),
        command=["gap_fit", *args],
    )


def _fit_into(
    out: Path,
    labelled: Path,
    frames: list,
    converted: bool,
    args: Sequence[str],
    force: bool,
    echo: Callable[[str], None] | None,
    announce: Callable[[str], None] | None,
) -> tuple[float, float | None]:
    """gap_fit in a temporary folder moved into ``out`` (an existing one's old fit.json
    removed first); returns (wall seconds, peak MiB). Its log kept beside ``out`` on failure."""
    failed_log = out.with_name(out.name + ".gap_fit.log")
    with atomic_dir(out, force) as tmp:
        if converted:  # labels under ASE's (or the given) keys: written as gap_fit reads them
            write_labelled(tmp / "train.xyz", frames)
        else:
            shutil.copyfile(labelled, tmp / "train.xyz")
        if announce is not None:
            announce(
                f"running gap_fit on {len(frames)} configurations of {labelled} "
                f"(log: {out}/gap_fit.log)"
            )
        try:
            wall, peak = run_gap_fit(args, tmp, tmp / "gap_fit.log", echo)
        except MlpdesignError as e:
            shutil.copyfile(tmp / "gap_fit.log", failed_log)
            raise MlpdesignError(f"{e}; full log in {failed_log}") from None
        if not (tmp / "gap.xml").is_file():
            raise MlpdesignError("gap_fit ended without writing gap.xml; see its log")
        (out / "fit.json").unlink(missing_ok=True)  # ours, replaced once the model is in
    failed_log.unlink(missing_ok=True)
    return wall, peak


def _fit_info(labelled, frames, specs, options, args, digest, wall, peak) -> dict:
    """The ``fit.json`` record of a finished fit."""
    return {
        "format": "mlpdesign-fit",
        "format_version": 1,
        "labelled": str(labelled),
        "labelled_sha256": file_sha256(labelled),
        "n_configs": len(frames),
        "n_atoms": int(sum(len(a) for a in frames)),
        "gap": render_gap(specs),
        "options": _jsonable(asdict(options)),
        "command": ["gap_fit", *args],
        "inputs_sha256": digest,
        "wall_s": round(wall, 3),
        "peak_rss_mib": None if peak is None else round(peak, 1),
        "quippy_ase": _quippy_version(),
    }


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    return d


def parse_assignments(items: Sequence[str], what: str, cast=str) -> dict[str, object]:
    """``["soap=200", "distance_2b=20"]`` -> dict, with one clear line for bad items."""
    out: dict[str, object] = {}
    for item in items:
        for part in item.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise MlpdesignError(
                    f"{what} expects NAME=VALUE (NAME: descriptor name or position), got {part!r}"
                )
            try:
                out[key.strip()] = cast(value.strip())
            except ValueError:
                raise MlpdesignError(f"{what} {part}: bad value {value!r}") from None
    return out


def parse_sigma(text: str) -> tuple[float, float, float, float]:
    """``"0.002,0.05,0.05"`` (energy, force, virial[, hessian]) -> 4 floats for default_sigma."""
    try:
        vals = [float(x) for x in text.replace(" ", ",").split(",") if x]
    except ValueError:
        raise MlpdesignError(f"--sigma expects numbers E,F,V[,H], got {text!r}") from None
    if len(vals) == 3:
        vals.append(0.0)
    if len(vals) != 4 or any(v < 0 for v in vals) or vals[0] <= 0:
        raise MlpdesignError(
            f"--sigma expects E,F,V[,H] with E > 0 and none negative, got {text!r}"
        )
    return tuple(vals)  # type: ignore[return-value]


def gap_of(store: str | os.PathLike | None, gap: str | None) -> str:
    """The gap string: ``--gap`` text, else the store's, else the paper's default."""
    if gap is not None and store is not None:
        raise MlpdesignError("give --store or --gap, not both")
    if gap is not None:
        return gap
    if store is not None:
        with open_store(store) as st:
            return st.gap
    return DEFAULT_GAP
