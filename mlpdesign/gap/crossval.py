"""The paper's cross-validation (section 4, figs. 5-6): one GAP per named set, every model
tested on every set.

Each model is judged by its *worst off-sample* 0.99 quantile of |dE| per atom: the highest,
over the sets it was not trained on, of the 0.99 quantile of the absolute energy error per
atom. An optimised design should have a lower worst case than a random one.

Output folder::

    cv/models/<NAME>/   one fit per set (reused when its inputs are unchanged)
    cv/matrix.json      RMSE, std and 0.99 quantile of |dE|/atom per model x set (eV/atom),
                        each model's worst off-sample 0.99 quantile, fit costs
    cv/predictions.json reference and predicted energies per atom of every config
    cv/parity.png       grid of parity plots (rows: models, columns: test sets)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.fit import (
    FitOptions,
    FitResult,
    check_species,
    fit,
    fit_estimate,
    fit_specs,
    kept_fit,
)
from mlpdesign.gap.fit_memory import check_memory
from mlpdesign.gap.label import ENERGY_KEY, read_labelled
from mlpdesign.gap.model import load_gap, predict_energies
from mlpdesign.gap.strings import render_gap
from mlpdesign.io.atomic import atomic_path, require_file
from mlpdesign.io.lock import holding

QUANTILE = 0.99
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
MARKER = "crossval.json"
#: the files crossval writes in its output folder (beside models/)
OWN_FILES = (MARKER, "matrix.json", "predictions.json", "parity.png")


def parse_sets(items: Sequence[str]) -> dict[str, Path]:
    """``["OPT1=opt1.xyz", ...]`` -> ordered {name: path}; names unique and file-name safe."""
    sets: dict[str, Path] = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            raise MlpdesignError(f"expected NAME=FILE (e.g. OPT1=opt1.xyz), got {item!r}")
        if not _NAME.fullmatch(name):
            raise MlpdesignError(f"set name {name!r}: use letters, digits, '_', '.', '+', '-'")
        if name in sets:
            raise MlpdesignError(f"set name {name} given twice")
        sets[name] = require_file(path, f"labelled set ({name})")
    if not sets:
        raise MlpdesignError("give at least one NAME=FILE labelled set")
    return sets


def same_data_warnings(sets: dict[str, Path]) -> list[str]:
    """A warning for each set holding the same bytes as an earlier one: a model tested on
    its twin is tested on its own training data, so its 'off-sample' numbers are on-sample."""
    from mlpdesign.io.atomic import file_sha256

    seen: dict[str, str] = {}
    out = []
    for name, path in sets.items():
        first = seen.setdefault(file_sha256(path), name)
        if first != name:
            same = "the same file" if Path(sets[first]).resolve() == path.resolve() else "equal"
            out.append(
                f"sets {first} and {name} are {same} ({path}): their off-sample numbers "
                "are on-sample"
            )
    return out


def error_stats(err_per_atom: np.ndarray) -> dict[str, float]:
    """Statistics of the energy error per atom (eV/atom): rmse, std and q99 of |dE|, ..."""
    e = np.asarray(err_per_atom, dtype=float)
    a = np.abs(e)
    return {
        "n": int(e.size),
        "rmse": float(np.sqrt(np.mean(e * e))),
        "mae": float(a.mean()),
        "std": float(a.std()),
        "q99": float(np.quantile(a, QUANTILE)),
        "max": float(a.max()),
        "mean": float(e.mean()),
    }


def worst_off_sample(
    matrix: dict[str, dict[str, dict]], key: str = "q99"
) -> dict[str, dict | None]:
    """Per model: the highest ``key`` over the sets other than its own, and which set."""
    out: dict[str, dict | None] = {}
    for m, row in matrix.items():
        off = [(v[key], s) for s, v in row.items() if s != m]
        if not off:
            out[m] = None
            continue
        val, s = max(off)
        out[m] = {"value": val, "set": s}
    return out


@dataclass
class CrossvalResult:
    """Where the outputs are and the matrix itself."""

    folder: Path
    matrix: dict
    fits: dict


def _check_output(out: Path, force: bool) -> None:
    """Like every command's output: an existing non-empty folder only with ``force``."""
    if out.exists():
        if not out.is_dir():
            raise MlpdesignError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not force:
            what = "a crossval folder" if (out / MARKER).is_file() else "not empty"
            raise MlpdesignError(
                f"{out} exists ({what}); use --force to update it (unchanged fits are reused)"
            )
        for name in OWN_FILES:  # checked now, not after the fits
            if (out / name).is_dir():
                raise MlpdesignError(
                    f"{out / name} is a folder; --force replaces files, never a folder"
                )
    elif not out.parent.is_dir():
        raise MlpdesignError(f"cannot write {out}: folder {out.parent} does not exist")


