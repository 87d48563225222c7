"""Options shared by several subcommands, written once."""

from __future__ import annotations

import click

force_option = click.option(
    "--force", is_flag=True, help="Overwrite an existing output (default: refuse)."
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress output.")


def seed_option(
    default: int = 1, help: str = "Seed of every random draw (same seed, same bytes)."
) -> callable:
    return click.option("--seed", type=int, default=default, show_default=True, help=help)


def output_option(help: str, required: bool = True) -> callable:
    return click.option(
        "-o", "--output", "output", type=click.Path(dir_okay=True), required=required, help=help
    )


jobs_option = click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of worker processes.",
)


def shard_type(text: str) -> tuple[int, int]:
    """Parse ``i/n`` (1-based) as used by SLURM array tasks."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected i/n, e.g. 3/16, got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise click.BadParameter(f"expected 1 <= i <= n, got {text!r}")
    return i, n


shard_option = click.option(
    "--shard",
    type=str,
    default=None,
    callback=lambda c, p, v: shard_type(v) if v else None,
    help="Do only part i of n (1-based), e.g. --shard $SLURM_ARRAY_TASK_ID/16.",
)


def _set_threads(ctx, param, value):
    from mlpdesign.kernels.core import set_threads

    set_threads(value)  # None: the default
    return value


threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    expose_value=False,
    callback=_set_threads,
    help="Threads for kernel distances (default: $MLPDESIGN_THREADS, else 1, which was "
    "fastest on 2 cores; loading the store uses every CPU). Same bits for any number.",
)


def memory_limit_option(help: str) -> callable:
    """``--memory-limit SIZE`` plus the hidden ``--block-rows`` of the streamed paths."""

    def deco(f):
        f = click.option("--block-rows", type=click.IntRange(min=1), default=None, hidden=True)(f)
        return click.option("--memory-limit", default=None, metavar="SIZE", help=help)(f)

    return deco
