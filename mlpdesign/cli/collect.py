"""``mlpdesign collect``: VASP results back to a gap_fit-ready extxyz training set."""

from __future__ import annotations

import click

from .options import choice_option, force_option, output_option, quiet_option


@click.command("collect")
@click.argument("runs", nargs=-1, required=True, metavar="RUNS...")
@output_option("Output extxyz file (labelled training set).")
@click.option(
    "--allow-failed",
    is_flag=True,
    help="Write the good runs even if some failed (failures are still listed).",
)
@choice_option(
    "--energy",
    choices=("free", "sigma0"),
    default="free",
    help="free: VASP's free energy (TOTEN; forces and stress are its derivatives); "
    "sigma0: extrapolated to zero smearing.",
)
@force_option
@quiet_option
def command(runs, output, allow_failed, energy, force, quiet) -> None:
    """Read finished VASP runs (vasprun.xml, else OUTCAR) into one extxyz file.

    RUNS is the folder written by 'mlpdesign vasp' (its runs.txt lists the runs, so a run
    that never started is reported too), a folder of run directories, or single runs.
    Each frame carries dft_energy (eV), dft_forces (eV/A), dft_virial (9 numbers, eV,
    = -stress x volume with ASE's sign, what gap_fit expects) and every info key of the
    configuration sent (candidate_id, config_type, ...), in run order.

    A run that is missing, crashed, cut off mid-write, not electronically converged (all
    NELM steps used) or holds other atoms than were sent is listed with its reason. Then
    nothing is written and the exit code is 1, unless --allow-failed.

    \b
    Examples:
      mlpdesign collect runs/ -o labelled.xyz
      mlpdesign collect runs/ -o labelled.xyz --allow-failed
      mlpdesign collect runs-a/ runs-b/ -o labelled.xyz --energy sigma0
    """
    from mlpdesign.dft.collect import collect_runs, find_runs, write_collected
    from mlpdesign.io.atomic import check_output
    from mlpdesign.progress import progress

    check_output(output, force)
    bar = progress(len(find_runs(list(runs))), "collect", unit="run", enabled=not quiet)
    results = collect_runs(list(runs), energy=energy, progress=bar)
    bar.close()
    failed = [r for r in results if r.atoms is None]
    for r in failed:
        click.echo(f"mlpdesign: failed run {r.name}: {r.reason}", err=True)
    if not quiet:
        for r in results:
            for note in r.notes:
                click.echo(f"mlpdesign: note: run {r.name}: {note}", err=True)
    res = write_collected(results, output, allow_failed=allow_failed, force=force)
    if not quiet:
        extra = f"; {len(failed)} failed runs left out" if failed else ""
        click.echo(f"wrote {res.written} of {len(results)} runs to {output}{extra}", err=True)
