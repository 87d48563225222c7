"""What the benchmarks share: a timed call, the machine's name, and the results file."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path


def timed(f, *a, **kw):
    """``f(*a, **kw)`` and its wall-clock seconds."""
    t = time.perf_counter()
    out = f(*a, **kw)
    return out, time.perf_counter() - t


def machine() -> str:
    """The host and its processor, as the results files record them."""
    return f"{platform.node()} ({platform.processor() or platform.machine()})"


def write_results(path: Path, doc: dict, no_write: bool = False) -> None:
    """Write ``doc`` to ``path`` as indented JSON and say so (unless ``no_write``)."""
    if not no_write:
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {path}")
