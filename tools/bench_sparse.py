"""`tools/bench.py sparse`: pc3d's native sparse engine against spconv's CPU path (ConvAlgo.Native).

Workload: the 360-degree sweep ../shared/samples/scan360/benchmark-pc.npz at 0.1 m and 0.05 m,
batch 1, torch's thread count (2 on the reference machine). Both engines get the same input sites
in the same order and the same weights.

Engine-against-engine rows time each engine's repeats in a block; same-engine ratios (bf16 / float32, the depthwise
kernels / the generic grouped ones, the backbone's bf16 / float32) take turns (_common.alternated). Alternating pc3d
with spconv was tried (2026-12-06): each engine's call then follows the other's, whose allocator and cache state
slowed pc3d's VoxelBackBone8x step by 10-25 %, an artefact no training loop has; blocks carry the host's drift
instead, so a ratio on a shared host is read over several runs. The backbone also gets a row timed in fresh
processes, the engines in turn over several rounds (`bench_backbone.fresh_process_rounds`): the median of the
rounds' ratios and their range. Where spconv does not import, its rows keep pc3d's side, the reference column
saying so (as the Open3D-ML rows do).
"""
from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import torch
from _common import alternated, load_benchmark_sweep, rel_diff, rows_in_site_order, spconv_missing, versus
from bench_backbone import backbone_rows
from bench_gradients import gradient_summary, gradient_table

import pc3d.sparse as sp
from pc3d.engine.optim import cpu_multiplies_bf16
from pc3d.sparse.kernel_map import submanifold_map
from pc3d.voxel import grid_sample


def _step(forward, grad, *leaves):
    """forward().backward(grad) as a training step runs it: the leaves' gradients cleared first (an optimiser's
    zero_grad), so each call writes fresh gradients instead of adding into the last call's (a feature-sized
    add per call, about 2 ms at 0.1 m, on both sides of a row)."""
    def call():
        for leaf in leaves:
            leaf.grad = None
        forward().backward(grad)
    return call


def _spconv():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import spconv.pytorch as spconv
        from spconv.core import ConvAlgo
        from spconv.pytorch import ops as spconv_ops
    return spconv, ConvAlgo, spconv_ops



def run_sparse(timed, quick: bool = False) -> list[dict]:
    torch.manual_seed(0)
    points, _ = load_benchmark_sweep()
    repeats = 3 if quick else 7
    rows: list[dict] = []

    # GFLOP/s of torch's square GEMM per dtype: the roof the sparse rows are read against (of_gemm). Its rows have
    # no pc3d side: the time is torch.mm's, in the reference columns
    gemm = {}
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bf16")):
        if dtype == torch.bfloat16 and not cpu_multiplies_bf16():  # torch's scalar fallback: a minute per GEMM
            gemm[dtype] = None
            rows.append({"case": "square GEMM 2048^3 bf16 (torch)", "ref": "not run: no bf16 instructions on this CPU"})
            continue
        a = torch.randn(2048, 2048).to(dtype)
        b = torch.randn(2048, 2048).to(dtype)
        gemm_s = timed(lambda a=a, b=b: torch.mm(a, b), repeats=repeats)
        gemm[dtype] = 2 * 2048**3 / gemm_s / 1e9
        rows.append({"case": f"square GEMM 2048^3 {name} (torch)", "ref": "torch.mm (the of_gemm roof)",
                     "ref_s": gemm_s, "ref_gflops": round(gemm[dtype], 1)})

    for voxel in (0.1, 0.05):
        rows.extend(_scale_rows(points, voxel, timed, repeats, gemm, quick))
    for voxel in (0.1,) if quick else (0.1, 0.05):
        rows.append(gradient_summary(voxel, gradient_table(voxel, control=not quick)))  # the per-layer table in it
    return rows


