"""`tools/bench.py det`: per-frame inference of the simulated-KITTI CenterPoint recipe, pc3d's native
sparse engine against spconv's CPU path (ConvAlgo.Native) with the same weights, stage by stage.

Workload: one simulated frame of the KITTI HDL-64E preset (camera field of view, the recipe's range
and voxelizer), the model of `experiment=centerpoint_sim_kitti` with seeded weights (or a trained
checkpoint: `PC3D_BENCH_DET_CKPT=<run dir or .pt>`). Only the sparse layers change engine; the dense
BEV backbone and head are the same torch code on both sides, so the whole-frame row shows how much of
a frame the sparse engine still decides. Times are medians over alternating rounds.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import spconv_missing, versus

import pc3d.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "centerpoint_sim_kitti"
STAGES = ("voxelize", "vfe", "backbone_3d", "map_to_bev", "backbone_2d", "dense_head", "post_process", "other")


def _config():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("config", overrides=[f"experiment={EXPERIMENT}"])


def _model(cfg) -> torch.nn.Module:
    from hydra.utils import instantiate

    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="all")
    ckpt = os.environ.get("PC3D_BENCH_DET_CKPT")
    if ckpt:
        from pc3d.engine.runner import load_trained

        model = load_trained(ckpt)[0]
    else:  # seeded weights; every candidate is kept so the box comparison has boxes to compare
        model.post_process.score_threshold = 0.0
    return model.eval()


def _frame(cfg) -> dict:
    """One simulated KITTI frame, prepared as tools/infer.py prepares it (camera FOV, range crop)."""
    from hydra.utils import instantiate

    from pc3d.data.kitti import IMAGE_SHAPE, fov_mask
    from pc3d.data.transforms import Compose, PointShuffle
    from pc3d.sim.api import outdoor_frames, sensor_spec
    from pc3d.sim.ground_truth import kitti_calib

    _, _, frame = next(outdoor_frames(1, 7, sensor_spec("kitti"), frames_per_scene=1))
    points = frame.points[:, :4].astype(np.float32)
    points = points[fov_mask(points, kitti_calib(), IMAGE_SHAPE)]
    transforms = Compose([t for t in instantiate(cfg.dataset.transforms, _convert_="all")
                          if not isinstance(t, PointShuffle)])
    return transforms({"frame_id": "bench", "points": points, "seed": 0}, np.random.default_rng(0))


def _run_frame(model, collate, sample, timer, backend: str) -> tuple[dict, dict]:
    """(prediction, seconds per stage) of one frame on `backend`."""
    sp.set_backend(backend)
    try:
        timer.take()
        start = time.perf_counter()
        batch = collate([sample])
        voxelize = time.perf_counter() - start
        with torch.no_grad():
            start = time.perf_counter()
            pred = model(batch)[0]
            total = time.perf_counter() - start
        stages = timer.take()
        times = {"voxelize": voxelize, **stages}
        times["other"] = max(0.0, total - sum(stages.values()))  # the model's own code between its parts
        times["total"] = voxelize + total
        return pred, times
    finally:
        sp.set_backend("auto")


def _same_boxes(a: dict, b: dict) -> tuple[bool, float | None]:
    """Both predictions hold the same boxes (score order) within 1e-4 relative; the largest difference."""
    if len(a["boxes"]) != len(b["boxes"]) or not np.array_equal(a["labels"], b["labels"]):
        return False, None  # different boxes: no largest difference (and no Infinity in the JSON)
    if not len(a["boxes"]):
        return True, 0.0
    ra = np.concatenate([a["boxes"], a["scores"][:, None]], 1).astype(np.float64)
    rb = np.concatenate([b["boxes"], b["scores"][:, None]], 1).astype(np.float64)
    diff = float((np.abs(ra - rb) / np.maximum(1.0, np.abs(rb))).max())
    return diff <= 1e-4, diff


def _setup():
    """(model, collate, sample, timer) of the benchmark frame."""
    from hydra.utils import instantiate

    from pc3d.data.batch import Collate
    from pc3d.infer.stream import StageTimer

    cfg = _config()
    model, sample = _model(cfg), _frame(cfg)
    collate = Collate(instantiate(cfg.dataset.voxelizer, _convert_="all"))
    return model, collate, sample, StageTimer(model, torch.device("cpu"))


def run_det(timed, quick: bool = False) -> list[dict]:
    """The sparse backbone, the whole frame and each stage, native engine against spconv, then the two-process row;
    where spconv does not import, the native engine's side alone (_common.spconv_missing)."""
    del timed  # stages are timed inside one call; rounds alternate the engines below
    missing = spconv_missing()
    engines = ("native",) if missing else ("native", "spconv")
    model, collate, sample, timer = _setup()
    for backend in (*engines, "native"):  # warm-up: numba compilation, spconv import
        _run_frame(model, collate, sample, timer, backend)
    rounds = 3 if quick else 7
    runs: dict[str, list[dict]] = {backend: [] for backend in engines}
    preds = {}
    for r in range(rounds):
        for backend in engines if r % 2 == 0 else engines[::-1]:
            preds[backend], times = _run_frame(model, collate, sample, timer, backend)
            runs[backend].append(times)

    def med(backend: str, *stages: str) -> float:
        return statistics.median(sum(t.get(s, 0.0) for s in stages) for t in runs[backend])

    def sides(*stages: str) -> dict:
        ours = med("native", *stages)
        return {"pc3d_s": ours, **versus(ours, None if missing else med("spconv", *stages), missing)}

    same, diff = (None, None) if missing else _same_boxes(preds["native"], preds["spconv"])
    n_voxels = int(collate([sample])["voxels"].shape[0])
    tag = f"{n_voxels:,} voxels, {len(sample['points']):,} points"
    sparse = ("vfe", "backbone_3d")
    rows = [{"case": f"sparse backbone (VFE + 3D backbone), {tag}", **sides(*sparse)}]
    whole = {"case": f"whole frame, {tag}", **sides("total"),
             "same_boxes": same, "max_box_diff": diff, "boxes": len(preds["native"]["boxes"])}
    total = med("native", "total")
    whole["stages_ms"] = " / ".join(f"{s} {1e3 * med('native', s):.1f}" for s in STAGES)
    whole["dense_share"] = f"{med('native', 'map_to_bev', 'backbone_2d', 'dense_head') / total:.0%}"
    rows.append(whole)
    for stage in STAGES:
        rows.append({"case": f"stage: {stage}", **sides(stage)})
    rows.append(contention_row(quick))
    return rows


