"""`tools/bench.py sparse`: pc3d's native sparse engine against spconv's CPU path (ConvAlgo.Native).

Workload: the 360-degree sweep ../shared/samples/scan360/benchmark-pc.npz at 0.1 m and 0.05 m,
batch 1, torch's thread count (2 on the reference machine). Both engines get the same input sites
in the same order and the same weights.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import warnings
from functools import partial
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

    gemm = {}  # GFLOP/s of torch's square GEMM per dtype: the roof the sparse rows are read against
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bf16")):
        a = torch.randn(2048, 2048).to(dtype)
        b = torch.randn(2048, 2048).to(dtype)
        gemm_s = timed(lambda a=a, b=b: torch.mm(a, b), repeats=repeats)
        gemm[dtype] = 2 * 2048**3 / gemm_s / 1e9
        rows.append({"case": f"square GEMM 2048^3 {name} (torch)", "pc3d_s": gemm_s, "ref": "-",
                     "gflops": round(gemm[dtype], 1)})

    for voxel in (0.1, 0.05):
        rows.extend(_scale_rows(points, voxel, timed, repeats, gemm, quick))
    for voxel in (0.1,) if quick else (0.1, 0.05):
        layers = gradient_table(voxel, control=not quick)
        print(gradient_markdown(voxel, layers) + "\n", flush=True)
        rows.append(gradient_summary(voxel, layers))
    return rows


def _scale_rows(points, voxel, timed, repeats, gemm, quick) -> list[dict]:
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
        fwd32 = timed(lambda: conv(x), repeats=repeats)
        ref = timed(lambda: twin(st), repeats=repeats)
    flops = 2 * kmap.n_pairs * 64 * 64
    rows.append({"case": f"SubM 64->64 forward (cached map), {tag}", "pc3d_s": fwd32, "ref": "spconv CPU",
                 "ref_s": ref, "speedup": ref / fwd32, "gflops": round(flops / fwd32 / 1e9, 1),
                 "of_gemm": round(flops / fwd32 / 1e9 / gemm[torch.float32], 2),
                 "max_rel_diff": _rel_diff(y_ours.feats, y_ref.features)})

    xg = x.replace_feature(feats.clone().requires_grad_(True))
    stg = st.replace_feature(feats.clone().requires_grad_(True))
    grad = torch.randn(n, 64)
    fb32 = timed(lambda: conv(xg).feats.backward(grad), repeats=repeats)
    ref = timed(lambda: twin(stg).features.backward(grad), repeats=repeats)
    rows.append({"case": f"SubM 64->64 forward + backward, {tag}", "pc3d_s": fb32, "ref": "spconv CPU",
                 "ref_s": ref, "speedup": ref / fb32, "gflops": round(3 * flops / fb32 / 1e9, 1)})
    rows.extend(_bf16_rows(x, conv, grad, flops, tag, timed, repeats, gemm[torch.bfloat16], fwd32, fb32,
                           y_ours.feats))
    if voxel == 0.1:
        rows.extend(_depthwise_rows(x, grad, tag, timed, repeats))
        rows.extend(_open3d_rows(x, conv, grad, tag, timed, quick))

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


def _bf16_rows(x, conv, grad, flops, tag, timed, repeats, gemm_bf16, fwd32, fb32, y32) -> list[dict]:
    """SubM 64->64 in bf16 (bf16 features and weights, float32 sums) against pc3d's own float32 rows;
    of_gemm is the fraction of torch's bf16 square GEMM measured in the same run."""
    conv16 = copy.deepcopy(conv).to(torch.bfloat16)
    x16 = x.replace_feature(x.feats.to(torch.bfloat16))  # same sites: the cached map is shared
    with torch.no_grad():
        y16 = conv16(x16)
        fwd = timed(lambda: conv16(x16), repeats=repeats)
    rows = [{"case": f"SubM 64->64 bf16 forward (cached map), {tag}", "pc3d_s": fwd, "ref": "pc3d float32",
             "ref_s": fwd32, "speedup": fwd32 / fwd, "gflops": round(flops / fwd / 1e9, 1),
             "of_gemm": round(flops / fwd / 1e9 / gemm_bf16, 2), "max_rel_diff": _rel_diff(y16.feats.float(), y32)}]
    xg = x16.replace_feature(x16.feats.clone().requires_grad_(True))
    grad16 = grad.to(torch.bfloat16)
    fb = timed(lambda: conv16(xg).feats.backward(grad16), repeats=repeats)
    rows.append({"case": f"SubM 64->64 bf16 forward + backward, {tag}", "pc3d_s": fb, "ref": "pc3d float32",
                 "ref_s": fb32, "speedup": fb32 / fb, "gflops": round(3 * flops / fb / 1e9, 1),
                 "of_gemm": round(3 * flops / fb / 1e9 / gemm_bf16, 2)})
    return rows


