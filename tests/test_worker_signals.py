"""DataLoader workers and SIGTERM: a foreign one (a group's, a job's) is left to the trainer, the loader's own
ends the worker at once, and the forkserver outlives a group's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="needs sigwaitinfo (Linux)")

SCRIPT = """
import os, subprocess, sys, time
import torch
from torch.utils.data import DataLoader, Dataset
from pc3d.engine.data import init_worker, worker_context


class Slow(Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, i):
        if i >= STUCK_FROM:
            time.sleep(600)
        return torch.tensor([i, os.getpid()])


def alive(pid):
    return subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode == 0


if __name__ == "__main__":
    loader = DataLoader(Slow(), batch_size=1, num_workers=1, worker_init_fn=init_worker,
                        multiprocessing_context=worker_context(1))
    it = iter(loader)
    worker = int(next(it)[0, 1])
ACTION
    print("ok", flush=True)
"""


def run(tmp_path: Path, action: str, stuck_from: int = 1000) -> subprocess.CompletedProcess:
    """Run SCRIPT with `action` (its lines see `it`, `worker`, `alive`) as a file: the forkserver's workers import
    their dataset class from it."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.replace("STUCK_FROM", str(stuck_from))
                      .replace("ACTION", textwrap.indent(textwrap.dedent(action).strip(), " " * 4)))
    return subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PC3D_THREADS": "1"})


def test_a_worker_keeps_serving_after_a_foreign_sigterm(tmp_path):
    """SIGTERM from another process (a `kill` the script runs) is ignored: the next batches come from the same
    worker."""
    out = run(tmp_path, """
        subprocess.run(["kill", "-TERM", str(worker)], check=True)
        time.sleep(0.5)
        pids = {int(next(it)[0, 1]) for _ in range(5)}
        assert pids == {worker}, (pids, worker)
        del it
    """)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_the_loader_still_ends_a_stuck_worker_with_its_own_sigterm(tmp_path):
    """A worker blocked in __getitem__ does not answer the loader's shutdown; the loader then sends SIGTERM itself,
    and the worker must go (a worker that ignored every SIGTERM hung the process's exit)."""
    out = run(tmp_path, """
        del it
        assert not alive(worker), "the stuck worker outlived its loader"
    """, stuck_from=1)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_the_forkserver_outlives_a_sigterm_to_the_group(tmp_path):
    """Its workers end their loop when it dies (torch's watchdog watches their parent)."""
    out = run(tmp_path, """
        from multiprocessing import forkserver
        server = forkserver._forkserver._forkserver_pid
        subprocess.run(["kill", "-TERM", str(server)], check=True)
        time.sleep(6)  # longer than the workers' watchdog interval (5 s)
        assert alive(server)
        assert {int(next(it)[0, 1]) for _ in range(5)} == {worker}
        del it
    """)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
