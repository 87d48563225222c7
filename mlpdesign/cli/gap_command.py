"""``mlpdesign gap-command``: print the gap_fit command for the kernel stored in a store."""

from __future__ import annotations

import click

from .options import AliasOption, quiet_option, seed_option


def _sigma(ctx, param, value: str | None):
    from mlpdesign.gap.fit import parse_sigma

    return None if value is None else parse_sigma(value)


@click.command("gap-command")
@click.argument("store", metavar="STORE")
@click.option(
    "--at-file",
    default="labelled.xyz",
    show_default=True,
    help="Labelled training set (from collect or label); when it exists it is "
    "checked and sizes n_sparse.",
)
@click.option("--gp-file", default="gap.xml", show_default=True, help="Potential file to write.")
@click.option(
    "--sigma",
    "--default-sigma",
    "default_sigma",
    cls=AliasOption,
    hidden_names=("--default-sigma",),
    callback=_sigma,
    default=None,
    metavar="E,F,V[,H]",
    help="gap_fit default_sigma, as for 'fit': energy (eV/atom), force (eV/A), virial "
    "(eV/atom)[, hessian].  [default: 0.002,0.05,0.05]",
)
@seed_option(help="rnd_seed of gap_fit (sparse-point choice).")
@quiet_option
def command(store, at_file, gp_file, default_sigma, seed, quiet) -> None:
    """Print the gap_fit command that fits a GAP with STORE's descriptors and kernels.

    The gap={...} argument is the store's GAP string (the kernel the design was made
    with), plus per descriptor n_sparse and sparse_method unless the string sets them:
    distance_2b gets 20 points on a uniform grid, SOAP and other many-body descriptors
    CUR on points (500, at most the atoms in the training set). Then
    default_sigma, e0_method=average (needed for one-element data without an isolated
    atom), energy/force/virial_parameter_name=dft_* (the labelled-set keys), sparse_jitter
    and rnd_seed: the same command 'mlpdesign fit' runs.

    \b
    Examples:
      mlpdesign gap-command pool.h5 --at-file labelled.xyz
      mlpdesign gap-command pool.h5 --at-file labelled.xyz --sigma 0.001,0.1,0.05
      eval "$(mlpdesign gap-command pool.h5 --at-file labelled.xyz)"   # run it
    """
    from mlpdesign.gap.command import gap_fit_command

    cmd, notes = gap_fit_command(
        store, at_file=at_file, gp_file=gp_file, sigma=default_sigma, seed=seed
    )
    for n in notes if not quiet else []:
        click.echo(f"mlpdesign: note: {n}", err=True)
    click.echo(cmd)
