"""``mlpdesign merge``: join the shards of ``describe --shard`` into one store."""

from __future__ import annotations

import shlex

import click

from .options import force_option, output_option, quiet_option


@click.command("merge")
@click.argument("stores", nargs=-1, required=True, type=click.Path(dir_okay=False))
@output_option("Output store (HDF5).")
@force_option
@quiet_option
def command(stores, output, force, quiet) -> None:
    """Merge the shard stores of one pool (describe --shard i/n) into one store.

    The shards may come in any order; they must be of the same pool and GAP string and
    together cover every config exactly once. The result equals the store of an
    unsharded run (in all data and attributes except the recorded command).

    \b
    Examples:
      mlpdesign merge part-*.h5 -o pool.h5
      mlpdesign merge part-1.h5 part-2.h5 part-3.h5 -o pool.h5 --force
    """
    from mlpdesign.io.store import merge_stores
    from mlpdesign.progress import progress

    cmd = " ".join(shlex.quote(p) for p in ["mlpdesign", "merge", *stores, "-o", output])
    out = merge_stores(
        list(stores),
        output,
        force=force,
        command=cmd,
        progress=lambda total: progress(total, "merge", unit="cfg", enabled=not quiet),
    )
    if not quiet:
        click.echo(f"merged {len(stores)} stores into {out}", err=True)
