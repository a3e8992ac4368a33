"""Who else had the CPU while a benchmark ran, so a table measured on a busy machine says so.

    before = cpu_share.snapshot()
    ...run the suite...
    shares = cpu_share.since(before)      # {"steal": 0.39, "others": 0.01} or None (no /proc/stat)

Both figures are shares of all the machine's CPU time over the interval (every core, from the first line
of /proc/stat, in clock ticks):
- `steal`: time the hypervisor ran someone else's virtual CPU while ours wanted to run. A guest cannot
  see this load any other way: top shows the machine idle, yet every kernel runs slower (on one 2-core VM
  the hypervisor took 40 % of the time and the same backbone step ranged 1.7-3.9 s).
- `others`: busy time (user, nice, system, irq, softirq) not spent by this process or its descendants, i.e.
  other processes on this machine. Ours are this process and the children it waited for (`getrusage`), and
  every live descendant with the children it waited for (/proc/<pid>/stat): a DataLoader's workers under
  multiprocessing's forkserver are children of the forkserver, which this process never waits for (counted
  as others, they flagged the `data` suite at 29-37 % "other processes" on a quiet machine).
Ratios of two times taken in the same minutes survive a steady load better than times do, but not a load
that comes and goes; `NOT_QUIET` is where the benchmark warns.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass

FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
BUSY = ("user", "nice", "system", "irq", "softirq")
NOT_QUIET = 0.05  # above this share of stolen or foreign CPU time a table is flagged


def parse_proc_stat(text: str) -> dict[str, int]:
    """Clock ticks of the whole machine by kind, from /proc/stat's aggregate `cpu` line (guest time is
    already inside user / nice, so it is not read)."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:1 + len(FIELDS)]]
            values += [0] * (len(FIELDS) - len(values))  # kernels older than 2.6.11 have no steal column
            return dict(zip(FIELDS, values, strict=True))
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def parse_pid_stat(text: str) -> tuple[int, int]:
    """(parent pid, clock ticks of user + system time of the process and of the children it waited for) from a
    /proc/<pid>/stat line; the command name in parentheses may hold spaces and parentheses itself."""
    fields = text[text.rindex(")") + 2:].split()  # field 3 (state) onwards
    return int(fields[1]), sum(int(v) for v in fields[11:15])  # ppid; utime, stime, cutime, cstime


def descendant_ticks(root: int | None = None, proc: str = "/proc") -> int:
    """Clock ticks (parse_pid_stat's) of every live descendant of `root` (default: this process); 0 where
    /proc cannot be read. A process that ends between the listing and its read is left out."""
    root = os.getpid() if root is None else root
    parents: dict[int, tuple[int, int]] = {}
    try:
        pids = [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/stat") as f:
                parents[pid] = parse_pid_stat(f.read())
        except (OSError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        total += parents[pid][1]
        stack.extend(children.get(pid, []))
    return total


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process, of the children it has waited for, and of its live
    descendants with the children they have waited for."""
    total = descendant_ticks() / os.sysconf("SC_CLK_TCK")
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass(frozen=True)
class Snapshot:
    ticks: dict[str, int] | None  # None where /proc/stat cannot be read
    own_seconds: float


def snapshot(path: str = "/proc/stat") -> Snapshot:
    try:
        with open(path) as f:
            ticks = parse_proc_stat(f.read())
    except (OSError, ValueError):
        ticks = None
    return Snapshot(ticks, own_cpu_seconds())


def shares(before: Snapshot, after: Snapshot, ticks_per_second: float) -> dict[str, float] | None:
    """{"steal", "others"} as shares of the machine's CPU time between two snapshots (None without ticks)."""
    if before.ticks is None or after.ticks is None:
        return None
    delta = {k: after.ticks[k] - before.ticks[k] for k in FIELDS}
    total = sum(delta.values())
    if total <= 0:
        return None
    own = (after.own_seconds - before.own_seconds) * ticks_per_second
    others = max(0.0, sum(delta[k] for k in BUSY) - own)
    return {"steal": delta["steal"] / total, "others": min(1.0, others / total)}


def since(before: Snapshot) -> dict[str, float] | None:
    return shares(before, snapshot(), os.sysconf("SC_CLK_TCK"))


def warning(suite: str, share: dict[str, float] | None) -> str | None:
    """The line a benchmark prints under its table when the machine was not quiet (None when it was)."""
    if share is None or max(share.values()) <= NOT_QUIET:
        return None
    return (f"WARNING: the machine was not quiet during '{suite}': the hypervisor took {share['steal']:.0%} of "
            f"the CPU time (steal) and other processes {share['others']:.0%}. Its times, and ratios of times "
            f"not taken side by side, do not compare with a quiet run; run it again alone.")
