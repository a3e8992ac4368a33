"""Progress of a long step: a tqdm bar when stderr is a terminal, plain periodic lines otherwise.

    with Progress(total=len(frames), desc="simulate kitti", unit="frame") as bar:
        for frame in frames:
            ...
            bar.update()

    for item in track(items, desc="create kitti train"):   # the same, wrapping an iterable
        ...

Logs and CI output stay readable: without a terminal there is no carriage-return bar, only a line
every `interval` seconds and one at the end.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _print_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Progress:
    """Counts units of work done out of `total` (None: unknown).

    enabled=False reports nothing (e.g. on non-main ranks). log receives the plain lines when
    stderr is not a terminal (default: print to stderr; the engine passes its logger's info).
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", *, enabled: bool = True,
                 interval: float = 10.0, log: Callable[[str], None] = _print_line):
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled, self.interval, self.log = enabled, float(interval), log
        self.n = 0
        self.interactive = enabled and sys.stderr.isatty()
        self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True) if self.interactive else None
        self._start = self._last = time.monotonic()

    def update(self, count: int = 1) -> None:
        """Add `count` units done."""
        self.update_to(self.n + count)

    def update_to(self, done: int) -> None:
        """Set the units done to `done` (for callbacks that report a running total)."""
        step, self.n = done - self.n, done
        if self._bar is not None:
            self._bar.update(step)
        elif self.enabled and time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            self.log(self._line())

    def close(self, failed: bool = False) -> None:
        """Close the bar, or write the final line (none when the step failed: its error says enough)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and not failed:
            self.log(self._line() + ", done")
        self.enabled = False

    def _line(self) -> str:
        elapsed = time.monotonic() - self._start
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        rate = f", {self.n / elapsed:.2f} {self.unit}/s" if elapsed > 0 else ""
        return f"{self.desc}: {done} {self.unit}{share}, {elapsed:.1f} s{rate}"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(failed=exc_type is not None)


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
          **kwargs) -> Iterator[T]:
    """Yield the items of `iterable`, reporting progress (total default: len(iterable) when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(total, desc, unit, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update()
