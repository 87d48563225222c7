"""``mlpdesign label``: stand-in labels (energy, forces, virial) from a classical potential."""

from __future__ import annotations

import click

from .options import file_option, force_option, output_option, quiet_option


@click.command("label")
@click.argument("input_file", metavar="INPUT.xyz", type=click.Path(dir_okay=False))
@output_option("Output labelled extxyz file (dft_energy, dft_forces, dft_virial); - for stdout.")
@file_option(
    "--eam",
    "eam",
    help="LAMMPS EAM potential file (.eam, .eam.alloy, .eam.fs), evaluated with "
    "matscipy's fast EAM calculator.",
)
@click.option(
    "--calculator",
    "calculator",
    default=None,
    metavar="MODULE:CLASS",
    help="Any ASE calculator, e.g. ase.calculators.emt:EMT.",
)
@click.option(
    "--calc-arg",
    "calc_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keyword argument for --calculator (repeatable; JSON values allowed).",
)
@click.option("--energy-only", is_flag=True, help="Write energies only: no forces, no virials.")
@click.option("--no-virial", is_flag=True, help="Do not compute stresses/virials.")
@click.option("--no-forces", is_flag=True, hidden=True, help="Old: no forces (virials kept).")
@force_option
@quiet_option
def command(
    input_file, output, eam, calculator, calc_args, energy_only, no_virial, no_forces, force, quiet
) -> None:
    """Label configurations with a classical potential standing in for DFT.

    Writes the same keys and conventions as 'collect': dft_energy (eV), dft_forces
    (eV/A) and dft_virial (eV, = -stress x volume, 9 numbers) on each configuration;
    every other key of the input (candidate_id, config_type, ...) is kept. Use it to
    check a design end to end (fit, crossval) before running any DFT.

    The Mendelev-Ackland Zr potential ships in Debian's lammps-data package:
    'apt-get download lammps-data && dpkg -x lammps-data_*.deb x' then
    x/usr/share/lammps/potentials/Zr_mm.eam.fs ('make third_party/Zr_mm.eam.fs' does this).

    \b
    Examples:
      mlpdesign label train.xyz --eam Zr_mm.eam.fs -o labelled.xyz
      mlpdesign label train.xyz --eam Zr_mm.eam.fs -o - | head   # extxyz on stdout
      mlpdesign label train.xyz --calculator ase.calculators.emt:EMT -o labelled.xyz
      mlpdesign label train.xyz --calculator ase.calculators.lj:LennardJones \\
          --calc-arg sigma=2.9 --calc-arg epsilon=0.3 -o labelled.xyz
    """
    from mlpdesign.errors import MlpdesignError
    from mlpdesign.gap.label import calculator_from_spec, eam_calculator, label, parse_calc_args
    from mlpdesign.progress import progress

    if (eam is None) == (calculator is None):
        raise MlpdesignError("give exactly one of --eam FILE or --calculator MODULE:CLASS")
    if calc_args and calculator is None:
        raise MlpdesignError("--calc-arg goes with --calculator")
    calc = (
        eam_calculator(eam)
        if eam is not None
        else calculator_from_spec(calculator, parse_calc_args(calc_args))
    )
    n = label(
        input_file,
        output,
        calc,
        forces=not (energy_only or no_forces),
        virial=not (energy_only or no_virial),
        force=force,
        progress_factory=lambda total: progress(total, "label", "cfg", not quiet),
    )
    if not quiet:
        where = "standard output" if output == "-" else output
        click.echo(f"labelled {n} configurations -> {where}", err=True)
