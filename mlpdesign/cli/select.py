"""``mlpdesign select``: greedy conditional max-min design on the GAP kernel distance."""

from __future__ import annotations

import functools
import sys
import time
import warnings

import click

from mlpdesign.progress import progress
from mlpdesign.select.engine import CRITERIA

from .options import (
    balance_option,
    choice_option,
    file_format_option,
    file_option,
    float_option,
    int_option,
    jitter_option,
    kernel_options,
    output_option,
    seed_option,
    store_run_options,
)

CRITERIA_CHOICES = sorted(CRITERIA)


def _first_type(text: str | None):
    if text is None or text in ("extreme", "random"):
        return None if text == "extreme" else text
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(
            f"expected a candidate_id, 'random' or 'extreme', got {text!r}"
        ) from None


@click.command("select")
@click.argument("store", type=click.Path(dir_okay=False))
@click.option("-n", "n", type=int, required=True, help="Number of candidates to pick.")
@output_option("Output selection file (HDF5; .json/.txt or --format for the others).")
@click.option(
    "--given",
    type=click.Path(dir_okay=False),
    multiple=True,
    help="Existing training set to condition on: a store described with the same "
    "gap string, or frames of any format ASE reads (extxyz, .traj, OUTCAR, ...; "
    "repeatable, quoted globs: one set, described here with the pool's gap string). "
    "The selection records each file's path and sha256.",
)
@file_option(
    "--continue",
    "continue_from",
    help="Extend a saved selection of this store to -n picks (same method, options "
    "and seed; the result equals one run of -n).",
)
@choice_option(
    "--criterion",
    choices=CRITERIA_CHOICES,
    help="What the greedy design maximises: maxmin (default: the largest Psi, the "
    "paper's design), maxent (the largest posterior variance sigma^2 given the design: "
    "greedy max log det(K + jitter I), Shewry & Wynn's maximum entropy) or random (a "
    "seeded random order, the 'representative' baseline).",
)
@jitter_option(
    "lambda of --criterion maxent: sigma^2(x|T) = k(x,x) + lambda - "
    "k_xT (K_TT + lambda I)^-1 k_Tx; must be > 0 (default 1e-6, report's log-det jitter).",
    default=None,
)
@choice_option(
    "--refine",
    choices=("exchange",),
    help="Refine the greedy design (maxmin or maxent) by Fedorov exchange: swap a design "
    "point for a pool candidate while the criterion (maxent: log det(K + jitter I); "
    "maxmin: the smallest pairwise D^2) improves by more than --tol, best swap first. "
    "--given points are never swapped out; a swap stays within its stratum. The result "
    "is a set, not an ordered design: 'write -n' and '--continue' refuse it.",
)
@float_option(
    "--tol",
    metavar="X",
    help="Least gain of a swap of --refine exchange (maxent: in log det; maxmin: in D^2; "
    "default 0: any gain beyond rounding).",
)
@int_option("--max-swaps", metavar="N", help="Most swaps of --refine exchange (default: -n).")
@click.option(
    "--random",
    "random_",
    is_flag=True,
    hidden=True,  # the old spelling of --criterion random (report's --random is a count)
    help="Same as --criterion random.",
)
@click.option(
    "--first",
    default=None,
    callback=lambda c, p, v: _first_type(v),
    help="First pick of an unconditional design: a candidate_id, 'random' (with "
    "--seed) or 'extreme' (default: the candidate farthest from the first "
    "one).",
)
@seed_option(help="Seed of --random and --first random.")
@float_option(
    "--until-var",
    metavar="X",
    help="The budget of --criterion maxent: stop before the first pick whose posterior "
    "variance sigma^2 would fall below X.",
)
@int_option(
    "--max-atoms",
    min=1,
    metavar="N",
    help="Leave out candidates with more than N atoms (a DFT budget per calculation); "
    "the selection records the design's total atoms and cost either way.",
)
@float_option(
    "--until-psi",
    metavar="X",
    help="A budget: stop before the first pick whose Psi (its D^2 to the design) would "
    "fall below X, and say so; -n is then the most picks.",
)
@balance_option(
    "Normalise each descriptor's kernel on its own, weighted by delta^2 "
    "(else the 2-body term dominates the distance)."
)
@click.option(
    "--stratify/--no-stratify",
    default=None,
    help="Stratified (sliced) max-min over the pool's structure labels: each pick goes "
    "to the structure furthest behind its share of the pool, then to its largest Psi "
    "(Psi still counts every design point). Default: on when the pool has two or more "
    "structure labels; --no-stratify gives the paper's plain max-min.",
)
@click.option(
    "--stratify-by",
    "strata_key",
    default="structure",
    show_default=True,
    metavar="KEY",
    help="What the strata are: structure (generate's labels), source (each candidate's "
    "input file: one per MD run, temperature or defect) or any info key of the pool's "
    "frames (config_type, origin, ...). Implies --stratify unless --no-stratify.",
)
@choice_option(
    "--strata-share",
    choices=("pool", "equal"),
    default="pool",
    help="Each stratum's share of the picks: its share of the pool, or the same for all "
    "(a rare defect run gets as many picks as the bulk).",
)
@kernel_options(
    per_atom_help="Average instead of sum over atoms (matters only with --no-normalize).",
    no_normalize_help="Use K itself, not K(p,q)/sqrt(K(p,p)K(q,q)).",
    dtype_help="Working precision of the kernel rows; float32 halves the memory but changed "
    "pick 798 of 1000 on a 100 000-candidate Zr pool (the bounds are exact in both).",
)
@file_format_option(
    ("h5", "json", "txt"), "Output format (default: from the suffix of -o, else h5)."
)
@store_run_options(
    "Stream the store from HDF5 in blocks instead of loading it, keeping the kernel "
    "data and O(N) state of each process under SIZE (512M, 1.5G, 4G; bytes). Same picks; "
    "Psi then bitwise equal for any limit and any number of MPI ranks."
)
def command(store, n, output, criterion, random_, first, no_normalize, quiet, **kw) -> None:
    """Pick the most informative candidates: greedy conditional max-min on the kernel distance.

    Psi_i is the min squared kernel distance D^2 = k(p,p) + k(q,q) - 2k(p,q) of candidate i
    to the design (and to --given); each step picks the candidate with the largest Psi.
    k is GAP's energy kernel from the store's gap string (distance_2b ard_se + SOAP
    dot_product^zeta, summed over pairs and atoms), normalised so that D^2 is in [0, 2].
    The output is ordered: any prefix is itself a max-min design, and each pick carries its
    Psi at pick time. Exact: the bounds that skip work never change a pick. With structure
    labels in the pool (hcp/fcc/bcc from generate) the design is stratified: each structure
    gets its share of the pool, max-min within it (--no-stratify: the paper's plain design).
    --refine exchange then improves the greedy design by best-first swaps (Fedorov
    exchange); the result is a set, not an ordered design (no prefixes).

    \b
    Examples:
      mlpdesign select pool.h5 -n 1000 -o selection.h5
      mlpdesign select pool.h5 -n 200 --given existing.xyz -o more.h5
      mlpdesign select pool.h5 -n 200 --given old.xyz --given 'md/*.traj' -o more.h5
      mlpdesign select pool.h5 -n 2000 --continue selection.h5 -o selection2000.h5
      mlpdesign select pool.h5 -n 1000 --criterion random --seed 3 -o random.h5
      mlpdesign select pool.h5 -n 1000 --criterion maxent --jitter 1e-6 -o maxent.h5
      mlpdesign select pool.h5 -n 200 --criterion maxent --refine exchange -o set.h5
      mlpdesign select pool.h5 -n 100 --balance --format json -o sel.json
      mlpdesign select pool.h5 -n 1000 --no-stratify -o plain.h5   # the paper's design
      mlpdesign select pool.h5 -n 1000 --memory-limit 4G -o selection.h5
      mpiexec -n 4 mlpdesign select pool.h5 -n 1000 -o selection.h5   # or srun

    Under mpiexec/srun each rank holds (--memory-limit: streams) a shard of the pool; rank 0
    writes the file, the same bytes as a serial --memory-limit run.
    """
    from mlpdesign.mpi import world
    from mlpdesign.select import run

    if kw["stratify"] is None and kw["strata_key"] != "structure":
        kw["stratify"] = True  # --stratify-by KEY asks for strata (refused with random below)
    criterion = _criterion(criterion, random_, kw["stratify"], kw["continue_from"], first)
    if kw["continue_from"] is not None and kw["jitter"] is not None:
        from mlpdesign.errors import MlpdesignError

        raise MlpdesignError("--continue takes --jitter from the saved selection; drop --jitter")
    kw["given"] = list(kw["given"]) or None  # several files: one given set
    comm = world()
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        sel, design = run(
            store,
            n,
            output,
            criterion=criterion or "maxmin",
            first=first,
            normalize=not no_normalize,
            command=" ".join(["mlpdesign"] + sys.argv[1:]),
            comm=comm,
            progress_factory=functools.partial(_bar, quiet=quiet),
            **kw,
        )
    if comm is not None and comm.Get_rank() != 0:
        return
    for w in caught:
        click.echo(f"mlpdesign: warning: {w.message}", err=True)
    if not quiet:
        click.echo(_summary(sel, design, output, time.monotonic() - t0), err=True)


