"""Options shared by several subcommands, written once: one vocabulary for every command.

``-f/--force``, ``-j/--jobs`` (processes or threads), ``-q/--quiet``, ``--seed``, ``-o``,
``--shard`` and ``--format`` (one set per kind: :data:`FILE_FORMATS` for what a command writes
to a file, :data:`PRINT_FORMATS` for what it prints) mean the same wherever they appear.
Old spellings stay as hidden aliases (:class:`AliasOption`): accepted, not shown in ``--help``.
The typed builders (:func:`int_option`, :func:`float_option`, :func:`choice_option`,
:func:`file_option`) write a command's own options in one line each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

#: ``--format`` of a command that prints a result on stdout
PRINT_FORMATS = ("text", "json", "none")


class AliasOption(click.Option):
    """An option whose ``hidden_names`` (old spellings) work but are not shown in ``--help``."""

    def __init__(self, *args, hidden_names: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_names = tuple(hidden_names)

    def get_help_record(self, ctx: click.Context):  # noqa: D102 - click API
        shown = [o for o in self.opts if o not in self.hidden_names]
        opts, self.opts = self.opts, shown
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def _typed_option(
    names: tuple[str, ...], kind: click.ParamType | type, default: object, help: str, **kw: object
) -> Callable:
    """``click.option(*names)`` of type ``kind``; a default other than None shows in ``--help``."""
    if default is not None:
        kw.setdefault("show_default", True)
    return click.option(*names, type=kind, default=default, help=help, **kw)


def int_option(
    *names: str, default: int | None = None, help: str, min: int | None = None, **kw: object
) -> Callable:
    """An integer option; ``min``: the least value accepted (a ``click.IntRange``)."""
    kind = int if min is None else click.IntRange(min=min)
    return _typed_option(names, kind, default, help, **kw)


def float_option(
    *names: str, default: float | None = None, help: str, min: float | None = None, **kw: object
) -> Callable:
    """A float option; ``min``: the least value accepted (a ``click.FloatRange``)."""
    kind = float if min is None else click.FloatRange(min=min)
    return _typed_option(names, kind, default, help, **kw)


def choice_option(
    *names: str, choices: Sequence[str], default: str | None = None, help: str, **kw: object
) -> Callable:
    """An option whose value is one of ``choices``."""
    return _typed_option(names, click.Choice(choices), default, help, **kw)


def file_option(*names: str, help: str, **kw: object) -> Callable:
    """A file path (a folder is refused); none by default."""
    return _typed_option(names, click.Path(dir_okay=False), None, help, **kw)


force_option = click.option(
    "-f", "--force", is_flag=True, help="Overwrite an existing output file (default: refuse)."
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress output.")


def seed_option(
    default: int = 1, help: str = "Seed of every random draw (same seed, same bytes)."
) -> Callable:
    """``--seed N``: the seed of a command's random draws."""
    return int_option("--seed", default=default, help=help)


def output_option(help: str, required: bool = True) -> Callable:
    return click.option(
        "-o", "--output", "output", type=click.Path(dir_okay=True), required=required, help=help
    )


jobs_option = int_option("-j", "--jobs", default=1, min=1, help="Number of worker processes.")


def print_format_option(default: str = "text", help: str = "") -> Callable:
    """``--format text|json|none``: what a command prints on stdout."""
    return choice_option(
        "--format",
        "fmt",
        choices=PRINT_FORMATS,
        default=default,
        help=help or "What to print on stdout: text, JSON, or nothing (the exit status only).",
    )


def shard_type(text: str) -> tuple[int, int]:
    """Parse ``i/n`` (1-based) as used by SLURM array tasks."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected i/n, e.g. 3/16, got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise click.BadParameter(f"expected 1 <= i <= n, got {text!r}")
    return i, n


shard_option = click.option(
    "--shard",
    type=str,
    default=None,
    callback=lambda c, p, v: shard_type(v) if v else None,
    help="Do only part i of n (1-based), e.g. --shard $SLURM_ARRAY_TASK_ID/16.",
)


def _set_threads(ctx, param, value):
    from mlpdesign.kernels.core import set_threads

    set_threads(value)  # None: the default
    return value


threads_option = click.option(
    "-j",
    "--jobs",
    "--threads",
    "threads",
    cls=AliasOption,
    hidden_names=("--threads",),
    type=click.IntRange(min=1),
    default=None,
    expose_value=False,
    callback=_set_threads,
    help="Threads for kernel distances (default: $MLPDESIGN_THREADS, else every CPU for a "
    "serial select or report and one per MPI rank; loading the store uses every CPU). "
    "Same bits for any number.",
)


def memory_limit_option(help: str) -> Callable:
    """``--memory-limit SIZE`` plus the hidden ``--block-rows`` of the streamed paths."""

    def deco(f):
        f = click.option("--block-rows", type=click.IntRange(min=1), default=None, hidden=True)(f)
        text = (
            f"{help} The limit covers the kernel data, the O(N) state and the working space; "
            "the interpreter and libraries (about 60 MiB) come on top. Too small a limit "
            "is refused with the smallest that runs."
        )
        return click.option("--memory-limit", default=None, metavar="SIZE", help=text)(f)

    return deco


def gap_option(help: str) -> Callable:
    """``--gap STRING``: a GAP string, as for gap_fit's gap={...}."""
    return click.option("--gap", default=None, metavar="STRING", help=help)


def dtype_option(help: str, choices: tuple[str, ...] = ("float32", "float64")) -> Callable:
    """``--dtype float32|float64`` (default float64): the working or storage precision."""
    return choice_option("--dtype", choices=choices, default="float64", help=help)


def jitter_option(help: str, default: float | None = 1e-6, min: float | None = None) -> Callable:
    """``--jitter``: lambda added to the diagonal of K (MaxEnt's log det and sigma^2)."""
    return float_option("--jitter", default=default, min=min, help=help)


def file_format_option(choices: tuple[str, ...], help: str) -> Callable:
    """``--format``: the format of the file a command writes (default: from its suffix)."""
    return choice_option("--format", "fmt", choices=choices, help=help)


def balance_option(help: str) -> Callable:
    """``--balance``: normalise each descriptor's kernel on its own."""
    return click.option("--balance", is_flag=True, help=help)


def kernel_options(per_atom_help: str, no_normalize_help: str, dtype_help: str) -> Callable:
    """``--per-atom``, ``--no-normalize`` and ``--dtype`` of the kernel rows (select, score)."""

    def deco(f):
        f = dtype_option(dtype_help)(f)
        f = click.option("--no-normalize", is_flag=True, help=no_normalize_help)(f)
        return click.option("--per-atom", is_flag=True, help=per_atom_help)(f)

    return deco


def store_run_options(memory_help: str) -> Callable:
    """The closing options of a command over a whole store's kernel rows (select, score):
    ``--memory-limit`` (text ``memory_help``), ``-j/--jobs`` threads, ``-f``, ``-q``."""

    def deco(f):
        for option in (
            quiet_option,
            force_option,
            threads_option,
            memory_limit_option(memory_help),
        ):
            f = option(f)
        return f

    return deco
