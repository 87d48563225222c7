"""``mlpdesign score``: how informative each candidate is given a training set."""

from __future__ import annotations

import sys

import click

from mlpdesign.cli.options import force_option, output_option, quiet_option


@click.command("score")
@click.argument("store", type=click.Path(dir_okay=False))
@click.option(
    "--train",
    required=True,
    type=click.Path(dir_okay=False),
    help="The training set: an extxyz (described here with the pool's gap string), a store "
    "described with the same gap string, or a selection of this pool.",
)
@click.option(
    "--test",
    type=click.Path(dir_okay=False),
    default=None,
    help="Score the configurations of this file (an extxyz, e.g. an MD trajectory, or a "
    "store with the pool's gap string) instead of the pool's.",
)
@output_option("Scores file (HDF5; .json/.xyz or --format for the others).", required=False)
@click.option(
    "--jitter",
    type=float,
    default=1e-6,
    show_default=True,
    help="lambda of sigma^2 = k(x,x) + lambda - k_xT (K_TT + lambda I)^-1 k_Tx; > 0.",
)
@click.option(
    "--threshold",
    type=float,
    default=0.01,
    show_default=True,
    help="Report the fraction of candidates with sigma^2 above this.",
)
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Print the N most informative candidates (largest sigma^2).",
)
@click.option(
    "--figure",
    type=click.Path(dir_okay=False),
    default=None,
    help="Histogram of sigma^2 (pool) and leave-one-out sigma^2 (training set), PNG.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["h5", "json"]),
    default=None,
    help="Output format (default: from the suffix of -o, else h5; -o NAME.xyz writes the "
    "--test frames with score_psi, score_var, score_rank info keys).",
)
@click.option("--balance", is_flag=True, help="Normalise each descriptor's kernel on its own.")
@click.option("--per-atom", is_flag=True, help="Average over atoms (with --no-normalize).")
@click.option("--no-normalize", is_flag=True, help="Use K itself, not K/sqrt(K(p,p)K(q,q)).")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float64"]),
    default="float64",
    show_default=True,
    help="Working precision of the kernel rows.",
)
@force_option
@quiet_option
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
    """
    from mlpdesign.score import run

    sc = run(
        store,
        train,
        output,
        normalize=not no_normalize,
        command=" ".join(["mlpdesign"] + sys.argv[1:]),
        **kw,
    )
    if quiet:
        return
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
