"""tools/cpu_share.py: the share of CPU time stolen by the hypervisor or taken by other processes during a
benchmark, from hand-made /proc/stat lines."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import cpu_share  # noqa: E402
from cpu_share import Snapshot  # noqa: E402

# user nice system idle iowait irq softirq steal guest guest_nice (a 2-core machine, 100 ticks per second)
STAT = """cpu  1000 0 100 5000 10 0 5 200 0 0
cpu0 500 0 50 2500 5 0 2 100 0 0
cpu1 500 0 50 2500 5 0 3 100 0 0
intr 12345
"""


def ticks(user, system, idle, steal, nice=0, iowait=0, irq=0, softirq=0):
    return {"user": user, "nice": nice, "system": system, "idle": idle, "iowait": iowait, "irq": irq,
            "softirq": softirq, "steal": steal}


def test_the_aggregate_line_is_read_guest_time_is_not():
    assert cpu_share.parse_proc_stat(STAT) == ticks(1000, 100, 5000, 200, iowait=10, softirq=5)


def test_an_old_kernel_without_a_steal_column_reads_as_zero_steal():
    assert cpu_share.parse_proc_stat("cpu 1 2 3 4\n")["steal"] == 0


def test_a_file_without_the_cpu_line_is_refused():
    with pytest.raises(ValueError, match="cpu"):
        cpu_share.parse_proc_stat("intr 1\n")


def test_shares_of_steal_and_of_other_processes():
    # 10 s on 2 cores = 2,000 ticks: our process 6 s (600 ticks of the 700 busy), 500 stolen, 800 idle.
    before = Snapshot(ticks(1000, 100, 5000, 200), own_seconds=3.0)
    after = Snapshot(ticks(1650, 150, 5800, 700), own_seconds=9.0)
    share = cpu_share.shares(before, after, ticks_per_second=100)
    assert share == pytest.approx({"steal": 500 / 2000, "others": 100 / 2000})
    assert "25% of the CPU time (steal)" in cpu_share.warning("sparse", share)


def test_a_quiet_run_has_no_warning_and_our_own_busy_time_is_not_foreign():
    before = Snapshot(ticks(0, 0, 0, 0), own_seconds=0.0)
    after = Snapshot(ticks(1900, 50, 50, 0), own_seconds=19.3)  # 20 ticks not ours: 1 %, under the limit
    share = cpu_share.shares(before, after, ticks_per_second=100)
    assert share["steal"] == 0 and share["others"] == pytest.approx(0.01)
    assert cpu_share.warning("sparse", share) is None


def test_no_proc_stat_means_no_figure_and_no_warning(tmp_path):
    missing = cpu_share.snapshot(str(tmp_path / "stat"))
    assert missing.ticks is None
    assert cpu_share.shares(missing, missing, 100) is None
    assert cpu_share.warning("sparse", None) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux only")
def test_this_machines_proc_stat_parses_and_our_cpu_time_counts():
    before = cpu_share.snapshot()
    sum(i * i for i in range(2_000_000))  # some CPU time of our own
    after = cpu_share.snapshot()
    assert before.ticks is not None and set(before.ticks) == set(cpu_share.FIELDS)
    assert after.own_seconds > before.own_seconds


def test_a_pid_stat_line_with_a_command_name_of_spaces_and_parentheses():
    line = "4242 (a (b) c) S 17 4242 17 0 -1 4194560 100 0 0 0 30 5 7 2 20 0 1 0 9 1000 50"
    assert cpu_share.parse_pid_stat(line) == (17, 30 + 5 + 7 + 2)


def test_descendants_are_found_through_the_process_tree(tmp_path):
    """1 -> 10 -> 11 -> 12, and 20 beside 10: the descendants of 10 are 11 and 12."""
    for pid, ppid, busy in ((1, 0, 1000), (10, 1, 1), (11, 10, 20), (12, 11, 300), (20, 1, 4000)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (p) S {ppid} 0 0 0 -1 0 0 0 0 0 {busy} 0 0 0 20 0 1 0\n")
    assert cpu_share.descendant_ticks(10, str(tmp_path)) == 320
    assert cpu_share.descendant_ticks(20, str(tmp_path)) == 0
    assert cpu_share.descendant_ticks(10, str(tmp_path / "missing")) == 0


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux only")
def test_a_forkserver_childs_cpu_time_is_ours():
    """A forkserver's child is not ours to wait for (the forkserver reaps it), yet its time is ours, not another
    process's: before, a DataLoader's workers flagged a quiet machine."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    starter = context.Process(target=int)  # the forkserver is up before the first snapshot
    starter.start()
    starter.join()
    before = cpu_share.snapshot()
    worker = context.Process(target=_spin, args=(0.6,))
    worker.start()
    worker.join()
    after = cpu_share.snapshot()
    assert after.own_seconds - before.own_seconds > 0.4


def _spin(seconds: float) -> None:
    import time

    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