def check_fits_memory(
    sets: dict[str, Path],
    options: FitOptions,
    jobs: int,
    limit: int | None,
    ignore: bool,
    echo: Callable[[str], None] | None = None,
) -> None:
    """Refuse fits whose ``jobs`` largest gap_fit memory estimates (the fits that run side
    by side) exceed ``limit`` (default: what is free), unless ``ignore``; ``echo`` the
    estimate."""
    if not sets:
        return
    need = {name: fit_estimate(path, options) for name, path in sets.items()}
    top = sorted(need.values(), key=lambda e: e.bytes, reverse=True)[: max(1, jobs)]
    what = "gap_fit" if len(top) == 1 else f"{len(top)} gap_fit runs side by side"
    line = check_memory(sum(e.bytes for e in top), limit, ignore, what)
    if echo:
        echo(line)


def fit_all(
    sets: dict[str, Path],
    mdir: Path,
    options: FitOptions,
    sizes: dict[str, int],
    reuse: bool = True,
    force: bool = False,
    echo: Callable[[str], None] | None = None,
    jobs: int = 1,
) -> dict[str, dict]:
    """One fit per set under ``mdir`` (reused where inputs are unchanged); their summaries."""

    def one(name: str) -> tuple[str, FitResult]:
        if echo:
            echo(f"model {name}: {sets[name]} ({sizes[name]} configurations)")
        # memory: checked for all fits at once (check_fits_memory) before any runs
        res = fit(sets[name], mdir / name, options, force=force, reuse=reuse, ignore_memory=True)
        if echo:
            how = "reused (inputs unchanged)" if res.reused else f"fitted in {res.wall_s:.1f} s"
            echo(f"model {name}: {how}")
        return name, res

    # each fit is a gap_fit process (one thread): ``jobs`` of them run side by side
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = dict(pool.map(one, sets))
    return {
        name: {
            "folder": str(res.folder),
            "reused": res.reused,
            "wall_s": round(res.wall_s, 3),
            "peak_rss_mib": res.peak_rss_mib,
            "n_configs": res.n_configs,
        }
        for name, res in ((n, done[n]) for n in sets)
    }


def predict_matrix(
    models: dict, data: dict[str, list], progress_factory=None
) -> tuple[dict[str, dict], dict[str, dict[str, dict]]]:
    """Every model on every set: per-set predictions and the error matrix (eV/atom)."""
    names = list(models)
    preds: dict[str, dict] = {}
    matrix: dict[str, dict[str, dict]] = {m: {} for m in names}
    for s, frames in data.items():
        bar = progress_factory(len(frames), f"predict {s}") if progress_factory else None
        e = predict_energies([models[m] for m in names], frames, bar)
        if bar is not None:
            bar.close()
        nat = np.array([len(a) for a in frames], dtype=float)
        ref = np.array([float(a.info[ENERGY_KEY]) for a in frames]) / nat
        preds[s] = {
            "candidate_id": [_int_or_none(a.info.get("candidate_id")) for a in frames],
            "n_atoms": nat.astype(int).tolist(),
            "reference": ref.tolist(),
            "predicted": {m: (e[i] / nat).tolist() for i, m in enumerate(names)},
        }
        for i, m in enumerate(names):
            matrix[m][s] = error_stats(e[i] / nat - ref)
    return preds, matrix


def crossval(
    sets: dict[str, Path],
    output: str | os.PathLike,
    options: FitOptions,
    models_dir: str | os.PathLike | None = None,
    reuse: bool = True,
    force: bool = False,
    echo: Callable[[str], None] | None = None,
    progress_factory: Callable[[int, str], object] | None = None,
    figure: bool = True,
    jobs: int = 1,
    memory_limit: int | None = None,
    ignore_memory: bool = False,
) -> CrossvalResult:
    """Fit one model per set, predict every set with every model, write the matrix.

    An existing non-empty ``output`` is refused unless ``force``; then only the files this
    command writes are replaced (matrix, predictions, figure, model files), nothing else
    in it is deleted. A model whose inputs are unchanged is reused (by its input hash,
    under ``output``/models or ``models_dir``) unless ``reuse`` is False; ``jobs`` fits
    run at once. The output folder is locked for the whole run. Before any fit, the
    ``jobs`` largest estimates of gap_fit's memory among the fits to run must fit in
    ``memory_limit`` bytes (default: what is free), unless ``ignore_memory``.
    """
    out = Path(output)
    memory = (memory_limit, ignore_memory)
    with holding(out):
        _check_output(out, force)
        return _crossval(
            sets,
            out,
            options,
            models_dir,
            reuse,
            force,
            echo,
            progress_factory,
            figure,
            jobs,
            memory,
        )


