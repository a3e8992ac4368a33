"""`tools/bench.py sparse`, the backbone rows: the benchmark's VoxelBackBone8x stages on the sweep, pc3d's
native engine against spconv's CPU path (same weights, same sites): time, agreement, repeatability and peak
memory of a forward + backward step.

Besides the block-timed rows (every engine's repeats in one process), a row times the three variants (pc3d
float32, pc3d bf16 autocast, spconv) in fresh processes, one after another, over several rounds, and reports
the median of the rounds' ratios: each engine starts from a clean allocator, and the host's drift between
minutes falls on all three alike. On the EPYC host of 2026-12-06 block-timed runs of the bf16 backbone read
4.62-5.12x spconv at 0.1 m, as spconv's own step swung by 2.2-3.4 s.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import alternated, load_benchmark_sweep, rel_diff, rows_in_site_order, spconv_missing, versus

import pc3d.sparse as sp
from pc3d.models.backbones3d.voxel_backbone import VoxelBackBone8x
from pc3d.voxel import grid_sample


def peak_rss_mib(fn) -> float:
    """Peak resident memory above the current level while fn runs (Linux; NaN elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return float("nan")
    base = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - base) / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0



class BatchNormF64(torch.nn.BatchNorm1d):
    """BatchNorm1d whose statistics and normalisation run in float64 (the result in the input's dtype):
    the gradient table's control for how much of the float32 error BatchNorm's own arithmetic makes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.batch_norm(x.double(), None, None, self.weight.double(), self.bias.double(),
                                              True, 0.0, self.eps).to(x.dtype)



def backbone_step(voxel: float, dtype: torch.dtype = torch.float32, act=torch.nn.ReLU, norm=None):
    """(step(backend) -> output, net, coords) of the benchmark's VoxelBackBone8x on the sweep.

    Weights and input features are drawn in float32 whatever `dtype` is, so a float64 net holds
    exactly the float32 net's numbers."""
    points, _ = load_benchmark_sweep()
    coords_np, shape, _, _ = grid_sample(points, voxel)
    coords = torch.from_numpy(coords_np)
    feats = torch.randn(len(coords), 4, generator=torch.Generator().manual_seed(1)).to(dtype)
    torch.manual_seed(0)
    net = VoxelBackBone8x(4, out_channels=None, act=act, norm=norm).to(dtype)

    def step(backend: str, bf16: bool = False):
        sp.set_backend(backend)
        try:
            net.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = net(sp.SparseTensor(feats, coords, shape, 1))
            y = out.feats.float() if out.feats.dtype == torch.bfloat16 else out.feats  # float64 stays float64
            y.square().mean().backward()
            return out
        finally:
            sp.set_backend("auto")

    return step, net, coords


def _in_child(call: str, env: dict | None = None) -> dict:
    """The JSON line `bench_backbone.<call>` prints, run in a fresh process."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_backbone as b; b.{call}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_in_child(backend: str, voxel: float) -> float:
    """Peak RSS (MiB) above the resting level during one warm fwd + bwd step, in a fresh process:
    allocator caches of the other engine and of earlier cases can neither hide nor inflate it."""
    # Blocks >= 64 KiB are mmap-ed and returned on free, so RSS follows live memory, not malloc's cache.
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    return _in_child(f"_child_peak({backend!r}, {voxel!r})", env)["peak_mib"]


def _child_peak(backend: str, voxel: float) -> None:
    step, _, _ = backbone_step(voxel)
    step(backend)
    step(backend)
    print(json.dumps({"peak_mib": peak_rss_mib(lambda: step(backend))}))


def _child_step_time(backend: str, voxel: float, bf16: bool, steps: int) -> None:
    step, _, _ = backbone_step(voxel)
    step(backend, bf16=bf16)  # warm-up: kernels loaded, allocator primed
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(backend, bf16=bf16)
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": statistics.median(times)}))


def fresh_process_rounds(voxel: float, rounds: int, steps: int = 3, spconv: bool = True) -> dict:
    """Each round runs pc3d float32, pc3d bf16 autocast and spconv in three fresh processes one after another
    (`steps` timed steps each, median); returns the median step times and the median and range over the rounds
    of spconv's time / pc3d's (float32 and bf16). Without `spconv` (not installed) pc3d's two times alone."""
    variants = {"float32": ("native", False), "bf16": ("native", True), "spconv": ("spconv", False)}
    if not spconv:
        del variants["spconv"]
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (backend, bf16) in variants.items():
            times[name].append(_in_child(f"_child_step_time({backend!r}, {voxel!r}, {bf16}, {steps})")["seconds"])
    out = {name: statistics.median(t) for name, t in times.items()}
    for name in ("float32", "bf16") if spconv else ():
        ratios = [r / o for r, o in zip(times["spconv"], times[name], strict=True)]
        out[f"{name}_speedup"] = statistics.median(ratios)
        out[f"{name}_range"] = f"{min(ratios):.2f}-{max(ratios):.2f}x"
    return out


