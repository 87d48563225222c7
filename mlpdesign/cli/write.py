"""``mlpdesign write``: the chosen configurations of a selection as extxyz, in pick order."""

from __future__ import annotations

import click

from .inputs import min_distance_option
from .options import force_option, int_option, output_option, quiet_option


@click.command("write")
@click.argument("pool", metavar="POOL...", nargs=-1, required=True)
@click.argument("selection", metavar="SELECTION")
@output_option("Output extxyz file (the training configurations).")
@int_option(
    "-n",
    "n",
    help="Write only the first N picks (any prefix of a greedy design is one; refused on "
    "an unordered set from select --refine exchange).",
)
@min_distance_option
@force_option
@quiet_option
def command(pool, selection, output, n, min_distance, force, quiet) -> None:
    """Write the configurations a selection chose from POOL..., in selection order.

    POOL...: the inputs the store was described from, in the same order (any file ASE
    reads, several files or quoted glob patterns); the chosen frames are read back from
    them. Every info key and array of the pool is kept (candidate_id, structure,
    config_type, F, ...), and so are energies, forces and stresses a frame carries (ASE
    keys, e.g. from an MD or DFT file); a frame without candidate_id gets the id
    'describe' gave it (its position in the pool). Added: selection_rank (0 = first
    pick) and min_distance (the selection's psi: the squared kernel distance D^2 to the
    design when it was picked; inf for the first pick of an unconditional design). The
    selection must come from this very pool: its pool checksum (over every input) and
    candidate ids are checked, and a selection from another pool is refused. An extxyz
    pool is streamed, never loaded whole.

    \b
    Examples:
      mlpdesign write pool.xyz selection.h5 -o train.xyz
      mlpdesign write pool.xyz selection.h5 -n 500 -o train-500.xyz
      mlpdesign write pool.xyz selection.json -o train.xyz --force
      mlpdesign write md/run1.traj 'md/hot-*.xyz' selection.h5 -o train.xyz
    """
    from mlpdesign.io.write import write_training_set

    if n is not None:
        _check_prefix(selection, n)
    res = write_training_set(
        list(pool), selection, output, n=n, force=force, min_distance=min_distance
    )
    if not quiet:
        note = "" if res.checksum_checked else " (selection has no pool checksum: ids checked)"
        click.echo(
            f"wrote {res.n_written} of {res.n_selection} picks from {res.pool_frames} "
            f"pool configurations to {output}{note}",
            err=True,
        )
        click.echo(
            f"  {res.n_atoms} atoms; DFT cost sum(n_atoms^3) = {res.cost:.4g} "
            f"({res.cost / max(res.n_written, 1):.4g} per configuration)",
            err=True,
        )


def _check_prefix(selection: str, n: int) -> None:
    """One line when ``-n`` would cut an unordered set (``select --refine exchange``)."""
    from mlpdesign.errors import MlpdesignError
    from mlpdesign.io.selection import load_selection

    sel = load_selection(selection)
    if not sel.ordered and n < sel.n:
        raise MlpdesignError(
            f"-n {n}: {selection} is an unordered set of {sel.n} (select --refine "
            "exchange), so no part of it is a design; write it whole, or select -n "
            f"{n} again"
        )
