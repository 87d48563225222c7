"""``mlpdesign report``: label-free quality of designs (metrics.json + PNG figures)."""

from __future__ import annotations

import json

import click

from .options import (
    float_option,
    force_option,
    int_option,
    jitter_option,
    memory_limit_option,
    output_option,
    print_format_option,
    quiet_option,
    seed_option,
)


def _sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected sizes like 100,200,500, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"sizes must be positive integers, got {value!r}")
    return out


def _targets(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    try:
        out = [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected D2 values like 0.05,0.02, got {value!r}") from None
    if not all(t > 0 for t in out):
        raise click.BadParameter(f"targets must be positive D2 values, got {value!r}")
    return out


def _kernel(ctx: click.Context, param: click.Parameter, value: str | None) -> dict | None:
    if not value:
        return None
    try:
        k = json.loads(value)
    except json.JSONDecodeError:
        raise click.BadParameter(f"expected a JSON object, got {value!r}") from None
    if not isinstance(k, dict):
        raise click.BadParameter(f"expected a JSON object, got {value!r}")
    return k


@click.command("report")
@click.argument("store", type=click.Path(dir_okay=False))
@click.argument("selections", nargs=-1, required=True, type=click.Path(dir_okay=False))
@output_option("Output folder (metrics.json and the PNG figures).", required=False)
@int_option(
    "--random",
    "n_random",
    default=20,
    min=0,
    help="Number of random designs of the same size from the same pool to compare with (0: none).",
)
@click.option(
    "--sizes",
    callback=_sizes,
    default=None,
    help="Measure these prefix sizes of each selection, e.g. 100,200,500 (any "
    "prefix of a max-min design is one; default: the whole selection).",
)
@click.option(
    "--cover-targets",
    callback=_targets,
    default="0.1,0.05,0.02,0.01",
    show_default=True,
    help="Covering radii (D2) for which to state the design size that first reaches them "
    "('how many DFT runs for this coverage'); marked on design_curve.png.",
)
@float_option(
    "--cost-exponent",
    default=3.0,
    min=0,
    help="Relative DFT cost of a design: sum over its configurations of n_atoms^P "
    "(plane-wave DFT scales about as n^3), beside its total atoms.",
)
@seed_option(help="Seed of the random designs (same seed, same bytes).")
@jitter_option(
    "Added to the diagonal of K before log det(K + jitter I) (above float32 "
    "rounding; about a GAP energy sigma^2/delta^2).",
    min=0,
)
@int_option("--bins", default=40, min=1, help="Histogram bins in the figures.")
@click.option(
    "--kernel",
    "kernel",
    callback=_kernel,
    default=None,
    help="Kernel options as JSON, e.g. '{\"normalize\": true}' (default: those the "
    "first selection was made with).",
)
@print_format_option(help="What to print on stdout: a table, the metrics JSON, or nothing.")
@memory_limit_option(
    "Stream the pool from the store in blocks for the covering radius, keeping the "
    "kernel data of each process under SIZE (512M, 4G). Under mpiexec/srun the pool is "
    "split over the ranks either way; rank 0 writes the report."
)
@force_option
@quiet_option
def command(store, selections, output, fmt, quiet, memory_limit, block_rows, **options) -> None:
    """Measure how good designs are, before any label exists (paper figs. 3, 4, 8).

    For each SELECTION of the pool described by STORE, and for --random R random designs
    of the same size from the same pool, computes on the squared kernel distance D2 of
    the selection's kernel (D = sqrt(D2) also reported):

    \b
      min pairwise D2     max-min criterion, smallest distance inside the design (higher is better)
      covering radius D2  largest D2 from any pool candidate to its nearest design point
                          (fill distance; lower is better; streamed, O(N) memory)
      log det(K+jitter I) MaxEnt (Shewry & Wynn) entropy of the design kernel (higher is better)

    and writes OUTPUT/metrics.json (stable keys) with figures: pairwise_distance.png
    (histogram vs random, fig. 4a), design_curve.png (Psi at pick time and covering radius
    against design size vs random, fig. 8), logdet.png (fig. 3), strain.png (||F - I||,
    fig. 4b) and structure_share.png (when the pool mixes structures).

    \b
    Examples:
      mlpdesign report pool.h5 selection.h5 -o report/
      mlpdesign report pool.h5 opt.h5 rnd.h5 --random 50 --sizes 100,200,500,1000 -o report/
      mlpdesign report pool.h5 selection.h5 --format json > metrics.json   # no figures
      mlpdesign report pool.h5 selection.h5 --memory-limit 4G -o report/
      mpiexec -n 4 mlpdesign report pool.h5 selection.h5 -o report/     # or srun
    """
    from mlpdesign.mpi import world
    from mlpdesign.report import run
    from mlpdesign.report.metrics import format_text, json_dumps

    if output is None and fmt == "none":
        raise click.UsageError("nothing to do: give -o/--output or a --format to print")
    comm = world()
    data = run(
        store,
        selections,
        output,
        memory_limit=memory_limit,
        comm=comm,
        block_rows=block_rows,
        show_progress=not quiet,
        **options,
    )
    if data is None:  # not rank 0
        return
    if fmt == "text":
        click.echo(format_text(data.metrics), nl=False)
    elif fmt == "json":
        click.echo(json_dumps(data.metrics), nl=False)
    if output is not None and not quiet:
        click.echo(
            f"wrote {output}/metrics.json and {len(data.metrics['figures'])} figures", err=True
        )