def _wide_row(coords, shape, timed, repeats, gemm32, spconv, ConvAlgo, missing) -> dict:
    """SubM 256 -> 256 forward + backward on the sweep's sites floored to 0.4 m (a U-Net's third level, where
    Cylinder3D and SpUNet run 256 channels), map cached, against spconv's; the weight gradient takes the per-offset
    GEMMs (ops.WIDE_WGRAD)."""
    wide = torch.unique(torch.cat([coords[:, :1], coords[:, 1:] // 4], 1), dim=0)
    x = sp.SparseTensor(torch.randn(len(wide), 256, requires_grad=True), wide, tuple(-(-s // 4) for s in shape), 1)
    conv = sp.SubMConv3d(256, 256, 3, bias=False)
    grad = torch.randn(len(wide), 256)
    kmap = submanifold_map(x, (3, 3, 3), (1, 1, 1))
    conv(x)  # the map, cached on x
    ours = timed(_step(lambda: conv(x).feats, grad, x.feats, conv.weight), repeats=repeats)
    ref = None
    if not missing:
        twin = spconv.SubMConv3d(256, 256, 3, bias=False, indice_key="wide", algo=ConvAlgo.Native)
        twin.load_state_dict(conv.state_dict())
        st = twin(spconv.SparseConvTensor(x.feats.detach(), wide, [-(-s // 4) for s in shape], 1))
        st = st.replace_feature(x.feats.detach().clone().requires_grad_(True))
        ref = timed(_step(lambda: twin(st).features, grad, st.features, twin.weight), repeats=repeats)
    flops = 3 * 2 * kmap.n_pairs * 256 * 256
    return {"case": f"SubM 256->256 forward + backward, 0.4 m ({len(wide):,} sites)", "pc3d_s": ours,
            **versus(ours, ref, missing), "gflops": round(flops / ours / 1e9, 1),
            "of_gemm": round(flops / ours / 1e9 / gemm32, 2)}


def _no_map_built(spconv_ops, fn):
    """fn, refusing to run if spconv builds a kernel map inside it (a "cached map" row must time the conv only)."""
    def call():
        build = spconv_ops.get_indice_pairs
        spconv_ops.get_indice_pairs = _refuse_map_build
        try:
            return fn()
        finally:
            spconv_ops.get_indice_pairs = build
    return call


def _refuse_map_build(*args, **kwargs):
    raise RuntimeError("spconv built a kernel map inside a cached-map row: the row would time the map too")


def _scale_rows(points, voxel, timed, repeats, gemm, quick) -> list[dict]:
    """Map build, SubM forward / backward, strided conv and the backbone at one voxel size; where spconv does not
    import, pc3d's side of each row alone, the reference column saying why (_common.spconv_missing)."""
    missing = spconv_missing()
    spconv, ConvAlgo, spconv_ops = (None, None, None) if missing else _spconv()
    rows: list[dict] = []
    coords_np, shape, _, _ = grid_sample(points, voxel)
    coords = torch.from_numpy(coords_np)
    n = len(coords)
    feats = torch.randn(n, 64)
    tag = f"{voxel} m ({n:,} voxels)"

    # kernel map build, SubM k3
    x = sp.SparseTensor(feats, coords, shape, 1)
    # the neighbour table and the block pair lists every CPU conv reads (spconv's pairs are its whole map too)
    ours = timed(lambda: submanifold_map(x, (3, 3, 3), (1, 1, 1)).pairs(False), repeats=repeats)
    ref = None if missing else timed(
        lambda: spconv_ops.get_indice_pairs(coords, 1, list(shape), ConvAlgo.Native, [3, 3, 3], [1, 1, 1],
                                            [1, 1, 1], [1, 1, 1], [0, 0, 0], subm=True), repeats=repeats)
    kmap = submanifold_map(x, (3, 3, 3), (1, 1, 1))
    rows.append({"case": f"kernel map SubM k3, {tag}", "pc3d_s": ours, **versus(ours, ref, missing),
                 "avg_neighbours": round(kmap.n_pairs / n, 2)})

    # SubM 64 -> 64 with a cached map
    conv = sp.SubMConv3d(64, 64, 3, bias=False, indice_key="subm")
    if not missing:
        twin = spconv.SubMConv3d(64, 64, 3, bias=False, indice_key="subm", algo=ConvAlgo.Native)
        twin.load_state_dict(conv.state_dict())
    with torch.no_grad():
        y_ours = conv(x)
        if not missing:
            y_ref = twin(spconv.SparseConvTensor(feats, coords, list(shape), 1))
            # spconv keeps a map on the tensor a conv returns, not on its input: run on that output's sites (a SubM
            # keeps them), or every call builds the map again
            st = y_ref.replace_feature(feats)
        fwd32 = timed(lambda: conv(x), repeats=repeats)
        ref = None if missing else timed(_no_map_built(spconv_ops, lambda: twin(st)), repeats=repeats)
    flops = 2 * kmap.n_pairs * 64 * 64
    rows.append({"case": f"SubM 64->64 forward (cached map), {tag}", "pc3d_s": fwd32, **versus(fwd32, ref, missing),
                 "gflops": round(flops / fwd32 / 1e9, 1),
                 "of_gemm": round(flops / fwd32 / 1e9 / gemm[torch.float32], 2),
                 "max_rel_diff": None if missing else rel_diff(y_ours.feats, y_ref.features)})

    xg = x.replace_feature(feats.clone().requires_grad_(True))
    if not missing:
        stg = st.replace_feature(feats.clone().requires_grad_(True))
    grad = torch.randn(n, 64)
    fb32 = timed(_step(lambda: conv(xg).feats, grad, xg.feats, conv.weight), repeats=repeats)
    ref = None if missing else timed(
        _no_map_built(spconv_ops, _step(lambda: twin(stg).features, grad, stg.features, twin.weight)), repeats=repeats)
    rows.append({"case": f"SubM 64->64 forward + backward, {tag}", "pc3d_s": fb32, **versus(fb32, ref, missing),
                 "gflops": round(3 * flops / fb32 / 1e9, 1)})
    rows.extend(_bf16_rows(x, conv, grad, flops, tag, repeats, y_ours.feats, gemm[torch.bfloat16]))
    if voxel == 0.1:
        rows.append(_wide_row(coords, shape, timed, min(repeats, 3), gemm[torch.float32], spconv, ConvAlgo, missing))
        rows.extend(_depthwise_rows(x, grad, tag, timed, repeats))
        rows.extend(_pointwise_rows(x, tag, timed, repeats, gemm[torch.float32]))
        rows.extend(_open3d_rows(x, conv, grad, tag, timed, quick))

    # strided conv, map included (fresh tensors every call)
    down = sp.SparseConv3d(64, 64, 3, stride=2, padding=1, bias=False)
    if not missing:
        down_ref = spconv.SparseConv3d(64, 64, 3, stride=2, padding=1, bias=False, algo=ConvAlgo.Native)
        down_ref.load_state_dict(down.state_dict())
    with torch.no_grad():
        ours = timed(lambda: down(sp.SparseTensor(feats, coords, shape, 1)), repeats=repeats)
        ref = None if missing else timed(lambda: down_ref(spconv.SparseConvTensor(feats, coords, list(shape), 1)),
                                         repeats=repeats)
        y_ours = down(sp.SparseTensor(feats, coords, shape, 1))
        y_ref = None if missing else down_ref(spconv.SparseConvTensor(feats, coords, list(shape), 1))
    rows.append({"case": f"strided conv k3 s2 64->64 (map included), {tag}", "pc3d_s": ours,
                 **versus(ours, ref, missing),
                 "max_rel_diff": None if missing else rel_diff(rows_in_site_order(y_ours.coords, y_ours.feats),
                                                               rows_in_site_order(y_ref.indices, y_ref.features))})

    rows.extend(backbone_rows(voxel, timed, repeats, quick))
    return rows


def _bf16_rows(x, conv, grad, flops, tag, repeats, y32, gemm_bf16: float | None) -> list[dict]:
    """SubM 64->64 in bf16 (bf16 features and weights, float32 sums) against pc3d's own float32 conv, the two
    timed in alternation (the float32 rows above were timed minutes earlier; the host's speed drifts), and
    against torch's bf16 square GEMM (of_gemm): the faster of its run-start figure (gemm_bf16, GFLOP/s; None
    where torch has no bf16 instructions to run it on) and a measurement right after the conv, so a slow
    spell of the host during either does not flatter the fraction. The GEMM stays out of the alternation:
    its 24 MB of operands would evict the conv's working set before every call."""
    conv16 = copy.deepcopy(conv).to(torch.bfloat16)
    x16 = x.replace_feature(x.feats.to(torch.bfloat16))  # same sites: the cached map is shared
    a, b = torch.randn(2048, 2048).bfloat16(), torch.randn(2048, 2048).bfloat16()

    def of_gemm(work, seconds):
        if gemm_bf16 is None:
            return None
        adjacent = 2 * 2048**3 / alternated([lambda: torch.mm(a, b)], repeats)[0] / 1e9
        return round(work / seconds / 1e9 / max(gemm_bf16, adjacent), 2)

    with torch.no_grad():
        y16 = conv16(x16)
        fwd32, fwd = alternated([lambda: conv(x), lambda: conv16(x16)], repeats)
    ref = "pc3d float32 (timed alternately)"
    rows = [{"case": f"SubM 64->64 bf16 forward (cached map), {tag}", "pc3d_s": fwd, "ref": ref, "ref_s": fwd32,
             "speedup": fwd32 / fwd, "gflops": round(flops / fwd / 1e9, 1), "of_gemm": of_gemm(flops, fwd),
             "max_rel_diff": rel_diff(y16.feats.float(), y32)}]
    xg = x.replace_feature(x.feats.clone().requires_grad_(True))
    xg16 = x16.replace_feature(x16.feats.clone().requires_grad_(True))
    grad16 = grad.to(torch.bfloat16)
    fb32, fb = alternated([_step(lambda: conv(xg).feats, grad, xg.feats, conv.weight),
                           _step(lambda: conv16(xg16).feats, grad16, xg16.feats, conv16.weight)], repeats)
    rows.append({"case": f"SubM 64->64 bf16 forward + backward, {tag}", "pc3d_s": fb, "ref": ref, "ref_s": fb32,
                 "speedup": fb32 / fb, "gflops": round(3 * flops / fb / 1e9, 1), "of_gemm": of_gemm(3 * flops, fb)})
    return rows


def _of(gflops: float, roof: float | None) -> float | None:
    """gflops as a fraction of the roof (None where the roof was not measured)."""
    return None if roof is None else round(gflops / roof, 2)


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
        diff = rel_diff(conv(x).feats, reference(x.feats))
    rows = [{"case": f"depthwise SubM k3 C=64 forward (cached map), {tag}", "pc3d_s": ours,
             "ref": "torch gather-mul-index_add", "ref_s": ref, "speedup": ref / ours,
             "gflops": round(flops / ours / 1e9, 2), "max_rel_diff": diff}]
    xg = x.replace_feature(x.feats.clone().requires_grad_(True))
    feats_ref = x.feats.clone().requires_grad_(True)
    ours = timed(_step(lambda: conv(xg).feats, grad, xg.feats, conv.weight), repeats=repeats)
    ref = timed(_step(lambda: reference(feats_ref), grad, feats_ref, conv.weight), repeats=repeats)
    rows.append({"case": f"depthwise SubM k3 C=64 forward + backward, {tag}", "pc3d_s": ours,
                 "ref": "torch gather-mul-index_add", "ref_s": ref, "speedup": ref / ours,
                 "gflops": round(3 * flops / ours / 1e9, 2)})
    rows.extend(_grouped_generic_rows(x, conv, grad, tag, repeats))
    return rows


def _pointwise_rows(x, tag, timed, repeats, gemm_fp32) -> list[dict]:
    """The SDSC pointwise 1x1 conv (pc3d.sparse.Linear, the row GEMM kernels) against torch's nn.Linear with
    the same weights, forward + backward (input and weight gradients), at the U-Net's widths."""
    rows = []
    for cin, cout in ((64, 96), (96, 64)):
        torch.manual_seed(0)
        ours = sp.Linear(cin, cout, bias=False)
        ref = torch.nn.Linear(cin, cout, bias=False)
        ref.load_state_dict(ours.state_dict())
        feats = torch.randn(len(x.feats), cin).requires_grad_(True)
        grad = torch.randn(len(x.feats), cout)
        flops = 3 * 2 * len(feats) * cin * cout

        t_ours = timed(_step(lambda layer=ours, f=feats: layer(f), grad, feats, ours.weight), repeats=repeats)
        t_ref = timed(_step(lambda layer=ref, f=feats: layer(f), grad, feats, ref.weight), repeats=repeats)
        gflops = flops / t_ours / 1e9
        rows.append({"case": f"pointwise {cin}->{cout} (SDSC 1x1) forward + backward, {tag}", "pc3d_s": t_ours,
                     "ref": "torch nn.Linear", "ref_s": t_ref, "speedup": t_ref / t_ours, "gflops": round(gflops, 1),
                     "of_gemm": _of(gflops, gemm_fp32), "max_rel_diff": rel_diff(ours(feats), ref(feats))})
    return rows


def _grouped_generic_rows(x, conv, grad, tag, repeats) -> list[dict]:
    """The depthwise conv against pc3d's general grouped kernels (the register-blocked micro-kernels, one masked
    lane per group, 64 groups a row): forward, and forward + feature gradient + weight gradient, the two timed in
    turn (_common.alternated). Read this row as "depthwise kernels vs the generic path a grouped conv would take
    without them"."""
    from pc3d_ops import sparse_conv as kernels

    from pc3d.sparse.ops import _weight_kgio

    pairs = submanifold_map(x, (3, 3, 3), (1, 1, 1)).pairs()
    w = _weight_kgio(conv.weight.detach(), 64).numpy()
    feats, g = x.feats.numpy(), grad.numpy()
    out = np.empty_like(feats)
    generic = kernels.gather_gemm_scatter(1)  # groups and input width from the arrays
    wgrad = kernels.pair_weight_gradient(1, "float32")

    def generic_forward():
        generic(feats, w, *pairs, out, kernels.NO_KEEP)

    def generic_forward_backward():
        generic(feats, w, *pairs, out, kernels.NO_KEEP)
        # a symmetric map: the transposed pairs are the same pairs with reversed offsets
        generic(g, np.ascontiguousarray(w[::-1]), *pairs, np.empty_like(feats), kernels.NO_KEEP)
        wgrad(feats, g, *pairs, np.zeros((kernels.wgrad_tasks(len(feats)), *w.shape), np.float32))

    xg = x.replace_feature(x.feats.clone().requires_grad_(True))
    with torch.no_grad():
        ours, ref = alternated([lambda: conv(x), generic_forward], repeats)
    rows = [{"case": f"depthwise SubM k3 C=64 forward (cached map), {tag}", "pc3d_s": ours,
             "ref": "pc3d generic grouped kernels", "ref_s": ref, "speedup": ref / ours}]
    ours, ref = alternated([_step(lambda: conv(xg).feats, grad, xg.feats, conv.weight), generic_forward_backward],
                           repeats)
    rows.append({"case": f"depthwise SubM k3 C=64 forward + backward, {tag}", "pc3d_s": ours,
                 "ref": "pc3d generic grouped kernels", "ref_s": ref, "speedup": ref / ours})
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

    cores = sorted(os.sched_getaffinity(0))[:torch.get_num_threads()]

    def theirs(feats):  # on as many cores as pc3d's threads: Open3D sizes its thread pool by the machine's cores
        allowed = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cores)
        try:
            return peer(feats, positions, positions, 1.0)
        finally:
            os.sched_setaffinity(0, allowed)

    repeats = 1 if quick else 3
    with torch.no_grad():
        diff = rel_diff(theirs(x.feats), ours(x.feats))
        t_ours = timed(lambda: ours(x.feats), repeats=repeats)
        t_ref = timed(lambda: theirs(x.feats), repeats=repeats)
    rows = [{"case": case.format("forward"), "pc3d_s": t_ours, "ref": "Open3D-ML SparseConv", "ref_s": t_ref,
             "speedup": t_ref / t_ours, "max_rel_diff": diff}]
    if quick:  # Open3D's forward + backward takes seconds
        return rows
    fa = x.feats.clone().requires_grad_(True)
    fb = x.feats.clone().requires_grad_(True)
    t_ours = timed(_step(lambda: ours(fa), grad, fa, conv.weight), repeats=repeats)
    t_ref = timed(_step(lambda: theirs(fb), grad, fb, peer.kernel), repeats=repeats)
    for t in (fa, fb, conv.weight, peer.kernel):
        t.grad = None
    ours(fa).backward(grad)
    theirs(fb).backward(grad)
    grad_diff = max(rel_diff(fa.grad, fb.grad), rel_diff(conv.weight.grad, peer.kernel.grad.permute(4, 0, 1, 2, 3)))
    conv.weight.grad = None
    rows.append({"case": case.format("forward + backward"), "pc3d_s": t_ours, "ref": "Open3D-ML SparseConv",
                 "ref_s": t_ref, "speedup": t_ref / t_ours, "max_rel_grad_diff": grad_diff})
    return rows

