"""pc3d benchmarks: pc3d and its reference side by side in one process, reported as ratios.

    python tools/bench.py sparse [--json out.json] [--markdown out.md]
    python tools/bench.py attn --json attn.json      # DSVT / FlatFormer vs VoxelBackBone8x
    python tools/bench.py flow                       # SCTN per stage, peak memory
    python tools/bench.py snn                        # spiking inputs: zero-row skipping vs none
    python tools/bench.py seg                        # training steps of the segmentation recipes
    python tools/bench.py all --out bench_results/

Every suite prints a markdown table and (with --json / --out) writes
{"suite", "machine", "rows": [{"case", "pc3d_s", "ref", "ref_s", "speedup", ...}]}; a row may carry a table
of its own under "table" ({"title", "columns", "rows"}: the sparse suite's per-layer gradient errors), which the
markdown shows after the suite's table.
Times are the median of repeated runs after a warm-up (numba compiles on the first call).
Each suite's JSON records, under "machine", the share of CPU time the hypervisor stole and other
processes took while it ran (tools/cpu_share.py); above 5 % the table is followed by a warning.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pc3d  # noqa: F401  (before torch: pc3d puts its thread policy in the environment libgomp reads)

# isort: split
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_share  # noqa: E402
from _common import section_markdown  # noqa: E402


def timed(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict:
    import numba

    return {"python": platform.python_version(), "torch": torch.__version__, "numba": numba.__version__,
            "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}


def markdown(suite: str, rows: list[dict]) -> str:
    """The suite's table, then the tables rows carry under "table" (e.g. the sparse suite's per-layer gradients)."""
    extra = sorted({k for r in rows for k in r} - {"case", "pc3d_s", "ref", "ref_s", "speedup", "table"})
    head = ["case", "pc3d (ms)", "reference", "ref (ms)", "speedup", *extra]
    lines = [f"### {suite}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["case"], _fmt(r.get("pc3d_s"), 1e3), r.get("ref", ""), _fmt(r.get("ref_s"), 1e3),
                 _fmt(r.get("speedup"), 1, "x")] + [_fmt(r.get(k)) for k in extra]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["\n" + section_markdown(r["table"]) for r in rows if "table" in r]
    return "\n".join(lines)


def _fmt(value, scale: float = 1, suffix: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        v = value * scale
        return (f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}") + suffix
    return str(value)


def run_sparse(timed, quick: bool) -> list[dict]:
    from bench_sparse import run_sparse as run

    return run(timed, quick)


def run_voxel(timed, quick: bool) -> list[dict]:
    """Voxelizers against spconv / Open3D, then the box kernels against shapely / numpy / torch."""
    from bench_geometry import run_geometry
    from bench_voxel import run_voxel as run

    return run(timed, quick) + run_geometry(timed, quick)


def run_sim(timed, quick: bool) -> list[dict]:
    from bench_sim import run_sim as run

    return run(timed, quick)


def run_data(timed, quick: bool) -> list[dict]:
    from bench_data import run_data as run

    return run(timed, quick)


def run_train(timed, quick: bool) -> list[dict]:
    from bench_train import run_train as run

    return run(timed, quick)


def run_seg(timed, quick: bool) -> list[dict]:
    """Training steps of the segmentation recipes (dense / separable U-Net, float32 / bf16), timed in turn."""
    from bench_seg import run_seg as run

    return run(timed, quick)


def run_det(timed, quick: bool) -> list[dict]:
    from bench_det import run_det as run

    return run(timed, quick)


def run_attn(timed, quick: bool) -> list[dict]:
    """The window-attention backbones (DSVT, FlatFormer) against VoxelBackBone8x on one frame."""
    from bench_attn import run_attn as run

    return run(timed, quick)


def run_flow(timed, quick: bool) -> list[dict]:
    """SCTN scene flow on one 8,192-point pair: per-stage times, peak memory, attention blocks vs one call."""
    from bench_flow import run_flow as run

    return run(timed, quick)


def run_snn(timed, quick: bool) -> list[dict]:
    """A SubM conv on spike inputs with silent rows: zero-row skipping against the plain engine."""
    from bench_snn import run_snn as run

    return run(timed, quick)


SUITES = {"sparse": run_sparse, "voxel": run_voxel, "sim": run_sim, "data": run_data, "train": run_train,
          "seg": run_seg, "det": run_det, "attn": run_attn, "flow": run_flow,
          "snn": run_snn}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--json", type=Path, help="write the suite's JSON here")
    parser.add_argument("--markdown", type=Path, help="write the suite's markdown table here")
    parser.add_argument("--out", type=Path, help="folder for <suite>.json and <suite>.md (for 'all')")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and iterations (smoke run)")
    args = parser.parse_args(argv)
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    mismatched = []
    for name in suites:
        start = cpu_share.snapshot()
        rows = SUITES[name](timed=timed, quick=args.quick)
        busy = cpu_share.since(start)
        bad = [row for row in rows if mismatch(row)]
        for row in bad:  # a ratio of two computations that disagree means nothing
            row["mismatch"], row["speedup"] = True, None
        bad = [row["case"] for row in bad]
        table = markdown(name, rows)
        flag = cpu_share.warning(name, busy)
        if flag:
            table += "\n\n" + flag
        if bad:
            table += "\n\nMISMATCH: the two sides disagree (speed-ups blanked): " + "; ".join(bad)
            mismatched += bad
        print(table, flush=True)
        result = {"suite": name, "machine": {**machine(), "cpu_share": busy}, "rows": rows}
        targets = []
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            targets = [(args.out / f"{name}.json", args.out / f"{name}.md")]
        elif args.json or args.markdown:  # several suites (all): one file each, the suite's name added
            several = len(suites) > 1
            targets = [tuple(p.with_name(f"{p.stem}_{name}{p.suffix}") if p and several else p
                             for p in (args.json, args.markdown))]
        for json_path, md_path in targets:
            if json_path:
                json_path.write_text(json.dumps(result, indent=2))
            if md_path:
                md_path.write_text(table + "\n")
    return 1 if mismatched else 0


# the agreement a row's two computations must reach (relative to the largest magnitude): float32 sums in other
# orders, or one bf16 rounding (the bf16 backbone rows carry several), and weight gradients, which amplify both
TOLERANCE = {"max_rel_diff": (1e-3, 5e-2), "max_rel_grad_diff": (1e-2, 1e-1)}


def mismatch(row: dict) -> bool:
    """Whether a row's outputs disagree beyond TOLERANCE (float32 / bf16 rows) or its boxes differ."""
    bf16 = "bf16" in row.get("case", "")
    if any(row.get(key) is False for key in ("same_boxes", "same_output", "same_outputs")):
        return True
    return any(isinstance(row.get(key), (int, float)) and not row[key] <= limits[bf16]
               for key, limits in TOLERANCE.items())


if __name__ == "__main__":
    sys.exit(main())
