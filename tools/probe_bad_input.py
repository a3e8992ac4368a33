"""Hostile-input probe: feed pc3d malformed, truncated, contradictory and out-of-range inputs and classify what it does.

    python tools/probe_bad_input.py [--only AREA[,AREA]] [--out DIR] [--timeout S] [--jobs N] [--keep] [--list]

A developer tool (issue #15, acceptance item 2). In a temporary folder it simulates small valid datasets
(KITTI, SemanticKITTI, Waymo v2, ScanNet, scene flow; pc3d.sim, narrow sensors so frames are small), writes
small checkpoints (a CenterPoint detector and a sparse U-Net segmentor, seeded and untrained, as
tests/conftest.py's experiment_checkpoint does, plus a 1-epoch `experiment=toy` run of tools/train.py),
then corrupts copies of them in many distinct ways, one case each, across five areas (the cases live in
tools/bad_input/, one module per area or data format):

    loaders      pc3d.data datasets (truncated / empty / NaN files, wrong columns and dtypes, duplicate ids,
                 unknown class names, negative sizes, label count mismatches, missing calib / poses / split
                 files, partial folders, zero-row or missing parquet components, wrong ply headers,
                 symlink loops, FIFOs, ...)
    tools        tools/*.py and `python -m pc3d` as subprocesses (wrong override types, nonexistent paths,
                 directories for files, unknown experiments, empty folders, conflicting flags, out-of-range
                 values); create_data / visualize are also driven in-process through their main(argv)
    inference    pc3d.infer readers through tools/infer.py's main(argv) (each reader, empty and bad frames
                 inside sequences, --strict)
    checkpoints  zero-byte, truncated, random bytes, pickled objects, other models' weights, missing config
    engine       pc3d.sparse / pc3d.voxel limits (int64 coordinates, huge spatial shapes, negative or
                 out-of-shape coordinates, duplicates, kernel_size / stride 0 or negative, channel mismatch,
                 empty tensors, NaN features, wrong dtypes); results are checked against a numpy reference

Each case is classified:

    OK-error        a pc3d error (pc3d.errors.Pc3dError; for a CLI: exit 2 and a '<tool>: error:' line on
                    stderr, no traceback) whose message names the file / frame / key involved
    OK-warning      succeeded with a warning (or a 'skipping' line) that counts what was dropped
    OK-valid        the input was legitimate and the result was checked correct
    FAIL-traceback  a foreign exception (or a printed traceback, or a crash of the process)
    FAIL-hang       no answer within --timeout seconds
    FAIL-silent     succeeded with data loss or a wrong result and no warning
    FAIL-unnamed    a pc3d error whose message does not name the file / frame / key
    FAIL-exit       (CLI) an error exit without traceback that breaks the entry-point rule (exit status
                    other than 2, or no '<tool>: error:' line), e.g. hydra's own multi-line errors
    FAIL-rejected   a legitimate input refused with an error

In-process cases run in worker subprocesses (so a hang is caught: the worker is killed after --timeout and
restarted after the hung case); CLI cases run as subprocesses with the same timeout, --jobs of them at a time.
The table (case, area, outcome, first line of message) and the counts per outcome are printed and written, with
every record, to <out>/probe.md and <out>/probe.json (default --out: a new temporary folder; never inside the
repository). --only restricts the areas; --list prints the cases without running them. Exit status: 0 when no
case failed, 1 otherwise. All 303 cases take about 80 s on 2 cores with --jobs 2 (2 minutes more with --jobs 1);
tests/test_probe_bad_input.py runs them all.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bad_input import AREAS, CASES, OUTCOMES, PYTHON, ROOT, Case, Ctx, first_line
from bad_input.fixtures import build_fixtures


def run_worker(work: Path, names: list[str], results: Path, timeout: float) -> None:
    """Run the named in-process cases one by one, appending {"start"} / {"result"} lines to `results`."""
    os.environ.pop("PC3D_DEBUG", None)
    import torch

    torch.set_num_threads(1)
    by_name = {c.name: c for c in CASES}
    with results.open("a") as log:
        for name in names:
            c = by_name[name]
            log.write(json.dumps({"start": name, "t": time.time()}) + "\n")
            log.flush()
            t0 = time.time()
            try:
                outcome, message = c.fn(Ctx(work, name, timeout))
            except Exception as error:  # noqa: BLE001 - a bug in the probe itself
                outcome, message = "PROBE-ERROR", f"{type(error).__name__}: {error} " + \
                    traceback.format_exc().splitlines()[-3].strip()
            rec = {"case": name, "area": c.area, "kind": c.kind, "outcome": outcome,
                   "message": str(message).replace(str(work), "$WORK"),
                   "seconds": round(time.time() - t0, 2)}
            log.write(json.dumps({"result": rec}) + "\n")
            log.flush()


def run_in_workers(work: Path, cases: list[Case], timeout: float, echo: Callable[[dict], None]) -> list[dict]:
    """Run `cases` in worker subprocesses; a case that exceeds `timeout` is FAIL-hang and the worker restarts."""
    pending = [c.name for c in cases]
    area = {c.name: c for c in cases}
    records: dict[str, dict] = {}
    results = work / "worker.jsonl"
    while pending:
        results.write_text("")
        proc = subprocess.Popen([PYTHON, __file__, "--worker", str(work), "--results", str(results),
                                 "--timeout", str(timeout), *pending],
                                cwd=work, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
        current, started, seen = None, time.time(), 0
        hung = None
        while True:
            time.sleep(0.3)
            lines = results.read_text().splitlines()
            for line in lines[seen:]:
                item = json.loads(line)
                if "start" in item:
                    current, started = item["start"], time.time()
                else:
                    rec = item["result"]
                    records[rec["case"]] = rec
                    pending.remove(rec["case"])
                    echo(rec)
                    current = None
            seen = len(lines)
            if proc.poll() is not None:
                break
            if current is not None and time.time() - started > timeout:
                hung = current
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if hung is None and current is not None:  # the worker died inside a case
            tail = [x for x in stderr.splitlines() if x.strip()]
            hung = current
            rec = {"case": current, "area": area[current].area, "kind": area[current].kind,
                   "outcome": "FAIL-traceback", "message": f"worker process died (exit {proc.returncode}): "
                                                           f"{tail[-1] if tail else ''}", "seconds": 0}
        elif hung is not None:
            rec = {"case": hung, "area": area[hung].area, "kind": area[hung].kind, "outcome": "FAIL-hang",
                   "message": f"no answer within {timeout:.0f} s (worker killed)", "seconds": timeout}
        elif pending:  # the worker exited between cases
            rec = None
            hung = pending[0]
            tail = [x for x in stderr.splitlines() if x.strip()]
            rec = {"case": hung, "area": area[hung].area, "kind": area[hung].kind, "outcome": "PROBE-ERROR",
                   "message": f"worker exited (rc {proc.returncode}) before this case: {tail[-1] if tail else ''}",
                   "seconds": 0}
        else:
            break
        records[hung] = rec
        pending.remove(hung)
        echo(rec)
    return [records[c.name] for c in cases]


def run_cli_case(c: Case, work: Path, timeout: float) -> dict:
    """One cli case (its tool runs as a subprocess in the case's own folder): its record."""
    t0 = time.time()
    try:
        outcome, message = c.fn(Ctx(work, c.name, timeout))
    except Exception as error:  # noqa: BLE001 - a bug in the probe itself
        outcome, message = "PROBE-ERROR", f"{type(error).__name__}: {error}"
    return {"case": c.name, "area": c.area, "kind": c.kind, "outcome": outcome,
            "message": str(message).replace(str(work), "$WORK"), "seconds": round(time.time() - t0, 2)}


def markdown(records: list[dict], info: dict) -> str:
    lines = ["# pc3d hostile-input probe", "", f"{len(records)} cases; fixtures built in {info.get('seconds')} s", "",
             "| case | area | outcome | first line of message |", "| --- | --- | --- | --- |"]
    for r in records:
        msg = first_line(r["message"]).replace("|", "\\|")
        lines.append(f"| {r['case']} | {r['area']} | {r['outcome']} | {msg[:300]} |")
    counts = Counter(r["outcome"] for r in records)
    lines += ["", "| outcome | cases |", "| --- | --- |"]
    lines += [f"| {o} | {counts[o]} |" for o in (*OUTCOMES, "PROBE-ERROR") if counts[o]]
    lines += ["", "| area | cases | failures |", "| --- | --- | --- |"]
    for area in AREAS:
        rs = [r for r in records if r["area"] == area]
        if rs:
            lines.append(f"| {area} | {len(rs)} | {sum(not r['outcome'].startswith('OK') for r in rs)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated areas: " + ", ".join(AREAS))
    p.add_argument("--out", type=Path, help="folder for probe.json and probe.md (default: a new temporary folder)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as a hang (120)")
    p.add_argument("--work", type=Path, help="work folder for fixtures and case copies (default: a temporary one)")
    p.add_argument("--jobs", type=int, default=1, help="cli cases (subprocesses) run this many at a time (1)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--case", action="append", default=[], help="run only cases whose name contains this (repeatable)")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    p.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.names, args.results, args.timeout)
        return 0
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    areas = AREAS if not args.only else tuple(a.strip() for a in args.only.split(","))
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        p.error(f"--only: unknown area(s) {unknown}; choose from {', '.join(AREAS)}")
    cases = [c for c in CASES if c.area in areas and (not args.case or any(s in c.name for s in args.case))]
    if args.list:
        for c in cases:
            print(f"{c.area:12s} {c.kind:4s} {c.name}")
        print(f"{len(cases)} cases ({Counter(c.area for c in cases)})")
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="pc3d_probe_out_"))
    if out.resolve().is_relative_to(ROOT) and not out.resolve().is_relative_to(ROOT / "outputs"):
        p.error(f"--out {out} is inside the repository; pick a folder outside it (or under outputs/)")
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="pc3d_probe_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"probe: {len(cases)} cases; work folder {work}; building fixtures ...", flush=True)
    info = build_fixtures(work, args.timeout)
    print(f"fixtures ready in {info['seconds']} s (toy training exit {info['toy_rc']})", flush=True)

    def echo(rec):
        print(f"  {rec['outcome']:15s} {rec['case']:50s} {rec['seconds']:6.1f}s  {first_line(rec['message'])[:150]}",
              flush=True)

    lib = [c for c in cases if c.kind == "lib"]
    cli = [c for c in cases if c.kind == "cli"]
    records = run_in_workers(work, lib, args.timeout, echo) if lib else []
    with ThreadPoolExecutor(args.jobs) as pool:  # each cli case waits on its own subprocesses
        for rec in pool.map(lambda c: run_cli_case(c, work, args.timeout), cli):
            records.append(rec)
            echo(rec)
    order = {c.name: i for i, c in enumerate(cases)}
    records.sort(key=lambda r: (AREAS.index(r["area"]), order[r["case"]]))
    md = markdown(records, info)
    (out / "probe.md").write_text(md)
    (out / "probe.json").write_text(json.dumps({"cases": records, "fixtures": info, "seconds": round(time.time() - t0),
                                                "counts": Counter(r["outcome"] for r in records)}, indent=1))
    print()
    print(md)
    print(f"{len(records)} cases in {time.time() - t0:.0f} s; wrote {out / 'probe.md'} and {out / 'probe.json'}")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["outcome"].startswith("OK") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
