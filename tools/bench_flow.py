"""`tools/bench.py flow`: SCTN on one simulated FlyingThings3D-layout pair of 8,192 + 8,192 points.

Rows: the model's forward and forward + backward with the forward time of each stage (feature_net: the
sparse U-Net of both clouds; transformer; transport; refine; the rest, other_fwd_ms, e.g. the interpolation to
points and the neighbour searches, is a call's total minus these), each a median over the timed calls as the
total is (other_fwd_ms: the median of each call's rest), and the peak resident
memory of forward + backward (``ru_maxrss`` of a fresh process, imports included), with the transport kernel
kept (the default, faster) and rebuilt per product (``ot_keep_kernel: false``); then the global
attention of one cloud, pc3d's query blocks against one torch ``scaled_dot_product_attention`` call over
all queries (the reference: the same FLOPs without blocks, memory O(N^2) in backward); last the ego-motion
stage (`model.ego_motion`, robust rigid fit + point-to-plane ICP) on the model's flow of the pair, as
sctn_sim_lidar and as sctn_sim (with rigid parts) configure it.
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
POINTS = 8192


def simulated_pair(seed: int = 0) -> dict:
    """One simulated FlyingThings3D-layout pair as the dataset gives it (8,192 points per cloud)."""
    from pc3d.data import SceneFlowDataset
    from pc3d.sim.api import simulate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        simulate_dataset("sceneflow_ft3d", tmp, frames=2, seed=seed)
        return SceneFlowDataset(tmp, split="train", num_points=POINTS, seed=0)[0]


def model_and_batch(sample: dict, **model_options):
    """(SCTN of configs/model/sctn.yaml (+ model_options), seeded; the sample's batch through sim_sceneflow's
    voxelizer)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from pc3d.data.batch import Collate

    data = OmegaConf.load(ROOT / "configs" / "dataset" / "sim_sceneflow.yaml")
    voxelizer = instantiate(data.voxelizer, voxel_size=list(data.voxel_size), point_range=list(data.point_cloud_range))
    torch.manual_seed(0)
    model = instantiate(OmegaConf.load(ROOT / "configs" / "model" / "sctn.yaml"), **model_options)
    return model, Collate(voxelizer)([sample])


def _peak_rss_mib(sample: dict, keep_kernel: bool) -> float:
    """Forward + backward of the pair in a fresh process that only loads it (no simulator): peak resident
    memory in MiB, imports included; keep_kernel: the transport's ot_keep_kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pair.npz"
        np.savez(path, **{k: sample[k] for k in ("points", "points2", "flow", "flow_mask")})
        out = subprocess.run([sys.executable, __file__, "--rss", str(path), str(int(keep_kernel))],
                             capture_output=True, text=True, check=True, cwd=str(ROOT))
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def _timed_by_stage(timed, timer, fn, repeats: int) -> tuple[float, dict[str, float], float]:
    """(fn's time as `timed` gives it, {stage: median seconds}, median seconds outside the stages) over the
    timed calls of fn; timer: the StageTimer of the model fn runs. Every figure is a median over the same calls
    (the rest: of each call's total minus its stages)."""
    calls = []  # (seconds, {stage: seconds}) of each call

    def call():
        start = time.perf_counter()
        fn()
        calls.append((time.perf_counter() - start, timer.take()))

    timer.take()
    t = timed(call, repeats=repeats, warmup=0)
    stages = {k: statistics.median(s.get(k, 0.0) for _, s in calls) for k in calls[0][1]}
    return t, stages, statistics.median(total - sum(s.values()) for total, s in calls)


def run_flow(timed, quick: bool = False) -> list[dict]:
    import torch.nn.functional as F

    from pc3d.infer.stream import StageTimer

    repeats = 1 if quick else 3
    sample = simulated_pair()
    model, batch = model_and_batch(sample)
    timer = StageTimer(model, torch.device("cpu"))

    def forward():
        with torch.no_grad():
            model(batch)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(batch)["loss"].backward()

    rows = []
    for mode, fn, train in (("forward", forward, False), ("forward + backward", forward_backward, True)):
        model.train(train)
        fn()  # warm-up: numba, kernel maps
        t, stages, other = _timed_by_stage(timed, timer, fn, repeats)
        row = {"case": f"SCTN {mode}, {POINTS:,} + {POINTS:,} points", "pc3d_s": t}
        row.update({f"{k}_fwd_ms": round(1e3 * v, 1) for k, v in stages.items()})
        row["other_fwd_ms"] = round(1e3 * other, 1) if not train else None
        rows.append(row)
    rows[-1]["peak_rss_mib"] = round(_peak_rss_mib(sample, keep_kernel=True))
    model.transport.keep_kernel = False  # rebuild the transport kernel per product: O(block) memory
    model.train()
    rows.append({"case": "SCTN forward + backward, ot_keep_kernel false", "pc3d_s": timed(forward_backward,
                 repeats=repeats), "peak_rss_mib": round(_peak_rss_mib(sample, keep_kernel=False))})
    model.transport.keep_kernel = True
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, POINTS, model.transformer.q.out_features) for _ in range(3))
    model.eval()
    with torch.no_grad():
        block = timed(lambda: model.transformer(q[0], torch.randn(POINTS, 3), [0, POINTS]), repeats=repeats)
        whole = timed(lambda: F.scaled_dot_product_attention(q, k, v), repeats=repeats)
    rows.append({"case": f"point transformer, {POINTS:,} points (blocks of {model.transformer.chunk_size})",
                 "pc3d_s": block, "ref": "torch SDPA, one call", "ref_s": whole, "speedup": whole / block})
    from pc3d.models.flow.rigid import EgoMotion

    ego = EgoMotion(inlier_threshold=1.0, surface_threshold=0.1)  # sctn_sim_lidar's
    xyz1, xyz2, offsets = batch["points"][:, :3], batch["points2"][:, :3], [0, POINTS]
    with torch.no_grad():
        flow = torch.from_numpy(model(batch)[0]["flow"])
    rows.append({"case": f"ego-motion stage (rigid fit + ICP), {POINTS:,} + {POINTS:,} points",
                 "pc3d_s": timed(lambda: ego(xyz1, xyz2, flow, offsets, offsets), repeats=repeats)})
    from omegaconf import OmegaConf

    stages = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/experiment/sctn_sim.yaml").model.ego_motion)
    rigid = EgoMotion(**stages)  # sctn_sim's: the surface test, then rigid parts
    rows.append({"case": f"rigid stages of sctn_sim (ego motion + parts), {POINTS:,} + {POINTS:,} points",
                 "pc3d_s": timed(lambda: rigid(xyz1, xyz2, flow, offsets, offsets), repeats=repeats)})
    return rows


def _rss_child(path: str, keep_kernel: bool) -> None:
    with np.load(path) as f:
        sample = {"frame_id": "pair", **{k: f[k] for k in f.files}}
    model, batch = model_and_batch(sample, ot_keep_kernel=keep_kernel)
    model.train()
    model(batch)["loss"].backward()
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":  # the peak-memory child of _peak_rss_mib (run the suite with tools/bench.py flow)
    _rss_child(sys.argv[2], bool(int(sys.argv[3])))
