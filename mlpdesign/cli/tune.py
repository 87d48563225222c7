"""``mlpdesign tune``: choose the descriptor settings before the design (paper, section 3)."""

from __future__ import annotations

import click

from .inputs import min_distance_option
from .options import (
    balance_option,
    float_option,
    force_option,
    gap_option,
    int_option,
    jobs_option,
    output_option,
    print_format_option,
    quiet_option,
    seed_option,
)


def format_text(summary: dict) -> str:
    """One line per setting, then the recommended setting and its GAP string."""
    from mlpdesign.tune.figures import label

    recs = summary["settings"]
    width = max(len(label(r)) for r in recs)
    names = [t["name"] for t in recs[0]["terms"]]
    head = f"{'setting':<{width}}  overlap%  orthog.%  D2 1%     D2 50%   D2 99%   "
    head += "  ".join(f"{n} share of D2" for n in names)
    lines = [head]
    for r in recs:
        q = r["quantiles"]
        shares = "  ".join(f"{100 * t['d2_share']:>{len(t['name']) + 10}.2f}%" for t in r["terms"])
        mark = "  <- recommended" if r["index"] == summary["recommended"]["index"] else ""
        lines.append(
            f"{label(r):<{width}}  {100 * r['overlap_fraction']:8.3f}  "
            f"{100 * r['orthogonal_fraction']:8.3f}  {q['1%']:<8.4g} {q['50%']:<8.4g} "
            f"{q['99%']:<8.4g} {shares}{mark}"
        )
    lines.append("")
    lines.append(f"recommended: {label(recs[summary['recommended']['index']])}")
    lines.append(f'--gap "{summary["recommended"]["gap"]}"')
    return "\n".join(lines) + "\n"


@click.command("tune")
@click.argument("pool", nargs=-1, required=True)
@output_option("Output folder (summary.json, fractions.png, histograms.png).", required=False)
@gap_option("Starting GAP string, as for describe (default: describe's default for this pool).")
@click.option(
    "--vary",
    "vary",
    multiple=True,
    metavar="NAME:KEY=V1,V2,...",
    help="Values to try for one key of one descriptor (NAME: soap, distance_2b or the "
    "1-based position in --gap); KEY any descriptor or kernel key; KEY1,KEY2= moves keys in "
    "lock step. Repeat: the grid is every combination.",
)
@int_option(
    "--sample",
    default=500,
    min=2,
    help="Configurations drawn at random from the pool (all of them if fewer).",
)
@seed_option(help="Seed of the sample (same sample size and seed, same bytes).")
@float_option(
    "--overlap",
    default=1e-3,
    help="A pair overlaps when its D2 is below this (k > 1 - overlap/2; see docs/tune.md).",
)
@float_option(
    "--orthogonal",
    default=0.1,
    help="A pair is orthogonal when its D2 is above 2 - this (k < orthogonal/2).",
)
@float_option(
    "--tie",
    default=0.1,
    help="Settings scoring at most (1 + tie) x best + 1/pairs tie with the best; the "
    "cheaper descriptor wins.",
)
@balance_option("Measure with select's --balance kernel (each term normalised on its own).")
@print_format_option(
    help="What to print on stdout: a table and the recommended --gap, the summary JSON, or nothing."
)
@min_distance_option
@jobs_option
@force_option
@quiet_option
def command(
    pool,
    output,
    gap,
    vary,
    sample,
    seed,
    overlap,
    orthogonal,
    tie,
    balance,
    fmt,
    min_distance,
    jobs,
    force,
    quiet,
) -> None:
    """Choose descriptor settings that keep overlapping and orthogonal pairs rare.

    POOL: the inputs as for describe (any file ASE reads, several files or quoted globs,
    one pool). Draws --sample configurations of POOL at random (--seed), describes them once
    per distinct descriptor setting of the --vary grid (settings that differ only in kernel
    keys such as theta_uniform, delta or zeta reuse the rows) and computes every pairwise D2 with
    the kernel select would use (normalised; --balance as select's). Per setting it reports
    the fraction of overlapping pairs (D2 < --overlap: the kernel cannot tell them apart), of
    orthogonal pairs (D2 > 2 - --orthogonal: the kernel sees nothing in common, the clipping
    effect), D2 quantiles and each kernel term's share of D2, and recommends the setting with
    the smallest sum of both fractions (ties to the cheaper descriptor; docs/tune.md). Writes
    OUTPUT/summary.json, fractions.png and histograms.png, and prints the recommended GAP
    string, ready for 'describe --gap'.

    \b
    Examples:
      mlpdesign tune pool.xyz --sample 500 --seed 1 \\
          --vary soap:atom_sigma=0.1,0.15,0.3 --vary soap:cutoff=5.0,6.8 \\
          --vary distance_2b:theta_uniform=0.2,0.3,0.5 -o tune/
      mlpdesign tune pool.xyz --vary soap:l_max,n_max=6,8,10 --balance -j 2 -o tune/
    """
    from mlpdesign.progress import progress
    from mlpdesign.tune import json_dumps, run

    if output is None and fmt == "none":
        raise click.UsageError("nothing to do: give -o/--output or a --format to print")

    def log(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    res = run(
        list(pool),
        output,
        gap=gap,
        vary=vary,
        sample=sample,
        seed=seed,
        overlap=overlap,
        orthogonal=orthogonal,
        tie=tie,
        balance=balance,
        jobs=jobs,
        min_distance=min_distance,
        force=force,
        log=log,
        progress=lambda total, desc: progress(total, desc, unit="cfg", enabled=not quiet, every=25),
    )
    if fmt == "text":
        click.echo(format_text(res.summary), nl=False)
    elif fmt == "json":
        click.echo(json_dumps(res.summary), nl=False)
    if output is not None:
        log(f"wrote {output}/summary.json, fractions.png and histograms.png")
