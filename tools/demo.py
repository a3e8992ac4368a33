"""`make demo`: pc3d's main job on its built-in simulated data, end to end.

    python tools/demo.py [--frames 300] [--epochs 30] [--ckpt RUN_DIR_OR_FILE] [--out outputs/demo]

1. environment report;
2. simulate a small KITTI-format dataset (tools/simulate.py) and its GT database (tools/create_data.py),
   unless it is already there;
3. train the CPU recipe `experiment=centerpoint_sim_kitti` (tools/train.py; skipped with --ckpt);
4. evaluate it on the held-out simulated frames (tools/test.py: the KITTI AP table);
5. run tools/infer.py on a simulated sequence and on the real KITTI frame ../shared/samples/kitti/000008.bin
   (when present), rendering PNGs of both;
6. print where every output is.
Each step is the same command a user would run; the demo only chains them.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT.parent / "shared" / "samples" / "kitti" / "000008.bin"
EXPERIMENT = "centerpoint_sim_kitti"


def step(title: str, cmd: list[str]) -> float:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, *cmd], cwd=ROOT, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=300, help="simulated frames (half train, half val)")
    p.add_argument("--data", default="data/sim_kitti_det", help="the simulated dataset's folder")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (30: about 5 min on 2 cores)")
    p.add_argument("--ckpt", default=None, help="skip training: evaluate / infer with this run dir or checkpoint")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--infer-frames", type=int, default=10, help="frames of the simulated sequence to infer")
    args = p.parse_args(argv)

    from pc3d.info import environment_report

    print(environment_report(), flush=True)
    out, data, timings = Path(args.out), Path(args.data), {}
    if not (ROOT / data / "kitti_gt_database_train.json").is_file():
        timings["simulate"] = step("simulate a KITTI-format dataset", [
            "tools/simulate.py", "format=kitti", f"frames={args.frames}", "seed=0", f"out={data}"])
        timings["create_data"] = step("GT database", ["tools/create_data.py", "kitti", str(data)])
    run_dir = Path(args.ckpt) if args.ckpt else out / "train"
    if not args.ckpt:
        timings["train"] = step(f"train experiment={EXPERIMENT}", [
            "tools/train.py", f"experiment={EXPERIMENT}", f"dataset.root={data}", f"train.max_epochs={args.epochs}",
            f"train.eval_interval={args.epochs}", f"train.ckpt_interval={args.epochs}", f"hydra.run.dir={run_dir}"])
    ckpt_arg = f"ckpt={run_dir}" if run_dir.is_file() else f"run_dir={run_dir}"
    timings["test"] = step("evaluate on the held-out simulated frames (KITTI AP)", [
        "tools/test.py", ckpt_arg, f"out_dir={out / 'test'}"])
    timings["infer_sim"] = step("infer on a simulated sequence", [
        "tools/infer.py", str(run_dir), str(data), "--split", "val", "--max-frames", str(args.infer_frames),
        "--out", str(out / "infer_sim"), "--render"])
    outputs = [("KITTI AP table", out / "test" / "metrics.md"), ("simulated predictions", out / "infer_sim"),
               ("simulated renders", out / "infer_sim" / "render")]
    if SAMPLE.is_file():
        timings["infer_real"] = step("infer on the real KITTI frame 000008", [
            "tools/infer.py", str(run_dir), str(SAMPLE), "--out", str(out / "infer_real"), "--render"])
        outputs += [("real-frame predictions", out / "infer_real"),
                    ("real-frame render", out / "infer_real" / "render" / "000008.png")]
    else:
        print(f"\n(no real frame: {SAMPLE} is absent)")
    print("\n=== outputs")
    if not args.ckpt:
        outputs.insert(0, ("training run (checkpoints, metrics.json, train.log)", run_dir))
    for what, where in outputs:
        print(f"  {what}: {where}")
    print("  timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; total {sum(timings.values()) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
