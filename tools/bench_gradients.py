"""`tools/bench.py sparse`, the gradient table: the weight-gradient error of pc3d float32 and spconv float32
(ConvAlgo.Native) against pc3d float64, conv by conv of the benchmark's VoxelBackBone8x, with the controls that
say where the error comes from (the kernel alone, the sum's cancellation, SiLU for ReLU, BatchNorm in float64).
"""
from __future__ import annotations

from functools import partial

import torch
from _common import rows_in_site_order, spconv_missing
from bench_backbone import BatchNormF64, backbone_step

import pc3d.sparse as sp


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
    step, net, _ = backbone_step(voxel, dtype, act, norm)
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
    return rows_in_site_order(coords, feats.double())


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
    exact = _weight_gradient(x32.double(), dy32.double(), kmap, inverse, shape)
    ours = _weight_gradient(x32, dy32, kmap, inverse, shape)
    table = torch.from_numpy(nbr).long()
    gemm = torch.zeros(shape)
    for k in range(shape[0]):
        rows = (table[:, k] >= 0).nonzero().squeeze(1)
        gemm[k, 0] = torch.mm(x32[table[rows, k]].t(), dy32[rows])
    magnitude = _weight_gradient(rec["x"].abs(), rec["dy"].abs(), kmap, inverse, shape)
    reference = _weight_gradient(rec["x"], rec["dy"], kmap, inverse, shape)
    return _norm_rel(ours, exact), _norm_rel(gemm, exact), float(magnitude.norm() / reference.norm())


def gradient_table(voxel: float, control: bool = True) -> list[dict]:
    """One row per conv of the benchmark's VoxelBackBone8x (fwd + bwd, loss mean(out^2), BatchNorm in
    training mode): the weight-gradient error of pc3d float32 and spconv float32 (ConvAlgo.Native)
    against pc3d float64 with the same weights and inputs, norm-relative ||g - g64|| / ||g64|| and
    max-relative max|g - g64| / max|g64|; the errors each run's conv input and output gradient
    already carry (norm-relative, rows matched by site); the kernel-only errors and the cancellation
    of the weight-gradient sum; the ReLU flips after the conv (elements whose sign differs from the
    float64 run's); with `control`, the norm-relative errors of the same stack with SiLU (no kink), and
    with SiLU and BatchNorm computed in float64 (what is left is the convs' own float32 arithmetic). Where spconv
    does not import, pc3d's columns alone."""
    engines = {"pc3d": "native"} if spconv_missing() else {"pc3d": "native", "spconv": "spconv"}
    ref_layers, ref_grads = _probe_run(voxel, torch.float64, "native")
    f32_runs = {tag: _probe_run(voxel, torch.float32, backend) for tag, backend in engines.items()}  # layers, grads
    controls = {}  # label -> (float64 run's grads, {engine: float32 grads})
    if control:
        bn64 = partial(BatchNormF64, eps=1e-3)
        for label, act, norm in (("silu", torch.nn.SiLU, None), ("silu_bn64", torch.nn.SiLU, bn64)):
            _, exact = _probe_run(voxel, torch.float64, "native", act, norm)
            controls[label] = exact, {tag: _probe_run(voxel, torch.float32, backend, act, norm)[1]
                                      for tag, backend in engines.items()}
    rows = []
    for name, ref in ref_layers.items():
        module = ref["module"]
        kind = "subm" if module.subm else "s" + "".join(map(str, module.stride))
        x64 = _aligned(ref["x"], ref["x_coords"])
        dy64 = _aligned(ref["dy"], ref["y_coords"])
        act64 = _aligned(*ref["act_out"])
        k_ours, k_gemm, cancel = _kernel_only(ref)
        row = {"layer": name, "conv": f"{module.in_channels}->{module.out_channels} {kind}", "sites": len(ref["y"])}
        row.update({f"{tag}_norm_rel": _norm_rel(g[name], ref_grads[name]) for tag, (_, g) in f32_runs.items()})
        row.update({f"{tag}_max_rel": _max_rel(g[name], ref_grads[name]) for tag, (_, g) in f32_runs.items()})
        for tag, (layers, _) in f32_runs.items():
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


def gradient_section(voxel: float, rows: list[dict]) -> dict:
    """The per-layer table as a section of the suite's outputs (_common.section_markdown): the summary row carries
    it, so the suite's JSON holds every layer's row and its markdown the table."""
    return {"title": f"sparse: weight-gradient error against pc3d float64, VoxelBackBone8x, {voxel} m",
            "columns": {k: title for k, title in GRAD_COLUMNS if k in rows[0]}, "rows": rows}


def gradient_summary(voxel: float, layers: list[dict]) -> dict:
    """The suite-table row of one gradient table: worst layers, where pc3d is at most spconv, the flips (pc3d's
    figures alone where spconv does not import); the table itself under "table" (gradient_section)."""
    spconv = "spconv_norm_rel" in layers[0]
    tags = ("pc3d", "spconv") if spconv else ("pc3d",)
    row = {"case": f"VoxelBackBone8x weight-gradient error vs float64 (worst layer), {voxel} m",
           "ref": "spconv CPU" if spconv else spconv_missing(),
           "grad_norm_rel": max(r["pc3d_norm_rel"] for r in layers)}
    if spconv:
        within = sum(r["pc3d_norm_rel"] <= r["spconv_norm_rel"] for r in layers)
        row["ref_grad_norm_rel"] = max(r["spconv_norm_rel"] for r in layers)
        row["grad_layers_pc3d_le_ref"] = f"{within}/{len(layers)}"
    row["relu_flips"] = " / ".join(str(sum(r[f"{tag}_relu_flips"] for r in layers)) for tag in tags)
    row["kernel_only_le_gemm"] = f"{sum(r['pc3d_kernel_only'] <= r['gemm_kernel_only'] for r in layers)}/{len(layers)}"
    if "pc3d_silu_bn64_norm_rel" in layers[0]:
        row["silu_bn64_grad_norm_rel"] = max(r["pc3d_silu_bn64_norm_rel"] for r in layers)
        if spconv:
            row["silu_bn64_ref_grad_norm_rel"] = max(r["spconv_silu_bn64_norm_rel"] for r in layers)
    row["table"] = gradient_section(voxel, layers)
    return row