def _bar(total: int, desc: str, initial: int = 0, quiet: bool = False):
    """A progress bar of select: picks, the exchange's swaps, a given set's configs."""
    unit = "swap" if desc == "exchange" else "cfg" if desc.startswith("describe") else "pick"
    return progress(total, desc, unit=unit, enabled=not quiet, initial=initial)


def _criterion(criterion, random_: bool, stratify, continue_from, first) -> str | None:
    """The criterion asked for (``--random`` is ``--criterion random``), checked against
    the options it cannot be combined with."""
    from mlpdesign.errors import MlpdesignError

    if random_ and criterion not in (None, "random"):
        raise MlpdesignError(f"--random contradicts --criterion {criterion}")
    criterion = "random" if random_ else criterion
    if stratify is True and criterion == "random":
        raise MlpdesignError("--stratify is for max-min designs; do not combine it with --random")
    if continue_from is not None and (criterion is not None or first is not None):
        raise MlpdesignError(
            "--continue takes the criterion, --first and --seed from the saved "
            "selection; do not combine it with --criterion, --random or --first"
        )
    return criterion


def _summary(sel, design, output, seconds: float) -> str:
    """What select tells a user at the end: picks, strata, work saved, time, output."""
    s = design.stats
    lines = []
    if s.get("stopped_by_budget"):
        lines.append(
            f"stopped at {sel.n} picks: the next pick's {s['until_what']} would fall below "
            f"--until-{s['until_what']} {s['until']:g}"
        )
    if "blocks" in s:
        lines.append(
            f"streamed {s['blocks']} blocks on {s['ranks']} rank(s): read {s['blocks_read']} "
            f"blocks ({s['bytes_read'] / 1e9:.3g} GB), {s['cache_hits']} cache hits, "
            f"{s['blocks_skipped']} skipped by the bound"
        )
    last = f", last psi {sel.psi[-1]:.4g}" if sel.n else ""
    if sel.var is not None and sel.n:
        last += f", last var {sel.var[-1]:.4g} (jitter {sel.attrs.get('jitter', 0):g})"
    costly = s.get("costly_evaluated")
    soap = ""
    if costly is not None and design.n_pool and costly < design.evaluated:
        frac = costly / max(1, s.get("adds", 1)) / design.n_pool
        soap = f" ({100 * frac:.1f}% in full)"
    strata = s.get("strata")
    key = sel.attrs.get("stratify") or "structure"
    by = f"; by {key} " + " ".join(f"{k} {v}" for k, v in strata.items()) if strata else ""
    if sel.attrs.get("total_atoms"):
        last += f"; {sel.attrs['total_atoms']} atoms, DFT cost sum n^3 {sel.attrs['dft_cost']:.4g}"
    ex = s.get("exchange")
    if ex:
        lines.append(_exchange_line(ex))
    lines.append(
        f"selected {sel.n} of {design.n_pool} candidates ({sel.method}{last}{by}; "
        f"{100 * design.rows_per_pick:.1f}% of the pool evaluated per pick{soap}, "
        f"{seconds:.1f} s) -> {output}"
    )
    return "\n".join(lines)


def _exchange_line(ex: dict) -> str:
    """The exchange's summary: swaps, objective before and after, the bounds' share."""

    def f(x) -> str:
        return "-" if x is None else f"{x:.6g}"

    more = ""
    if ex.get("rows_scanned"):
        more = f"; {100 * ex['rows_solved'] / ex['rows_scanned']:.0f}% of rows solved"
    elif ex.get("steps"):
        more = f"; {ex['rows_recomputed'] / ex['steps']:.0f} rows recomputed per step"
    stop = "--max-swaps reached" if ex["n_swaps"] >= ex["max_swaps"] else "no swap gains more"
    return (
        f"exchange: {ex['n_swaps']} swaps ({stop}), {ex['objective']} "
        f"{f(ex['objective_before'])} -> {f(ex['objective_after'])}{more}; an unordered set"
    )
