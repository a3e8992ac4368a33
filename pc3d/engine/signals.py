"""SIGINT / SIGTERM during training: remember the request, let the trainer stop at the next step
boundary (after saving a checkpoint). A second SIGINT interrupts at once (KeyboardInterrupt).

Handlers are installed only in the main thread, and the previous handlers come back on exit.
"""
from __future__ import annotations

import signal
import threading


class StopRequest:
    """Context manager; `signum` is the first signal received (None while none was)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
