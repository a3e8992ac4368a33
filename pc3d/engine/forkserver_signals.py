"""Preloaded by the forkserver that starts the DataLoader workers (`pc3d.engine.data.worker_context`).

There it ignores SIGTERM: a SIGTERM to the whole process group or job (SLURM's) would end the forkserver, and a
forkserver worker whose parent died ends its loop (torch's watchdog), so the run would fail at the next batch
instead of stopping at the step boundary. The forkserver still exits when the trainer does (multiprocessing closes
its pipe). Its children get the default SIGTERM back as they are forked. Imported anywhere else, nothing happens.
"""
from __future__ import annotations

import os
import signal
import sys


def imported_by_forkserver() -> bool:
    """Whether this import runs inside multiprocessing's forkserver `main` (its preload step)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return True
        frame = frame.f_back
    return False


if imported_by_forkserver():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
