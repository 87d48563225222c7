"""``mlpdesign write``: the chosen configurations of a selection as extxyz, in pick order."""

from __future__ import annotations

import click

from .options import force_option, output_option, quiet_option


@click.command("write")
@click.argument("pool", metavar="POOL")
@click.argument("selection", metavar="SELECTION")
@output_option("Output extxyz file (the training configurations).")
@click.option(
    "-n",
    "n",
    type=int,
    default=None,
    help="Write only the first N picks (any prefix of a max-min design is one).",
)
@force_option
@quiet_option
def command(pool, selection, output, n, force, quiet) -> None:
    """Write the configurations a selection chose from POOL, in selection order.

    Every info key of the pool is kept (candidate_id, structure, config_type, F, ...),
    plus selection_rank (0 = first pick) and min_distance (the selection's psi: the
    squared kernel distance D^2 to the design when it was picked; inf for the first
    pick of an unconditional design). The selection must come from this very pool: its
    pool checksum and candidate ids are checked, and a selection from another pool is
    refused. The pool is streamed, never loaded whole.

    \b
    Examples:
      mlpdesign write pool.xyz selection.h5 -o train.xyz
      mlpdesign write pool.xyz selection.h5 -n 500 -o train-500.xyz
      mlpdesign write pool.xyz selection.json -o train.xyz --force
    """
    from mlpdesign.io.write import write_training_set

    res = write_training_set(pool, selection, output, n=n, force=force)
    if not quiet:
        note = "" if res.checksum_checked else " (selection has no pool checksum: ids checked)"
        click.echo(
            f"wrote {res.n_written} of {res.n_selection} picks from {res.pool_frames} "
            f"pool configurations to {output}{note}",
            err=True,
        )
