"""``mlpdesign vasp``: VASP run directories (POSCAR, INCAR, KPOINTS, POTCAR) per configuration."""

from __future__ import annotations

import click

from .options import choice_option, force_option, int_option, output_option, quiet_option


@click.command("vasp")
@click.argument("configs", metavar="CONFIGS")
@output_option("Output folder: one run directory per configuration, plus runs.txt.")
@choice_option(
    "--preset",
    choices=("paper",),
    default="paper",
    help="INCAR preset. paper: single point with stress, ENCUT=600, ISMEAR=1 "
    "(Methfessel-Paxton) SIGMA=0.2, EDIFF=1E-6, PREC=Accurate.",
)
@click.option(
    "--incar",
    "incar",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set an INCAR key (repeatable), e.g. --incar ENCUT=500; KEY= removes it.",
)
@int_option(
    "--kpoints-length", help="Length of VASP's fully automatic k-mesh (KPOINTS 'Auto'); paper: 60."
)
@click.option(
    "--pp",
    default="PBE",
    show_default=True,
    help="PAW set for POTCAR (ASE's 'pp': PBE, LDA or a folder under VASP_PP_PATH).",
)
@click.option(
    "--setups",
    default="recommended",
    show_default=True,
    help="POTCAR variants (ASE's 'setups': recommended, minimal, GW).",
)
@force_option
@quiet_option
def command(configs, output, preset, incar, kpoints_length, pp, setups, force, quiet) -> None:
    """Write one VASP run directory per configuration of CONFIGS (extxyz).

    Each directory is named by candidate_id and holds POSCAR (atoms grouped by species;
    ase-sort.dat maps back), INCAR, KPOINTS and input.xyz (the configuration with all its
    info, read back by collect). POTCAR is assembled by ASE only when VASP_PP_PATH is
    set. The folder also gets runs.txt (one directory per line) and submit.slurm, an
    example SLURM array script over it (it skips runs that already have results).

    With --force on an existing folder, runs without results get fresh inputs and runs
    holding any VASP output (OUTCAR, vasprun.xml, OSZICAR, ...) are kept as they are and
    listed; nothing is deleted.

    \b
    Examples:
      mlpdesign vasp train.xyz -o runs/
      mlpdesign vasp train.xyz -o runs/ --incar ENCUT=500 --incar NCORE=8
      VASP_PP_PATH=$HOME/vasp/pp mlpdesign vasp train.xyz -o runs/ --kpoints-length 40
      cd runs && sbatch --array=1-$(wc -l < runs.txt)%50 submit.slurm
    """
    from mlpdesign.dft.vasp import write_vasp_inputs

    res = write_vasp_inputs(
        configs,
        output,
        preset=preset,
        incar=incar,
        kpoints_length=kpoints_length,
        pp=pp,
        setups=setups,
        force=force,
    )
    if res.kept:
        shown = ", ".join(res.kept[:10]) + (" ..." if len(res.kept) > 10 else "")
        click.echo(
            f"mlpdesign: kept {len(res.kept)} runs that already have results: {shown}", err=True
        )
    for w in res.warnings:
        click.echo(f"mlpdesign: warning: {w}", err=True)
    if not quiet:
        pot = "with POTCAR" if res.potcar else "without POTCAR (VASP_PP_PATH not set)"
        click.echo(
            f"wrote {len(res.runs)} VASP runs to {output} {pot}; list in {output}/runs.txt",
            err=True,
        )