def backbone_rows(voxel, timed, repeats, quick) -> list[dict]:
    """VoxelBackBone8x stages (16-32-64-64, three stride-2 convs), forward + backward, same weights; where spconv
    does not import, pc3d's side of each row alone (_common.spconv_missing). The bf16 row's vs_pc3d_float32 is
    of pc3d float32 and bf16 steps timed in turn (_common.alternated)."""
    missing = spconv_missing()
    step, net, coords = backbone_step(voxel)
    tag = f"{voxel} m ({len(coords):,} voxels)"

    ours = timed(lambda: step("native"), repeats=repeats)
    ref = None if missing else timed(lambda: step("spconv"), repeats=repeats)
    out_ours = step("native")
    grads_ours = [p.grad.clone() for p in net.parameters()]
    out_again = step("native")
    grads_again = [p.grad.clone() for p in net.parameters()]
    bitwise = torch.equal(out_ours.feats, out_again.feats) and all(
        torch.equal(g1, g2) for g1, g2 in zip(grads_ours, grads_again, strict=True))
    mem_ours = _peak_in_child("native", voxel)
    feat_diff = grad_diff = mem_ref = None
    if not missing:
        out_ref = step("spconv")
        grads_ref = [p.grad.clone() for p in net.parameters()]
        feat_diff = rel_diff(rows_in_site_order(out_ours.coords, out_ours.feats),
                             rows_in_site_order(out_ref.coords, out_ref.feats))
        grad_diff = max(rel_diff(g1, g2) for g1, g2 in zip(grads_ours, grads_ref, strict=True))
        mem_ref = round(_peak_in_child("spconv", voxel), 1)
    rows = [{"case": f"VoxelBackBone8x stages fwd + bwd, {tag}", "pc3d_s": ours, **versus(ours, ref, missing),
             "max_rel_diff": feat_diff, "max_rel_grad_diff": grad_diff,
             "bitwise_repeatable": bitwise, "peak_mib": round(mem_ours, 1), "ref_peak_mib": mem_ref}]
    fp32, bf16 = alternated([lambda: step("native"), lambda: step("native", bf16=True)], repeats)
    out_bf16 = step("native", bf16=True)
    rows.append({"case": f"VoxelBackBone8x stages fwd + bwd, bf16 autocast, {tag}", "pc3d_s": bf16,
                 **versus(bf16, ref, missing, "spconv CPU (float32)"), "vs_pc3d_float32": round(fp32 / bf16, 2),
                 "max_rel_diff": rel_diff(out_bf16.feats.float(), out_ours.feats)})
    rounds = 2 if quick else 5
    fresh = fresh_process_rounds(voxel, rounds, spconv=not missing)
    rows.append({"case": f"VoxelBackBone8x stages fwd + bwd, fresh processes in turn, median of {rounds} rounds, {tag}",
                 "pc3d_s": fresh["float32"], "ref": missing or "spconv CPU", "ref_s": fresh.get("spconv"),
                 "speedup": fresh.get("float32_speedup"), "speedup_range": fresh.get("float32_range"),
                 "bf16_ms": round(fresh["bf16"] * 1e3, 1),
                 "bf16_speedup": None if missing else round(fresh["bf16_speedup"], 2),
                 "bf16_range": fresh.get("bf16_range")})
    if voxel == 0.1:
        iters = 20 if quick else 200
        rss = []
        for i in range(iters):
            step("native")
            if i in (9, iters - 1):
                rss.append(_status_kib("VmRSS") / 1024)
        rows.append({"case": f"VoxelBackBone8x memory over {iters} fwd + bwd, {tag}", "ref": "-",
                     "rss_mib_at_10": round(rss[0], 1), f"rss_mib_at_{iters}": round(rss[1], 1)})
    return rows