SPARSE_STAGES = ("vfe", "backbone_3d")


def _contention_child(rounds: int, barrier: str, parties: int) -> None:
    """One process of the two-process row: the native engine's sparse-backbone time per frame (median
    of `rounds` frames), printed as JSON. Timing starts once `parties` processes have warmed up."""
    model, collate, sample, timer = _setup()
    for _ in range(2):
        _run_frame(model, collate, sample, timer, "native")
    Path(barrier, f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 300
    while len(list(Path(barrier).glob("ready-*"))) < parties and time.monotonic() < deadline:
        time.sleep(0.005)
    start = time.perf_counter()
    sparse = []
    for _ in range(rounds):  # one frame per round, its own stages summed
        stages = _run_frame(model, collate, sample, timer, "native")[1]
        sparse.append(sum(stages.get(s, 0.0) for s in SPARSE_STAGES))
    print(json.dumps({"sparse_s": statistics.median(sparse), "wall_s": time.perf_counter() - start,
                      "threads": torch.get_num_threads()}))


def contention(parties: int, rounds: int, env: dict | None = None) -> list[dict]:
    """Run `parties` benchmark processes started together (each with torch's default thread count, so
    together they ask for parties x the cores); each one's result of `_contention_child`."""
    code = ("import pc3d, sys; "  # pc3d first: its thread policy is in place before torch loads libgomp
            f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import bench_det; "
            "bench_det._contention_child(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))")
    with tempfile.TemporaryDirectory() as barrier:
        procs = [subprocess.Popen([sys.executable, "-c", code, str(rounds), barrier, str(parties)],
                                  stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
                 for _ in range(parties)]
        outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a contention child failed: {[p.returncode for p in procs]}")
    return [json.loads(out.strip().splitlines()[-1]) for out in outs]


def contention_row(quick: bool) -> dict:
    """Two processes on the native sparse backbone started together against one alone."""
    from pc3d_ops.threads import SPIN_ENV, USER_SPIN_VARS

    rounds = 6 if quick else 20
    solo = contention(1, rounds)[0]
    alone = solo["sparse_s"]
    together = [r["sparse_s"] for r in contention(2, rounds)]
    spin = {k: os.environ[k] for k in USER_SPIN_VARS if k in os.environ} or SPIN_ENV
    return {"case": "sparse backbone, 2 processes started together (each: its time)", "pc3d_s": max(together),
            "ref": "1 process alone", "ref_s": alone, "speedup": alone / max(together),
            "slowdown": f"{together[0] / alone:.2f}x / {together[1] / alone:.2f}x",
            "threads_each": solo["threads"], "spin": " ".join(f"{k}={v}" for k, v in spin.items())}
