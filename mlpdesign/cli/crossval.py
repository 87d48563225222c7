"""``mlpdesign crossval``: the paper's cross-validation of designs (one GAP per set)."""

from __future__ import annotations

import click

from .fit import fit_options, memory_options
from .options import AliasOption, force_option, jobs_option, output_option, quiet_option


@click.command("crossval")
@click.argument("sets", nargs=-1, required=True, metavar="NAME=LABELLED.xyz...")
@output_option("Output folder (models/, matrix.json, predictions.json, parity.png).")
@fit_options
@click.option(
    "--models-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the per-set models live (default: OUTPUT/models); share it between "
    "runs to reuse fits.",
)
@click.option(
    "--no-reuse",
    "--refit",
    "no_reuse",
    cls=AliasOption,
    hidden_names=("--refit",),
    is_flag=True,
    help="Fit every model again even if its inputs are unchanged (replacing an existing "
    "model needs -f/--force).",
)
@click.option("--no-figure", is_flag=True, help="Skip parity.png.")
@jobs_option
@memory_options
@force_option
@quiet_option
def command(
    sets,
    output,
    options,
    models_dir,
    no_reuse,
    no_figure,
    jobs,
    memory_limit,
    ignore_memory,
    force,
    quiet,
) -> None:
    """Cross-validate designs: fit one GAP per labelled set, test every model on every set.

    As in the paper (section 4, fig. 6): models are judged by the worst off-sample 0.99
    quantile of |dE| per atom, the highest over the sets a model was not trained on.
    Energies are predicted from descriptors computed once per configuration and each
    model's sparse points and weights (checked against quippy's Potential in the tests).
    An existing non-empty OUTPUT is refused unless -f/--force; with it, only the files
    crossval writes are replaced. A model whose inputs (labelled file's bytes, gap_fit
    arguments, quippy-ase version) are unchanged is reused, not refitted (--no-reuse
    refits), so a rerun with -f after a change refits only what changed. Before any
    fit, gap_fit's memory is estimated: the -j fits that run side by side must fit in
    the memory available (or --memory-limit), else the run is refused (--ignore-memory).

    \b
    Examples:
      mlpdesign crossval OPT1=opt1.xyz OPT2=opt2.xyz RND1=rnd1.xyz RND2=rnd2.xyz \\
          --store pool.h5 -o cv/
      mlpdesign crossval OPT=opt.xyz RND=rnd.xyz --store pool.h5 -o cv/ -f   # update
      mlpdesign crossval OPT=opt.xyz RND=rnd.xyz --store pool.h5 --n-sparse soap=200 -o cv/
    """
    from mlpdesign.gap.crossval import crossval, parse_sets, same_data_warnings
    from mlpdesign.progress import progress

    named = parse_sets(sets)
    for line in same_data_warnings(named):
        click.echo(f"mlpdesign: warning: {line}", err=True)
    echo = None if quiet else (lambda line: click.echo(line, err=True))
    res = crossval(
        named,
        output,
        options,
        models_dir=models_dir,
        reuse=not no_reuse,
        force=force,
        echo=echo,
        figure=not no_figure,
        memory_limit=memory_limit,
        ignore_memory=ignore_memory,
        jobs=jobs,
        progress_factory=lambda n, d: progress(n, d, "cfg", not quiet),
    )
    m = res.matrix
    names = m["models"]
    w = max(8, *(len(s) for s in names))
    click.echo("0.99 quantile of |dE| per atom (meV/atom); rows: models, columns: test sets")
    click.echo(" " * w + "".join(f"{s:>{w + 2}}" for s in names) + f"{'worst off':>{w + 4}}")
    for r in names:
        worst = m["worst_off_sample_q99"][r]
        ws = "-" if worst is None else f"{worst['value'] * 1e3:.3f}"
        click.echo(
            f"{r:<{w}}"
            + "".join(f"{m['matrix'][r][s]['q99'] * 1e3:>{w + 2}.3f}" for s in names)
            + f"{ws:>{w + 4}}"
        )
    if not quiet:
        click.echo(
            f"wrote {res.folder}/matrix.json, predictions.json"
            f"{'' if no_figure else ', parity.png'}",
            err=True,
        )
