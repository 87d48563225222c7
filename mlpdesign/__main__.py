"""``python -m mlpdesign``: the same as the ``mlpdesign`` command."""

from mlpdesign.cli import cli

if __name__ == "__main__":
    cli(prog_name="mlpdesign")
