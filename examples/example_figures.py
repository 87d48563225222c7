"""What the figure examples share: a headless pyplot, and the saved figure with the results."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(fig, path: Path, design, psi, **results) -> dict:
    """Save ``fig`` to ``path`` (no software stamp: the same bytes each run) and return the
    design, its Psi, ``results`` and the figure's path."""
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    pyplot().close(fig)
    return {"design": design, "psi": psi, **results, "figure": path}