def _torch_depthwise(feats: torch.Tensor, w: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Depthwise sparse conv in plain torch (gather, multiply, index_add per offset): w [K, C], table [N, K]."""
    out = feats.new_zeros(feats.shape)
    for k in range(table.shape[1]):
        rows = (table[:, k] >= 0).nonzero().squeeze(1)
        out.index_add_(0, rows, feats[table[rows, k]] * w[k])
    return out


def _depthwise_rows(x, grad, tag, timed, repeats) -> list[dict]:
    """Depthwise SubM k3, C = 64 (groups = 64: the SDSC U-Net's conv) against the same maths in torch."""
    from pc3d.sparse.ops import _weight_kgio

    torch.manual_seed(0)
    conv = sp.SubMConv3d(64, 64, 3, groups=64, bias=False)
    table = torch.from_numpy(submanifold_map(x, (3, 3, 3), (1, 1, 1)).table()).long()
    pairs = int((table >= 0).sum())
    flops = 2 * pairs * 64

    def reference(feats):
        return _torch_depthwise(feats, _weight_kgio(conv.weight, 64).reshape(table.shape[1], 64), table)

    with torch.no_grad():
        ours = timed(lambda: conv(x), repeats=repeats)
        ref = timed(lambda: reference(x.feats), repeats=repeats)
        diff = _rel_diff(conv(x).feats, reference(x.feats))
    rows = [{"case": f"depthwise SubM k3 C=64 forward (cached map), {tag}", "pc3d_s": ours,
             "ref": "torch gather-mul-index_add", "ref_s": ref, "speedup": ref / ours,
             "gflops": round(flops / ours / 1e9, 2), "max_rel_diff": diff}]
    xg = x.replace_feature(x.feats.clone().requires_grad_(True))
    feats_ref = x.feats.clone().requires_grad_(True)
    ours = timed(lambda: conv(xg).feats.backward(grad), repeats=repeats)
    ref = timed(lambda: reference(feats_ref).backward(grad), repeats=repeats)
    rows.append({"case": f"depthwise SubM k3 C=64 forward + backward, {tag}", "pc3d_s": ours,
                 "ref": "torch gather-mul-index_add", "ref_s": ref, "speedup": ref / ours,
                 "gflops": round(3 * flops / ours / 1e9, 2)})
    rows.extend(_grouped_loop_rows(x, conv, grad, tag, timed, repeats))
    return rows


def _grouped_loop_rows(x, conv, grad, tag, timed, repeats) -> list[dict]:
    """The depthwise conv against pc3d's general grouped kernels (scalar loops per group; what depthwise convs
    ran on before their per-channel kernels): forward, and forward + feature gradient + weight gradient."""
    from pc3d_ops import sparse_conv as kernels

    from pc3d.sparse.ops import _weight_kgio

    table = submanifold_map(x, (3, 3, 3), (1, 1, 1)).table()
    w = _weight_kgio(conv.weight.detach(), 64).numpy()
    feats, g = x.feats.numpy(), grad.numpy()
    out = np.empty_like(feats)
    loop = kernels.gather_gemm_scatter(64, 1, 1, False)
    wgrad = kernels.weight_gradient(64, 1, 1, False)

    def loop_forward():
        loop(feats, w, table, out)

    def loop_forward_backward():
        loop(feats, w, table, out)
        loop(g, np.ascontiguousarray(w[::-1]), table, np.empty_like(feats))  # symmetric map: reversed offsets
        wgrad(feats, g, table, np.zeros((kernels.wgrad_tasks(len(table)), *w.shape), np.float32))

    xg = x.replace_feature(x.feats.clone().requires_grad_(True))
    with torch.no_grad():
        ours = timed(lambda: conv(x), repeats=repeats)
    ref = timed(loop_forward, repeats=repeats)
    rows = [{"case": f"depthwise SubM k3 C=64 forward (cached map), {tag}", "pc3d_s": ours,
             "ref": "pc3d grouped-loop kernel", "ref_s": ref, "speedup": ref / ours}]
    ours = timed(lambda: conv(xg).feats.backward(grad), repeats=repeats)
    ref = timed(loop_forward_backward, repeats=repeats)
    rows.append({"case": f"depthwise SubM k3 C=64 forward + backward, {tag}", "pc3d_s": ours,
                 "ref": "pc3d grouped-loop kernels", "ref_s": ref, "speedup": ref / ours})
    return rows


def _open3d_rows(x, conv, grad, tag, timed, quick) -> list[dict]:
    """SubM 64->64 against Open3D-ML's SparseConv (a fixed-radius neighbour search, then its
    continuous-conv kernel): same weights, map / neighbour search included on both sides."""
    case = f"SubM 64->64 {{}} (map included), {tag}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import open3d.ml.torch as ml3d
    except Exception as err:  # noqa: BLE001  (an ABI mismatch with torch raises anything)
        return [{"case": case.format("forward"), "ref": f"Open3D-ML unavailable: {type(err).__name__}"}]
    peer = ml3d.layers.SparseConv(64, 64, [3, 3, 3], use_bias=False)
    with torch.no_grad():  # pc3d [Cout, kz, ky, kx, Cin] -> Open3D [kz, ky, kx, Cin, Cout] (x -> width)
        peer.kernel.copy_(conv.weight.permute(1, 2, 3, 4, 0))
    positions = x.coords[:, [3, 2, 1]].float() + 0.5  # voxel centres, (x, y, z), voxel size 1

    def ours(feats):
        return conv(sp.SparseTensor(feats, x.coords, x.spatial_shape, 1)).feats  # builds its map every call

    def theirs(feats):
        return peer(feats, positions, positions, 1.0)

    repeats = 1 if quick else 3
    with torch.no_grad():
        diff = _rel_diff(theirs(x.feats), ours(x.feats))
        t_ours = timed(lambda: ours(x.feats), repeats=repeats)
        t_ref = timed(lambda: theirs(x.feats), repeats=repeats)
    rows = [{"case": case.format("forward"), "pc3d_s": t_ours, "ref": "Open3D-ML SparseConv", "ref_s": t_ref,
             "speedup": t_ref / t_ours, "max_rel_diff": diff}]
    if quick:  # Open3D's forward + backward takes seconds
        return rows
    fa = x.feats.clone().requires_grad_(True)
    fb = x.feats.clone().requires_grad_(True)
    t_ours = timed(lambda: ours(fa).backward(grad), repeats=repeats)
    t_ref = timed(lambda: theirs(fb).backward(grad), repeats=repeats)
    for t in (fa, fb, conv.weight, peer.kernel):
        t.grad = None
    ours(fa).backward(grad)
    theirs(fb).backward(grad)
    grad_diff = max(_rel_diff(fa.grad, fb.grad), _rel_diff(conv.weight.grad, peer.kernel.grad.permute(4, 0, 1, 2, 3)))
    conv.weight.grad = None
    rows.append({"case": case.format("forward + backward"), "pc3d_s": t_ours, "ref": "Open3D-ML SparseConv",
                 "ref_s": t_ref, "speedup": t_ref / t_ours, "max_rel_grad_diff": grad_diff})
    return rows


class _BatchNormF64(torch.nn.BatchNorm1d):
    """BatchNorm1d whose statistics and normalisation run in float64 (the result in the input's dtype):
    the gradient table's control for how much of the float32 error BatchNorm's own arithmetic makes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.batch_norm(x.double(), None, None, self.weight.double(), self.bias.double(),
                                              True, 0.0, self.eps).to(x.dtype)


def _backbone_step(voxel: float, dtype: torch.dtype = torch.float32, act=torch.nn.ReLU, norm=None):
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
            out.feats.float().square().mean().backward()
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
    bf16 = timed(lambda: step("native", bf16=True), repeats=repeats)
    out_bf16 = step("native", bf16=True)
    rows.append({"case": f"VoxelBackBone8x stages fwd + bwd, bf16 autocast, {tag}", "pc3d_s": bf16,
                 "ref": "spconv CPU (float32)", "ref_s": ref, "speedup": ref / bf16,
                 "vs_pc3d_float32": round(ours / bf16, 2),
                 "max_rel_diff": _rel_diff(out_bf16.feats.float(), out_ours.feats)})
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


# ---------------------------------------------------------------------------------------------
# Weight-gradient agreement: pc3d float32 and spconv float32 against pc3d float64, layer by layer


class _ConvProbe:
    """Forward hooks on every sparse conv of a net: each conv's input features and sites, output
    sites, the gradient reaching its output, and its kernel map (native runs)."""

    def __init__(self, net: torch.nn.Module):
        self.layers: dict[str, dict] = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in net.named_modules()
                         if isinstance(m, sp.SparseConvolution)]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0]
            rec = self.layers[name] = {"x": x.feats.detach(), "x_coords": x.coords, "y": output.feats.detach(),
                                       "y_coords": output.coords, "module": module}
            if sp.get_backend() == "native":
                rec["kmap"], rec["inverse"] = module.kernel_map(x)  # cached: no second build
            output.feats.register_hook(lambda g: rec.__setitem__("dy", g.detach()))
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _probe_run(voxel: float, dtype: torch.dtype, backend: str, act=torch.nn.ReLU, norm=None
               ) -> tuple[dict, dict]:
    """({conv name: probe record}, {conv name: weight gradient}) of one fwd + bwd step; the record of
    each conv also holds `act_out`, the features after its activation (the next conv's input)."""
    step, net, _ = _backbone_step(voxel, dtype, act, norm)
    probe = _ConvProbe(net)
    try:
        out = step(backend)
    finally:
        probe.remove()
    layers = probe.layers
    names = list(layers)
    for name, after in zip(names, names[1:] + [None], strict=True):
        rec = layers[name]
        rec["act_out"] = (layers[after]["x"], layers[after]["x_coords"]) if after else (out.feats.detach(), out.coords)
    grads = {name: layers[name]["module"].weight.grad.detach().double() for name in layers}
    return layers, grads


def _aligned(feats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Rows in (batch, z, y, x) order, so runs whose engines order sites differently compare row by row."""
    return _sorted_rows(coords, feats.double())


def _norm_rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).norm() / ref.norm().clamp(min=1e-300))


def _max_rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-300))


def _kernel_only(rec: dict) -> tuple[float, float, float]:
    """(pc3d, torch-GEMM, cancellation) on the float64 run's own inputs rounded to float32.

    The first two are the norm-relative errors of a float32 weight gradient computed from exactly the
    same float32 inputs by pc3d's kernel and by what spconv's CPU path does (gather, then torch.mm per
    offset): the error the kernel adds by itself, without what earlier layers passed on. The last is
    || |X|^T |dY| || / || X^T dY ||: how much the sum cancels, the factor by which rounding the
    summands (relative error u each) grows into the gradient's relative error."""
    from pc3d.sparse.ops import _weight_gradient, _weight_kgio

    kmap, inverse, module = rec["kmap"], rec["inverse"], rec["module"]
    nbr = kmap.table(inverse)
    shape = tuple(_weight_kgio(module.weight, module.groups).shape)
    x32, dy32 = rec["x"].float(), rec["dy"].float()
    exact = _weight_gradient(x32.double(), dy32.double(), nbr, kmap, shape)
    ours = _weight_gradient(x32, dy32, nbr, kmap, shape)
    table = torch.from_numpy(nbr).long()
    gemm = torch.zeros(shape)
    for k in range(shape[0]):
        rows = (table[:, k] >= 0).nonzero().squeeze(1)
        gemm[k, 0] = torch.mm(x32[table[rows, k]].t(), dy32[rows])
    magnitude = _weight_gradient(rec["x"].abs(), rec["dy"].abs(), nbr, kmap, shape)
    reference = _weight_gradient(rec["x"], rec["dy"], nbr, kmap, shape)
    return _norm_rel(ours, exact), _norm_rel(gemm, exact), float(magnitude.norm() / reference.norm())


def gradient_table(voxel: float, control: bool = True) -> list[dict]:
    """One row per conv of the benchmark's VoxelBackBone8x (fwd + bwd, loss mean(out^2), BatchNorm in
    training mode): the weight-gradient error of pc3d float32 and spconv float32 (ConvAlgo.Native)
    against pc3d float64 with the same weights and inputs, norm-relative ||g - g64|| / ||g64|| and
    max-relative max|g - g64| / max|g64|; the errors each run's conv input and output gradient
    already carry (norm-relative, rows matched by site); the kernel-only errors and the cancellation
    of the weight-gradient sum; the ReLU flips after the conv (elements whose sign differs from the
    float64 run's); with `control`, the norm-relative errors of the same stack with SiLU (no kink), and
    with SiLU and BatchNorm computed in float64 (what is left is the convs' own float32 arithmetic)."""
    ref_layers, ref_grads = _probe_run(voxel, torch.float64, "native")
    ours_layers, ours_grads = _probe_run(voxel, torch.float32, "native")
    sp_layers, sp_grads = _probe_run(voxel, torch.float32, "spconv")
    controls = {}  # label -> (float64 run's grads, {engine: float32 grads})
    if control:
        bn64 = partial(_BatchNormF64, eps=1e-3)
        for label, act, norm in (("silu", torch.nn.SiLU, None), ("silu_bn64", torch.nn.SiLU, bn64)):
            _, exact = _probe_run(voxel, torch.float64, "native", act, norm)
            controls[label] = exact, {tag: _probe_run(voxel, torch.float32, backend, act, norm)[1]
                                      for tag, backend in (("pc3d", "native"), ("spconv", "spconv"))}
    rows = []
    for name, ref in ref_layers.items():
        module = ref["module"]
        kind = "subm" if module.subm else "s" + "".join(map(str, module.stride))
        x64 = _aligned(ref["x"], ref["x_coords"])
        dy64 = _aligned(ref["dy"], ref["y_coords"])
        act64 = _aligned(*ref["act_out"])
        k_ours, k_gemm, cancel = _kernel_only(ref)
        row = {"layer": name, "conv": f"{module.in_channels}->{module.out_channels} {kind}", "sites": len(ref["y"]),
               "pc3d_norm_rel": _norm_rel(ours_grads[name], ref_grads[name]),
               "spconv_norm_rel": _norm_rel(sp_grads[name], ref_grads[name]),
               "pc3d_max_rel": _max_rel(ours_grads[name], ref_grads[name]),
               "spconv_max_rel": _max_rel(sp_grads[name], ref_grads[name])}
        for tag, layers in (("pc3d", ours_layers), ("spconv", sp_layers)):
            rec = layers[name]
            row[f"{tag}_x_err"] = _norm_rel(_aligned(rec["x"], rec["x_coords"]), x64)
            row[f"{tag}_dy_err"] = _norm_rel(_aligned(rec["dy"], rec["y_coords"]), dy64)
            row[f"{tag}_relu_flips"] = int(((_aligned(*rec["act_out"]) > 0) != (act64 > 0)).sum())
        row.update({"pc3d_kernel_only": k_ours, "gemm_kernel_only": k_gemm, "cancellation": cancel})
        for label, (exact, runs) in controls.items():
            for tag, grads in runs.items():
                row[f"{tag}_{label}_norm_rel"] = _norm_rel(grads[name], exact[name])
        rows.append(row)
    return rows


GRAD_COLUMNS = (("layer", "layer"), ("conv", "conv"), ("sites", "sites"),
                ("pc3d_norm_rel", "pc3d ‖Δg‖/‖g‖"), ("spconv_norm_rel", "spconv ‖Δg‖/‖g‖"),
                ("pc3d_max_rel", "pc3d max-rel"), ("spconv_max_rel", "spconv max-rel"),
                ("pc3d_x_err", "pc3d in err"), ("spconv_x_err", "spconv in err"),
                ("pc3d_dy_err", "pc3d ∂out err"), ("spconv_dy_err", "spconv ∂out err"),
                ("pc3d_relu_flips", "pc3d ReLU flips"), ("spconv_relu_flips", "spconv ReLU flips"),
                ("pc3d_kernel_only", "pc3d kernel only"), ("gemm_kernel_only", "torch.mm kernel only"),
                ("cancellation", "cancel ‖|X|ᵀ|dY|‖/‖XᵀdY‖"),
                ("pc3d_silu_norm_rel", "SiLU: pc3d ‖Δg‖/‖g‖"), ("spconv_silu_norm_rel", "SiLU: spconv ‖Δg‖/‖g‖"),
                ("pc3d_silu_bn64_norm_rel", "SiLU + BN in f64: pc3d"),
                ("spconv_silu_bn64_norm_rel", "SiLU + BN in f64: spconv"))


def gradient_markdown(voxel: float, rows: list[dict]) -> str:
    columns = [(k, title) for k, title in GRAD_COLUMNS if k in rows[0]]
    lines = [f"### sparse: weight-gradient error against pc3d float64, VoxelBackBone8x, {voxel} m", "",
             "| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [f"{r[k]:.2e}" if isinstance(r[k], float) else str(r[k]) for k, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gradient_summary(voxel: float, layers: list[dict]) -> dict:
    """The suite-table row of one gradient table: worst layers, where pc3d is at most spconv, the flips."""
    within = sum(r["pc3d_norm_rel"] <= r["spconv_norm_rel"] for r in layers)
    row = {"case": f"VoxelBackBone8x weight-gradient error vs float64 (worst layer), {voxel} m",
           "ref": "spconv CPU", "grad_norm_rel": max(r["pc3d_norm_rel"] for r in layers),
           "ref_grad_norm_rel": max(r["spconv_norm_rel"] for r in layers),
           "grad_layers_pc3d_le_ref": f"{within}/{len(layers)}",
           "relu_flips": f"{sum(r['pc3d_relu_flips'] for r in layers)} / {sum(r['spconv_relu_flips'] for r in layers)}",
           "kernel_only_le_gemm": f"{sum(r['pc3d_kernel_only'] <= r['gemm_kernel_only'] for r in layers)}"
                                  f"/{len(layers)}"}
    if "pc3d_silu_bn64_norm_rel" in layers[0]:
        row["silu_bn64_grad_norm_rel"] = max(r["pc3d_silu_bn64_norm_rel"] for r in layers)
        row["silu_bn64_ref_grad_norm_rel"] = max(r["spconv_silu_bn64_norm_rel"] for r in layers)
    return row
