"""``mlpdesign fit``: run gap_fit on a labelled set with the store's gap string."""

from __future__ import annotations

import functools
from collections.abc import Callable

import click

from .options import (
    file_option,
    float_option,
    force_option,
    output_option,
    quiet_option,
    seed_option,
)

FIT_KEYS = (
    "store",
    "gap",
    "sigma",
    "n_sparse",
    "sparse_method",
    "e0",
    "gap_fit_args",
    "seed",
    "energy_key",
    "forces_key",
    "virial_key",
)


def _key_option(name: str, what: str, ase: str) -> Callable:
    return click.option(
        f"--{name}-key",
        f"{name}_key",
        default=None,
        metavar="KEY",
        help=f"Name of the {what} label in the labelled set (default: dft_{name}, else "
        f"ASE's {ase}, e.g. of an MD .traj or a VASP output).",
    )


def fit_options(f):
    """The gap_fit options shared by ``fit`` and ``crossval``; the command receives them as
    one ``options`` argument (:class:`mlpdesign.gap.fit.FitOptions`)."""

    command = f

    @functools.wraps(command)
    def with_options(**kw):
        return command(options=build_options(**{k: kw.pop(k) for k in FIT_KEYS}), **kw)

    f = with_options
    opts = [
        file_option(
            "--store",
            help="Descriptor store (pool.h5): fit with its gap string, the one the "
            "design was made with.",
        ),
        click.option(
            "--gap",
            default=None,
            help="GAP string instead of --store (default: the paper's model).",
        ),
        click.option(
            "--sigma",
            default="0.002,0.05,0.05",
            show_default=True,
            help="gap_fit default_sigma: energy (eV/atom), force (eV/A), "
            "virial (eV/atom)[, hessian].",
        ),
        click.option(
            "--n-sparse",
            "n_sparse",
            multiple=True,
            metavar="NAME=N",
            help="Sparse points of a descriptor, by name or position, e.g. "
            "soap=500 (defaults: soap 500, distance_2b 20, unless the gap "
            "string sets n_sparse).",
        ),
        click.option(
            "--sparse-method",
            "sparse_method",
            multiple=True,
            metavar="NAME=METHOD",
            help="Sparse-point method of a descriptor (defaults: soap cur_points, "
            "distance_2b uniform).",
        ),
        float_option("--e0", help="Isolated-atom energy in eV (default: e0_method=average)."),
        click.option(
            "--gap-fit-arg",
            "gap_fit_args",
            multiple=True,
            metavar="KEY=VALUE",
            help="Extra gap_fit argument, passed as given (repeatable).",
        ),
        seed_option(help="gap_fit's rnd_seed (sparse-point choice)."),
        _key_option("energy", "energy (info)", "energy"),
        _key_option("forces", "forces (per-atom array)", "forces"),
        _key_option("virial", "virial (info, 9 numbers, eV)", "virial or -stress x volume"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def build_options(
    store,
    gap,
    sigma,
    n_sparse,
    sparse_method,
    e0,
    gap_fit_args,
    seed,
    energy_key=None,
    forces_key=None,
    virial_key=None,
):
    """FitOptions from the shared click options."""
    from mlpdesign.gap.fit import FitOptions, gap_of, parse_assignments, parse_sigma

    return FitOptions(
        gap=gap_of(store, gap),
        sigma=parse_sigma(sigma),
        n_sparse=parse_assignments(n_sparse, "--n-sparse", int),
        sparse_method=parse_assignments(sparse_method, "--sparse-method"),
        e0=e0,
        seed=seed,
        extra=tuple(gap_fit_args),
        keys=(energy_key, forces_key, virial_key),
    )


def memory_options(f):
    """``--memory-limit SIZE`` and ``--ignore-memory`` of ``fit`` and ``crossval``: the
    check of gap_fit's estimated peak memory before any fit starts."""
    f = click.option(
        "--ignore-memory",
        is_flag=True,
        help="Run gap_fit even when its estimated memory exceeds the limit.",
    )(f)
    return click.option(
        "--memory-limit",
        default=None,
        metavar="SIZE",
        callback=lambda c, p, v: _memory(v),
        help="Memory gap_fit may use, e.g. 16G (default: what is free now: MemAvailable, "
        "or the room under this job's cgroup limit when smaller). A fit whose estimate "
        "(from the descriptor sizes, neighbours, sparse points and targets; docs/cli.md) "
        "exceeds it is refused before it starts.",
    )(f)


def _memory(text: str | None) -> int | None:
    from mlpdesign.kernels.blocks import parse_memory

    return parse_memory(text)


@click.command("fit")
@click.argument("labelled", metavar="LABELLED.xyz", type=click.Path(dir_okay=False))
@output_option("Output model folder (gap.xml, gap_fit.log, fit.json, train.xyz).")
@fit_options
@click.option("-v", "--verbose", is_flag=True, help="Echo gap_fit's log while it runs.")
@click.option(
    "--no-reuse",
    is_flag=True,
    help="Refit even when OUTPUT holds a fit of the same inputs (by default such a model is "
    "kept, as crossval does; replacing it needs -f/--force).",
)
@click.option("--reuse", is_flag=True, hidden=True, expose_value=False, help="Old: the default.")
@memory_options
@force_option
@quiet_option
def command(
    labelled,
    output,
    options,
    verbose,
    no_reuse,
    memory_limit,
    ignore_memory,
    force,
    quiet,
) -> None:
    """Fit a GAP on a labelled set with quippy-ase's gap_fit.

    The gap string is the store's (the kernel the design was made with), with sparse
    settings added: --n-sparse/--sparse-method, else n_sparse/sparse_method of the
    string, else soap 500 cur_points and distance_2b 20 uniform. e0 is the average
    energy per atom unless --e0 is given. gap_fit's log is streamed into the model
    folder (and to stderr with -v); wall time and peak memory are reported and kept in
    fit.json. When gap_fit fails, its own message is shown and its log kept beside the
    (not created) model folder.

    An OUTPUT whose fit.json records the same inputs (the labelled file's bytes, the
    gap_fit arguments, the quippy-ase version) is kept as it is: a rerun (a Makefile
    after 'touch') refits nothing. Other inputs into an existing OUTPUT need -f/--force.

    Before gap_fit starts, its peak memory is estimated and said on stderr; a fit that
    would not fit in the memory available (or --memory-limit) is refused, exit 2, unless
    --ignore-memory.

    \b
    Examples:
      mlpdesign fit labelled.xyz --store pool.h5 -o model/
      mlpdesign fit labelled.xyz --store pool.h5 --n-sparse soap=200 \\
          --sigma 0.001,0.05,0.05 -o model/
      mlpdesign fit labelled.xyz --store pool.h5 -o model/ -f --no-reuse   # refit anyway
      mlpdesign fit labelled.xyz -o model/ \\
          --gap "distance_2b cutoff=7.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3"
    """
    from mlpdesign.gap.fit import fit

    echo = (lambda line: click.echo(f"gap_fit: {line}", err=True)) if verbose else None
    res = fit(
        labelled,
        output,
        options,
        force=force,
        echo=echo,
        reuse=not no_reuse,
        announce=None if quiet else (lambda line: click.echo(line, err=True)),
        memory_limit=memory_limit,
        ignore_memory=ignore_memory,
    )
    if not quiet and res.reused:
        click.echo(f"{output}: inputs unchanged, model kept (--no-reuse refits)", err=True)
    elif not quiet:
        mem = "?" if res.peak_rss_mib is None else f"{res.peak_rss_mib:.0f} MiB"
        click.echo(
            f"fitted {res.n_configs} configurations in {res.wall_s:.1f} s "
            f"(gap_fit peak memory {mem}) -> {output}/gap.xml",
            err=True,
        )
