"""`tools/bench.py sparse`: pc3d's native sparse engine against spconv's CPU path (ConvAlgo.Native).

Workload: the 360-degree sweep ../shared/samples/scan360/benchmark-pc.npz at 0.1 m and 0.05 m,
batch 1, torch's thread count (2 on the reference machine). Both engines get the same input sites
in the same order and the same weights.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import load_benchmark_sweep

import pc3d.sparse as sp
from pc3d.models.backbones3d.voxel_backbone import VoxelBackBone8x
from pc3d.sparse.kernel_map import submanifold_map
from pc3d.voxel import grid_sample


def _spconv():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import spconv.pytorch as spconv
        from spconv.core import ConvAlgo
        from spconv.pytorch import ops as spconv_ops
    return spconv, ConvAlgo, spconv_ops


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


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def _sorted_rows(coords: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    key = coords.long()
    order = np.lexsort(key.numpy().T[::-1])
    return feats[torch.from_numpy(order)]


def run_sparse(timed, quick: bool = False) -> list[dict]:
    torch.manual_seed(0)
    points, _ = load_benchmark_sweep()
    repeats = 3 if quick else 7
    rows: list[dict] = []

    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    gemm_s = timed(lambda: torch.mm(a, b), repeats=repeats)
    gemm_gflops = 2 * 2048**3 / gemm_s / 1e9
    rows.append({"case": "square GEMM 2048^3 (torch)", "pc3d_s": gemm_s, "ref": "-", "gflops": round(gemm_gflops, 1)})

    for voxel in (0.1, 0.05):
        rows.extend(_scale_rows(points, voxel, timed, repeats, gemm_gflops, quick))
    return rows


def _scale_rows(points, voxel, timed, repeats, gemm_gflops, quick) -> list[dict]:
    """Map build, SubM forward / backward, strided conv and the backbone at one voxel size."""
    spconv, ConvAlgo, spconv_ops = _spconv()
    rows: list[dict] = []
    coords_np, shape, _, _ = grid_sample(points, voxel)
    coords = torch.from_numpy(coords_np)
    n = len(coords)
    feats = torch.randn(n, 64)
    tag = f"{voxel} m ({n:,} voxels)"

    # kernel map build, SubM k3
    x = sp.SparseTensor(feats, coords, shape, 1)
    ours = timed(lambda: submanifold_map(x, (3, 3, 3), (1, 1, 1)), repeats=repeats)
    ref = timed(lambda: spconv_ops.get_indice_pairs(coords, 1, list(shape), ConvAlgo.Native, [3, 3, 3],
                                                    [1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 0, 0], subm=True),
                repeats=repeats)
    kmap = submanifold_map(x, (3, 3, 3), (1, 1, 1))
    rows.append({"case": f"kernel map SubM k3, {tag}", "pc3d_s": ours, "ref": "spconv CPU", "ref_s": ref,
                 "speedup": ref / ours, "avg_neighbours": round(kmap.n_pairs / n, 2)})

    # SubM 64 -> 64 with a cached map
    conv = sp.SubMConv3d(64, 64, 3, bias=False, indice_key="subm")
    twin = spconv.SubMConv3d(64, 64, 3, bias=False, indice_key="subm", algo=ConvAlgo.Native)
    twin.load_state_dict(conv.state_dict())
    st = spconv.SparseConvTensor(feats, coords, list(shape), 1)
    with torch.no_grad():
        y_ours = conv(x)
        y_ref = twin(st)
        ours = timed(lambda: conv(x), repeats=repeats)
        ref = timed(lambda: twin(st), repeats=repeats)
    flops = 2 * kmap.n_pairs * 64 * 64
    rows.append({"case": f"SubM 64->64 forward (cached map), {tag}", "pc3d_s": ours, "ref": "spconv CPU",
                 "ref_s": ref, "speedup": ref / ours, "gflops": round(flops / ours / 1e9, 1),
                 "of_gemm": round(flops / ours / 1e9 / gemm_gflops, 2),
                 "max_rel_diff": _rel_diff(y_ours.feats, y_ref.features)})

    xg = x.replace_feature(feats.clone().requires_grad_(True))
    stg = st.replace_feature(feats.clone().requires_grad_(True))
    grad = torch.randn(n, 64)
    ours = timed(lambda: conv(xg).feats.backward(grad), repeats=repeats)
    ref = timed(lambda: twin(stg).features.backward(grad), repeats=repeats)
    rows.append({"case": f"SubM 64->64 forward + backward, {tag}", "pc3d_s": ours, "ref": "spconv CPU",
                 "ref_s": ref, "speedup": ref / ours, "gflops": round(3 * flops / ours / 1e9, 1)})

    # strided conv, map included (fresh tensors every call)
    down = sp.SparseConv3d(64, 64, 3, stride=2, padding=1, bias=False)
    down_ref = spconv.SparseConv3d(64, 64, 3, stride=2, padding=1, bias=False, algo=ConvAlgo.Native)
    down_ref.load_state_dict(down.state_dict())
    with torch.no_grad():
        ours = timed(lambda: down(sp.SparseTensor(feats, coords, shape, 1)), repeats=repeats)
        ref = timed(lambda: down_ref(spconv.SparseConvTensor(feats, coords, list(shape), 1)), repeats=repeats)
        y_ours = down(sp.SparseTensor(feats, coords, shape, 1))
        y_ref = down_ref(spconv.SparseConvTensor(feats, coords, list(shape), 1))
    rows.append({"case": f"strided conv k3 s2 64->64 (map included), {tag}", "pc3d_s": ours, "ref": "spconv CPU",
                 "ref_s": ref, "speedup": ref / ours,
                 "max_rel_diff": _rel_diff(_sorted_rows(y_ours.coords, y_ours.feats),
                                           _sorted_rows(y_ref.indices, y_ref.features))})

    rows.extend(_backbone_rows(voxel, timed, repeats, quick))
    return rows


def _backbone_step(voxel: float):
    """(step(backend) -> output, net, coords) of the benchmark's VoxelBackBone8x on the sweep."""
    points, _ = load_benchmark_sweep()
    coords_np, shape, _, _ = grid_sample(points, voxel)
    coords = torch.from_numpy(coords_np)
    feats = torch.randn(len(coords), 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    net = VoxelBackBone8x(4, out_channels=None)

    def step(backend: str):
        sp.set_backend(backend)
        try:
            net.zero_grad(set_to_none=True)
            out = net(sp.SparseTensor(feats, coords, shape, 1))
            out.feats.square().mean().backward()
            return out
        finally:
            sp.set_backend("auto")

    return step, net, coords


def _peak_in_child(backend: str, voxel: float) -> float:
    """Peak RSS (MiB) above the resting level during one warm fwd + bwd step, in a fresh process:
    allocator caches of the other engine and of earlier cases can neither hide nor inflate it."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_sparse as b; "
            f"b._child_peak({backend!r}, {voxel!r})")
    # Blocks >= 64 KiB are mmap-ed and returned on free, so RSS follows live memory, not malloc's cache.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def _child_peak(backend: str, voxel: float) -> None:
    step, _, _ = _backbone_step(voxel)
    step(backend)
    step(backend)
    print(json.dumps({"peak_mib": peak_rss_mib(lambda: step(backend))}))


def _backbone_rows(voxel, timed, repeats, quick) -> list[dict]:
    """VoxelBackBone8x stages (16-32-64-64, three stride-2 convs), forward + backward, same weights."""
    step, net, coords = _backbone_step(voxel)
    tag = f"{voxel} m ({len(coords):,} voxels)"

    ours = timed(lambda: step("native"), repeats=repeats)
    ref = timed(lambda: step("spconv"), repeats=repeats)
    out_ours = step("native")
    grads_ours = [p.grad.clone() for p in net.parameters()]
    out_again = step("native")
    grads_again = [p.grad.clone() for p in net.parameters()]
    out_ref = step("spconv")
    grads_ref = [p.grad.clone() for p in net.parameters()]
    bitwise = torch.equal(out_ours.feats, out_again.feats) and all(
        torch.equal(g1, g2) for g1, g2 in zip(grads_ours, grads_again, strict=True))
    feat_diff = _rel_diff(_sorted_rows(out_ours.coords, out_ours.feats), _sorted_rows(out_ref.coords, out_ref.feats))
    grad_diff = max(_rel_diff(g1, g2) for g1, g2 in zip(grads_ours, grads_ref, strict=True))
    mem_ours = _peak_in_child("native", voxel)
    mem_ref = _peak_in_child("spconv", voxel)
    rows = [{"case": f"VoxelBackBone8x stages fwd + bwd, {tag}", "pc3d_s": ours, "ref": "spconv CPU", "ref_s": ref,
             "speedup": ref / ours, "max_rel_diff": feat_diff, "max_rel_grad_diff": grad_diff,
             "bitwise_repeatable": bitwise, "peak_mib": round(mem_ours, 1), "ref_peak_mib": round(mem_ref, 1)}]
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
