"""Progress reporting: tqdm on a terminal, a plain log line every few percent otherwise.

Batch jobs (SLURM, Makefiles) redirect stderr to a log; there a bar full of carriage
returns is noise, so we print one line per ``every`` percent with rate and time left.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class _LogProgress:
    """Minimal tqdm-like object that prints plain lines with rate and ETA."""

    def __init__(
        self, total: int, desc: str, unit: str, stream: TextIO, every: float, initial: int = 0
    ) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n = initial
        self._start_n = initial
        self._t0 = time.monotonic()
        self._step = max(1, int(total * every / 100)) if total else 1
        self._next = initial + self._step
        self.postfix = ""

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n >= self._next or (self.total and self.n >= self.total):
            self._next = self.n + self._step
            self._emit()

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.postfix = s

    def _emit(self) -> None:
        dt = max(time.monotonic() - self._t0, 1e-9)
        rate = (self.n - self._start_n) / dt
        pct = 100.0 * self.n / self.total if self.total else 0.0
        left = (self.total - self.n) / rate if rate > 0 and self.total else float("nan")
        extra = f" {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: {self.n}/{self.total} ({pct:.0f}%) {rate:.1f} {self.unit}/s, "
            f"{left:.0f} s left{extra}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        pass

    def __enter__(self) -> _LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    total: int,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
    every: float = 5.0,
    stream: TextIO | None = None,
):
    """Return a progress object with ``update(k)``, ``set_postfix_str(s)`` and ``close()``.

    A tqdm bar when ``stream`` (default stderr) is a terminal, plain lines otherwise,
    nothing when ``enabled`` is False.
    """
    stream = stream or sys.stderr
    if not enabled:
        return tqdm(total=total, disable=True)
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=stream,
            initial=initial,
            dynamic_ncols=True,
            smoothing=0.1,
        )
    return _LogProgress(total, desc, unit, stream, every, initial=initial)
