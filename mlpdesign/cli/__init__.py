"""The ``mlpdesign`` command: a click group whose subcommands are thin wrappers over the library.

Each subcommand lives in its own module here (``mlpdesign/cli/<name>.py``) and exposes a
click command called ``command``; add the module name to ``COMMANDS`` to register it.
Library errors (:class:`mlpdesign.errors.MlpdesignError`) become one line on stderr and a
non-zero exit code; nothing here does science.
"""

from __future__ import annotations

import importlib
import sys

import click

from mlpdesign import __version__
from mlpdesign.errors import MlpdesignError

#: Subcommand modules, in the order ``--help`` lists them (pipeline order).
COMMANDS = [
    "generate",
    "tune",
    "describe",
    "merge",
    "info",
    "select",
    "score",
    "write",
    "vasp",
    "collect",
    "gap_command",
    "label",
    "fit",
    "crossval",
    "report",
]


class CliError(click.ClickException):
    """A one-line error with the exit code chosen by the library."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:  # noqa: D102 - click API
        from mlpdesign.mpi import launched_rank, rank_size

        try:
            rank = rank_size()[0]
        except MlpdesignError:  # a launcher but no mpi4py: the rank from its environment
            rank = launched_rank()
        if rank == 0:  # under MPI every rank fails alike: one line, from rank 0
            click.echo(f"mlpdesign: error: {self.format_message()}", err=True)


def usage_error(e: click.UsageError) -> CliError:
    """Click's option and usage errors as one line naming the command (exit 2)."""
    where = e.ctx.command_path.replace("cli", "mlpdesign", 1) if e.ctx is not None else ""
    where = where if where.startswith("mlpdesign") else f"mlpdesign {where}".strip()
    msg = " ".join(e.format_message().split())
    head = "" if where == "mlpdesign" else f"{where}: "
    return CliError(f"{head}{msg} (see '{where} --help')", 2)


def os_error_line(e: OSError) -> str:
    """``<path>: <strerror>`` of an OS error (the path where the error names one)."""
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    return f"{where}{e.strerror or ' '.join(str(e).split())}"


class Group(click.Group):
    """Keeps pipeline order in ``--help`` and turns library and option errors into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            raise usage_error(e) from None

    def invoke(self, ctx: click.Context):
        from mlpdesign.io.lock import release_all

        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise usage_error(e) from None
        except MlpdesignError as e:
            raise CliError(str(e), e.exit_code) from None
        except OSError as e:  # no access, disk full, I/O error: one line naming the path
            raise CliError(os_error_line(e), 2) from None
        finally:
            release_all()  # the outputs' locks (kept by a failed run until here)


@click.group(
    cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, "-V", "--version", prog_name="mlpdesign")
def cli() -> None:
    """Design training sets for GAP interatomic potentials before any DFT is run.

    \b
    The pipeline (each stage reads the previous stage's file):
      generate  -> pool.xyz        deformed hcp/fcc/bcc crystals
      tune      -> tune/           descriptor settings that keep overlapping and orthogonal
                                   pairs rare, on a sample (prints the --gap for describe)
      describe  -> pool.h5         QUIP SOAP + distance_2b descriptors (HDF5)
      select    -> selection.h5    greedy conditional max-min design on the GAP kernel
      write     -> train.xyz       the chosen configurations, ready for VASP and gap_fit
      vasp      -> runs/           VASP run folders (POSCAR, INCAR, KPOINTS[, POTCAR])
      collect   -> labelled.xyz    VASP results back as a gap_fit-ready training set
      report    -> report/         label-free quality of designs, with figures

    \b
    Checking a design before DFT (a classical potential stands in for DFT):
      label     -> labelled.xyz    energies, forces, virials from an ASE calculator / EAM
      fit       -> model/          gap_fit with the store's gap string
      crossval  -> cv/             every model on every set (the paper's fig. 6)

    \b
    Example:
      mlpdesign generate -n 2000 --seed 1 -o pool.xyz

    Run 'mlpdesign COMMAND --help' for the options and examples of each stage.
    Exit codes: 0 success, 1 finished with failures, 2 bad input (one line on stderr).
    """


for _name in COMMANDS:
    cli.add_command(importlib.import_module(f".{_name}", __name__).command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="mlpdesign")