def _crossval(
    sets: dict[str, Path],
    out: Path,
    options: FitOptions,
    models_dir: str | os.PathLike | None,
    reuse: bool,
    force: bool,
    echo: Callable[[str], None] | None,
    progress_factory: Callable[[int, str], object] | None,
    figure: bool,
    jobs: int,
    memory: tuple[int | None, bool] = (None, False),
) -> CrossvalResult:
    """:func:`crossval` once its output is checked and locked."""
    mdir = Path(models_dir) if models_dir is not None else out / "models"
    data = {name: read_labelled(path, keys=tuple(options.keys)) for name, path in sets.items()}
    specs = fit_specs(options)
    for name, frames in data.items():
        check_species(specs, frames, f"set {name} ({sets[name]})")
    to_fit = [n for n in sets if not (reuse and kept_fit(mdir / n, sets[n], options))]
    if not force:  # a model folder that would be refitted: refused before any fit runs
        for name in to_fit:
            if (mdir / name).exists():
                raise MlpdesignError(
                    f"{mdir / name} holds a model of other inputs"
                    f"{'' if reuse else ' (--no-reuse)'}; use --force to refit it"
                )
    check_fits_memory({n: sets[n] for n in to_fit}, options, jobs, *memory, echo)
    out.mkdir(exist_ok=True)
    (out / MARKER).write_text(
        json.dumps({"format": "mlpdesign-crossval", "format_version": 1}) + "\n"
    )
    mdir.mkdir(parents=True, exist_ok=True)
    sizes = {name: len(frames) for name, frames in data.items()}
    fits = fit_all(sets, mdir, options, sizes, reuse, force, echo, jobs)
    names = list(sets)
    models = {name: load_gap(mdir / name / "gap.xml") for name in names}
    preds, matrix = predict_matrix(models, data, progress_factory)
    result = {
        "format": "mlpdesign-crossval-matrix",
        "format_version": 1,
        "units": "eV/atom",
        "quantile": QUANTILE,
        "statistic": "dE = predicted - reference energy per atom; rmse of dE; std, "
        "q99, mae, max of |dE|",
        "sets": {s: str(sets[s]) for s in names},
        "models": names,
        "matrix": matrix,
        "worst_off_sample_q99": worst_off_sample(matrix),
        "fits": fits,
        "gap": render_gap(specs),
    }
    with atomic_path(out / "matrix.json", force=True) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    with atomic_path(out / "predictions.json", force=True) as tmp:
        tmp.write_text(json.dumps(preds) + "\n")
    if figure:
        with atomic_path(out / "parity.png", force=True) as tmp:
            parity_grid(preds, matrix, names, tmp)
    return CrossvalResult(folder=out, matrix=result, fits=fits)


def _residual_panel(ax, ref, pred, st, on_sample: bool, ylim) -> None:
    """One panel: dE = predicted - reference (meV/atom) against the reference energy,
    relative to the set's lowest (meV/atom), so no axis carries long eV labels."""
    from matplotlib.ticker import MaxNLocator

    x = (ref - ref.min()) * 1e3
    de = (pred - ref) * 1e3
    ax.axhline(0.0, color="0.5", lw=0.6)
    q = st["q99"] * 1e3
    ax.axhspan(-q, q, color="0.85" if on_sample else "#fde0c5", lw=0, zorder=0)
    ax.scatter(x, de, s=4, color="0.45" if on_sample else "C0", rasterized=True, lw=0)
    ax.set_ylim(*ylim)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.tick_params(labelsize=6)
    where = "on-sample" if on_sample else "off-sample"
    ax.set_title(
        f"{where}: std {st['std'] * 1e3:.2f}, q99 {q:.2f}",
        fontsize=7,
        color="0.4" if on_sample else "k",
        style="italic" if on_sample else "normal",
    )


def parity_grid(preds: dict, matrix: dict, names: Sequence[str], path: Path) -> None:
    """Fig. 6 of the paper as residuals: rows = models, columns = test sets; each panel the
    error dE = GAP - reference (meV/atom) against the reference energy, the band its 0.99
    quantile of |dE|; on-sample panels (a model on its own set) grey, off-sample coloured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    errs = [
        (np.array(preds[s]["predicted"][m]) - np.array(preds[s]["reference"])) * 1e3
        for s in names
        for m in names
    ]
    top = max(float(np.max(np.abs(np.concatenate(errs)))), 1e-3) * 1.08
    fig, axes = plt.subplots(
        n, n, figsize=(2.7 * n + 0.8, 2.4 * n + 0.9), squeeze=False, constrained_layout=True
    )
    for i, m in enumerate(names):
        for j, s in enumerate(names):
            ax = axes[i][j]
            ref = np.array(preds[s]["reference"])
            _residual_panel(
                ax, ref, np.array(preds[s]["predicted"][m]), matrix[m][s], m == s, (-top, top)
            )
            if i == n - 1:
                ax.set_xlabel(f"set {s}: reference − lowest (meV/atom)", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"model {m}: dE (meV/atom)", fontsize=7)
    fig.suptitle(
        "Cross-validation: energy error dE = GAP − reference per atom; rows = models, "
        "columns = test sets\nband: 0.99 quantile of |dE|; grey italic = on-sample "
        "(the model's own training set), black = off-sample",
        fontsize=8,
    )
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def _int_or_none(v) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None
