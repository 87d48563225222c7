"""``mlpdesign score``: how informative each candidate is given a training set."""

from __future__ import annotations

import sys

import click

from mlpdesign.cli.options import (
    balance_option,
    file_format_option,
    file_option,
    float_option,
    int_option,
    jitter_option,
    kernel_options,
    output_option,
    store_run_options,
)


@click.command("score")
@click.argument("store", type=click.Path(dir_okay=False))
@click.option(
    "--train",
    required=True,
    multiple=True,
    type=click.Path(dir_okay=False),
    help="The training set: frames of any format ASE reads (extxyz, .traj, OUTCAR, ...; "
    "repeatable, quoted globs: one set, described here with the pool's gap string), a store "
    "described with the same gap string, or a selection of this pool.",
)
@click.option(
    "--test",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Score these configurations instead of the pool's: frames of any format ASE "
    "reads (e.g. an MD trajectory; repeatable, quoted globs: one set, in the order given) "
    "or a store with the pool's gap string. The scores file records each file's sha256.",
)
@output_option("Scores file (HDF5; .json/.xyz or --format for the others).", required=False)
@jitter_option("lambda of sigma^2 = k(x,x) + lambda - k_xT (K_TT + lambda I)^-1 k_Tx; > 0.")
@float_option(
    "--threshold", default=0.01, help="Report the fraction of candidates with sigma^2 above this."
)
@int_option(
    "--top", default=10, min=0, help="Print the N most informative candidates (largest sigma^2)."
)
@file_option(
    "--figure", help="Histogram of sigma^2 (pool) and leave-one-out sigma^2 (training set), PNG."
)
@file_format_option(
    ("h5", "json"),
    "Output format (default: from the suffix of -o, else h5; -o NAME.xyz writes the "
    "--test frames with score_psi, score_var, score_rank info keys).",
)
@balance_option("Normalise each descriptor's kernel on its own.")
@kernel_options(
    per_atom_help="Average over atoms (with --no-normalize).",
    no_normalize_help="Use K itself, not K/sqrt(K(p,p)K(q,q)).",
    dtype_help="Working precision of the kernel rows.",
)
@store_run_options(
    "Stream the store (or the --test set) from HDF5 in blocks instead of loading it, "
    "keeping each process's kernel data, the training set's factor and the O(N) state "
    "under SIZE (512M, 1.5G, 4G; bytes). The same scores, bit for bit, as in memory, for "
    "any limit and any number of MPI ranks."
)
def command(store, train, output, top, no_normalize, quiet, **kw) -> None:
    """Score a pool against a training set before any DFT: per candidate its Psi (smallest
    D^2 to the set), sigma^2 given the set (MaxEnt: how much it would add) and rank; per
    training configuration its leave-one-out sigma^2 (small: redundant) and nearest
    neighbour; for the set its log det(K + jitter I), the largest sigma^2 in the pool and
    the fraction above --threshold.

    \b
    Examples:
      mlpdesign score pool.h5 --train train.xyz -o scores.h5
      mlpdesign score pool.h5 --train selection.h5 --top 20 --figure var.png -o s.json
      mlpdesign score pool.h5 --train train.xyz --test md.xyz -o md_scores.h5
      mlpdesign score pool.h5 --train old.xyz --train 'md/*.traj' --test run2.traj -o s.h5
      mlpdesign score pool.h5 --train selection.h5 --memory-limit 2G -o scores.h5
      mpiexec -n 4 mlpdesign score pool.h5 --train train.xyz -o scores.h5   # or srun

    The candidates (the pool, or the --test set) are the store's fixed grid of blocks:
    all held in memory, or streamed from HDF5 under --memory-limit, and split over the
    ranks under mpiexec/srun; each rank computes Psi and sigma^2 of its shard, block by
    block against the training set's Cholesky factor (never an N x N matrix); rank 0
    writes the file. The scores are the same bits in every mode. Under MPI across nodes
    the --test frames are described into $MLPDESIGN_SCRATCH (a directory every rank
    reads), or give a store of them.
    """
    from mlpdesign.mpi import world
    from mlpdesign.score import run

    comm = world()
    sc = run(
        store,
        list(train),
        output,
        normalize=not no_normalize,
        command=" ".join(["mlpdesign"] + sys.argv[1:]),
        comm=comm,
        **{**kw, "test": list(kw["test"]) or None},
    )
    if quiet or (comm is not None and comm.Get_rank() != 0):
        return
    s = sc.stats
    if s.get("memory_limit") is not None or s.get("ranks", 1) > 1:
        click.echo(
            f"streamed {s['blocks']} blocks on {s['ranks']} rank(s): read {s['blocks_read']} "
            f"blocks ({s['bytes_read'] / 1e9:.3g} GB), {s['cache_hits']} cache hits",
            err=True,
        )
    click.echo(sc.summary(), err=True)
    idx = sc.top(top)
    if len(idx):
        click.echo(f"{'rank':>5} {'candidate_id':>12} {'sigma^2':>11} {'psi':>11}", err=True)
        for i in idx:
            click.echo(
                f"{sc.rank[i]:>5} {sc.candidate_id[i]:>12} {sc.var[i]:>11.4g} {sc.psi[i]:>11.4g}",
                err=True,
            )
    if output is not None:
        click.echo(f"-> {output}", err=True)
