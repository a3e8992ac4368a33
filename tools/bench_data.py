"""Data benchmark: the KITTI training pipeline (load + GT sampling + global augmentation + SECOND
voxelization) through a torch DataLoader, and the resident memory of reading a Waymo v2 segment.

    python tools/bench.py data            (run_data is wired into tools/bench.py's suites)

Rows: {"case", "pc3d_s" (seconds per frame), "ref": "—", ...}; the pipeline rows carry `fps`
(target >= 20 frames/s on 2 cores), the Waymo row `peak_rss_mb` (target < 2048).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANGE = [0.0, -40.0, -3.0, 70.4, 40.0, 1.0]
VOXEL = [0.05, 0.05, 0.1]

_WAYMO_READER = """
import json, resource, sys, time
from pc3d.data import WaymoDataset
ds = WaymoDataset(sys.argv[1], "training")
start = time.perf_counter()
points = 0
for i in range(len(ds)):
    points += len(ds[i]["points"])
elapsed = time.perf_counter() - start
print(json.dumps({"frames": len(ds), "seconds": elapsed, "points": points,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def kitti_root(tmp: Path, frames: int) -> Path:
    """data/sim_kitti when it has a GT database, else a fresh simulated dataset (with create_data) in tmp."""
    from pc3d.data.create import create_data
    from pc3d.sim.api import simulate_dataset

    existing = ROOT / "data" / "sim_kitti"
    if (existing / "kitti_gt_database_train.json").is_file():
        return existing
    root = simulate_dataset("kitti", tmp / "sim_kitti", frames=frames, seed=0)
    create_data("kitti", root)
    return root


def training_set(root: Path):
    from pc3d.data import KittiDataset
    from pc3d.data.transforms import (
        GlobalRotation,
        GlobalScaling,
        GTSampling,
        PointShuffle,
        RandomFlip,
        RangeCrop,
    )
    from pc3d.voxel import HardVoxelizer

    classes = ["Car", "Pedestrian", "Cyclist"]
    augment = [GTSampling(root / "kitti_gt_database_train.json", classes, {"Car": 20, "Pedestrian": 15, "Cyclist": 15}),
               RandomFlip(["x"]), GlobalRotation([-0.785, 0.785]), GlobalScaling([0.95, 1.05])]
    return KittiDataset(root, "train", class_names=classes, augmentations=augment,
                        transforms=[RangeCrop(RANGE), PointShuffle()],
                        voxelizer=HardVoxelizer(VOXEL, RANGE, 5, 16000), seed=0)


def run_data(timed: Callable, quick: bool = False) -> list[dict]:
    import torch
    from torch.utils.data import DataLoader

    from pc3d.data import seed_worker

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = kitti_root(Path(tmp), 10 if quick else 20)
        ds = training_set(root)
        batch_size = 2
        ds.collate_fn([ds[0], ds[1]])  # compile (or load from numba's cache) the kernels before timing
        n = len(ds)

        def one_pass(loader) -> Callable[[], int]:
            def run() -> int:
                count = 0
                for batch in loader:
                    count += batch["batch_size"]
                return count
            return run

        # one thread, as in a DataLoader worker (numba follows torch's thread count)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        in_process = one_pass(DataLoader(ds, batch_size=batch_size, shuffle=True, collate_fn=ds.collate_fn,
                                         generator=torch.Generator().manual_seed(0)))
        seconds = timed(in_process, repeats=1 if quick else 3, warmup=0) / n
        torch.set_num_threads(threads)
        rows.append({"case": "kitti train pipeline, in process, 1 thread (load+GT sampling+aug+voxelize)",
                     "pc3d_s": seconds, "ref": "—", "fps": 1.0 / seconds, "frames": n,
                     "grid": "0.05x0.05x0.1 [0,-40,-3,70.4,40,1]"})
        # numba's OpenMP layer aborts a fork() after the parent ran a parallel kernel: start workers clean
        workers = DataLoader(ds, batch_size=batch_size, shuffle=True, collate_fn=ds.collate_fn, num_workers=2,
                             persistent_workers=True, worker_init_fn=seed_worker, multiprocessing_context="forkserver",
                             generator=torch.Generator().manual_seed(0))
        seconds = timed(one_pass(workers), repeats=1 if quick else 3, warmup=1) / n
        rows.append({"case": "kitti train pipeline, DataLoader 2 workers", "pc3d_s": seconds, "ref": "—",
                     "fps": 1.0 / seconds, "frames": n, "grid": "0.05x0.05x0.1 [0,-40,-3,70.4,40,1]"})
        del workers
        rows.append(waymo_row(Path(tmp), 5 if quick else 20))
    return rows


def waymo_row(tmp: Path, frames: int) -> dict:
    """Read every frame of one simulated Waymo v2 segment in a fresh process; its peak RSS."""
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("waymo", tmp / "sim_waymo", frames=frames, seed=0, sequence_length=frames)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _WAYMO_READER, str(root)], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"case": f"waymo v2 segment read ({result['frames']} frames, both returns)",
            "pc3d_s": result["seconds"] / result["frames"], "ref": "—", "peak_rss_mb": result["peak_rss_mb"],
            "points_per_frame": result["points"] // result["frames"],
            "process_s": time.perf_counter() - start}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import markdown, timed

    quick = "--quick" in sys.argv
    print(markdown("data", run_data(timed, quick)))
