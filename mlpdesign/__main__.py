"""``python -m mlpdesign``: the same as the ``mlpdesign`` command."""

from .cli import cli

if __name__ == "__main__":
    cli(prog_name="mlpdesign")
