"""Native sparse convolution and pooling over a KernelMap, with autograd.

On CPU the fused numba kernels of pc3d_ops.sparse_conv do the work (threaded, no atomics,
bitwise reproducible); on other devices the same maths runs as torch gather / mm / index_add.
Weights arrive in spconv 2.x layout [Cout, *kernel, Cin / groups] and are viewed here as
[K, G, Cin/G, Cout/G].

bfloat16: a conv multiplies in bf16 when its features and weights are bf16, or under
`torch.autocast` with dtype bf16 (the conv casts its inputs itself, like a custom_fwd with
cast_inputs, so float32 weights stay float32 parameters). The bf16 kernels sum in float32 and
round once; the output is bf16. Gradients come back in the dtype of what they differentiate: a
float32 weight under autocast gets a float32 gradient, summed in float32 and never rounded to bf16.
Which bf16 kernel runs (`pc3d_ops.bf16.kernel_name`, `python -m pc3d info`): AMX tiles
(pc3d_ops.sparse_conv_amx) where the CPU has AMX-BF16 and the OS grants the tile state, for
forward, feature gradient and (cin_g % 32 == 0) weight gradient; else vdpbf16ps or its fallback
(pc3d_ops.sparse_conv_bf16; PC3D_BF16_NO_AMX=1 forces this path) for forward, feature gradient and
(cout_g % 16 == 0) weight gradient, two pairs per instruction; the depthwise kernels read bf16 bits
themselves (float32 sums, no float32 copies); the float32 kernels on widened values for the other widths.
"""
from __future__ import annotations

import numpy as np
import torch
from pc3d_ops import amx as amx_ops
from pc3d_ops import bf16 as bf16_ops
from pc3d_ops import depthwise as dw_kernels
from pc3d_ops import kernel_map as km
from pc3d_ops import sparse_conv as kernels
from pc3d_ops import sparse_conv_amx as amx_kernels
from pc3d_ops import sparse_conv_bf16 as bf16_kernels
from pc3d_ops.aligned import host_zeros64

from pc3d.errors import SparseTensorError
from pc3d.sparse.kernel_map import KernelMap, sync_threads

_NUMBA_DTYPES = (torch.float32, torch.float64)


def check_unique(x) -> None:
    """Raise SparseTensorError if a site of x appears twice."""
    if len(x) < 2:
        return
    sync_threads()
    coords = x.coords.cpu().numpy()
    extents = np.array([x.batch_size, *x.spatial_shape], np.int64)
    keys = km.linear_keys(coords, extents, np.zeros(len(extents), np.int64))
    if km.is_sorted_strictly(keys):
        return
    sorted_keys, order = km.radix_argsort(keys, int(np.prod(extents.astype(np.float64))))
    dup = km.first_duplicate(sorted_keys)
    if dup >= 0:
        raise SparseTensorError(f"duplicate coordinate {coords[int(order[dup])].tolist()}")


def _weight_kgio(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """[Cout, *kernel, Cin_g] -> [K, G, Cin_g, Cout_g] (contiguous)."""
    cout, cin_g = weight.shape[0], weight.shape[-1]
    kvol = weight[0, ..., 0].numel()
    return weight.reshape(groups, cout // groups, kvol, cin_g).permute(2, 0, 3, 1).contiguous()


def compute_dtype(feats: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype a conv multiplies in: autocast's where autocast is on for the features' device
    (float64 is never cast down, as autocast does), else the features' (which must be the weights')."""
    device = feats.device.type
    if torch.is_autocast_enabled(device) and torch.float64 not in (feats.dtype, weight.dtype):
        return torch.get_autocast_dtype(device)
    if feats.dtype != weight.dtype:
        raise SparseTensorError(f"features are {feats.dtype} but weights are {weight.dtype}")
    return feats.dtype


def numpy_bits(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor; bf16 as its int16 bits (numba has no bf16 type)."""
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _bf16_gather_gemm_scatter(feats: torch.Tensor, w: torch.Tensor, kmap: KernelMap, transposed: bool,
                              out_dtype: torch.dtype, keep: np.ndarray | None) -> torch.Tensor:
    """The bf16 forward / feature gradient on CPU: float32 sums, output in out_dtype."""
    kvol, groups, cin_g, cout_g = w.shape
    n_out = _rows(kmap, transposed)
    if cout_g % bf16_ops.LANES:  # widths the bf16 micro-kernel does not cover: exact products in float32
        return _gather_gemm_scatter(feats.float(), w.float(), kmap, transposed, keep=keep).to(out_dtype)
    out = torch.empty((n_out, groups * cout_g), dtype=out_dtype)
    if n_out:
        sync_threads()
        w_vnni = bf16_ops.to_vnni(w.contiguous().view(torch.int16).numpy())
        if amx_ops.use_amx():  # AMX tiles where the CPU has them and the OS grants them (PC3D_BF16_NO_AMX=1: off)
            kernel = amx_kernels.gather_gemm_scatter(cin_g, cout_g)
        else:
            kernel = bf16_kernels.gather_gemm_scatter(cout_g, bf16_ops.use_native())
        pairs = kmap.pairs(transposed) if keep is None else kernels.block_pairs(
            kernels.drop_inputs(kmap.table(transposed), keep), kernels.ROWS_PER_BLOCK)
        kernel(numpy_bits(feats.contiguous()), w_vnni, *pairs, numpy_bits(out))
    return out


def _rows(kmap: KernelMap, transposed: bool) -> int:
    """Output rows of a conv over the map's table (transposed: the map's inputs)."""
    return kmap.n_in if transposed else kmap.nbr.shape[0]


def _depthwise(groups: int, cin_g: int, cout_g: int) -> bool:
    """One input and one output channel per group: the per-channel kernels (channels across vector lanes)."""
    return groups > 1 and cin_g == 1 and cout_g == 1


def _gather_gemm_scatter(feats: torch.Tensor, w: torch.Tensor, kmap: KernelMap, transposed: bool,
                         out_dtype: torch.dtype | None = None, keep: np.ndarray | None = None) -> torch.Tensor:
    """out[o] = sum_k feats[nbr[o, k]] @ w[k] per group over `kmap.table(transposed)`; w: [K, G, cin_g, cout_g]
    in feats' dtype.

    out_dtype (default: feats') only differs for bf16 inputs on CPU, whose float32 sums can be
    returned unrounded. keep (bool [N_in]): only these input rows take part (the others are all zeros);
    the float32 micro-kernel tests it while collecting pairs, the other paths get a table without them.
    The CPU kernels read the map's cached pair lists (`KernelMap.pairs`) and never need the table itself: a
    transposed table is built only for the other paths."""
    kvol, groups, cin_g, cout_g = w.shape
    n_out = _rows(kmap, transposed)

    def table() -> np.ndarray:
        nbr = kmap.table(transposed)
        return nbr if keep is None else kernels.drop_inputs(nbr, keep)

    if feats.device.type == "cpu" and feats.dtype in (*_NUMBA_DTYPES, torch.bfloat16) and _depthwise(
            groups, cin_g, cout_g):  # the per-channel kernels; bf16 read as bits, float32 sums, rounded once
        out = torch.empty((n_out, groups), dtype=out_dtype or feats.dtype)
        if n_out:
            sync_threads()
            pairs = kmap.pairs(transposed) if keep is None else kmap.block_pairs(table())
            w_kc = numpy_bits(w.reshape(kvol, groups).contiguous())
            dw_kernels.depthwise(groups)(numpy_bits(feats.contiguous()), w_kc, *pairs, numpy_bits(out))
        return out
    if feats.device.type == "cpu" and feats.dtype in _NUMBA_DTYPES:
        out = feats.new_empty((n_out, groups * cout_g))
        if n_out:  # the register-blocked micro-kernel, every width (a masked last vector where lanes do not divide it)
            sync_threads()
            kernel = kernels.gather_gemm_scatter(cout_g, skip=keep is not None)
            kernel(feats.contiguous().numpy(), w.numpy(), *kmap.pairs(transposed), out.numpy(),
                   kernels.NO_KEEP if keep is None else keep)
        return out
    if feats.device.type == "cpu" and feats.dtype == torch.bfloat16:
        return _bf16_gather_gemm_scatter(feats, w, kmap, transposed, out_dtype or feats.dtype, keep)
    if feats.device.type != "cpu" and keep is None:
        nbr = kmap.table_on(feats.device, transposed)
    else:
        nbr = torch.from_numpy(table()).long().to(feats.device)
    out = feats.new_zeros((n_out, groups * cout_g))
    for k in range(kvol):
        rows = (nbr[:, k] >= 0).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        x = feats[nbr[rows, k]].view(len(rows), groups, cin_g).transpose(0, 1)
        out.index_add_(0, rows, torch.bmm(x, w[k]).transpose(0, 1).reshape(len(rows), -1))
    return out if out_dtype is None else out.to(out_dtype)


def _weight_gradient(feats: torch.Tensor, grad: torch.Tensor, kmap: KernelMap, transposed: bool,
                     shape_kgio: tuple[int, int, int, int], keep: np.ndarray | None = None) -> torch.Tensor:
    """dW[k] = sum_o feats[nbr[o, k]]^T grad[o] per group over `kmap.table(transposed)` (keep: only those input
    rows), [K, G, cin_g, cout_g]; float32 for bf16 inputs (AMX tiles where they cover the widths, else
    vdpbf16ps two pairs at a time where cout_g % 16 == 0, else the float32 kernels on widened values)."""
    kvol, groups, cin_g, cout_g = shape_kgio
    n_out = _rows(kmap, transposed)

    def table() -> np.ndarray:
        nbr = kmap.table(transposed)
        return nbr if keep is None else kernels.drop_inputs(nbr, keep)

    def pairs():
        return kmap.pairs(transposed) if keep is None else kmap.block_pairs(table())

    if feats.device.type == "cpu" and feats.dtype in (*_NUMBA_DTYPES, torch.bfloat16) and _depthwise(
            groups, cin_g, cout_g):  # bf16 read as bits: float32 sums
        sum_dtype = np.float32 if feats.dtype == torch.bfloat16 else feats.numpy().dtype
        partial = host_zeros64((kernels.wgrad_tasks(n_out), kvol, groups), sum_dtype)
        if n_out:
            sync_threads()
            starts = kmap.pairs(transposed)[0]  # the whole map's: the tasks' split, whatever keep drops
            dw_kernels.depthwise_weight_gradient(groups)(numpy_bits(feats.contiguous()),
                                                         numpy_bits(grad.contiguous()), table(), starts, partial)
        return torch.from_numpy(_sum_tasks(partial).reshape(shape_kgio))
    if feats.device.type == "cpu" and feats.dtype == torch.bfloat16:  # exact products, float32 sums
        if amx_kernels.wgrad_supports(cin_g, cout_g) and amx_ops.use_amx():
            partial = host_zeros64((kernels.wgrad_tasks(n_out), *shape_kgio), np.float32)
            if n_out:
                sync_threads()
                amx_kernels.weight_gradient(cin_g, cout_g)(numpy_bits(feats.contiguous()),
                                                           numpy_bits(grad.contiguous()), *pairs(), partial)
            return torch.from_numpy(_sum_tasks(partial))
        if cout_g % bf16_ops.LANES == 0:  # two pairs per vdpbf16ps (or its bitwise fallback)
            partial = host_zeros64((kernels.wgrad_tasks(n_out), *shape_kgio), np.float32)
            if n_out:
                sync_threads()
                kernel = bf16_kernels.pair_weight_gradient(cin_g, cout_g, bf16_ops.use_native())
                kernel(numpy_bits(feats.contiguous()), numpy_bits(grad.contiguous()), *pairs(), partial)
            return torch.from_numpy(_sum_tasks(partial))
        return _weight_gradient(feats.float(), grad.float(), kmap, transposed, shape_kgio, keep)
    if feats.device.type == "cpu" and feats.dtype in _NUMBA_DTYPES and groups == 1 and cin_g >= WIDE_WGRAD[0] \
            and cout_g >= WIDE_WGRAD[1]:
        return _gemm_weight_gradient(feats, grad, kmap, transposed, shape_kgio)
    if feats.device.type == "cpu" and feats.dtype in _NUMBA_DTYPES:
        x = feats.contiguous().numpy()
        partial = host_zeros64((kernels.wgrad_tasks(n_out), *shape_kgio), x.dtype)
        if n_out:
            sync_threads()
            g = grad.contiguous().numpy()  # register-blocked over the map's cached pair lists, every width
            kernels.pair_weight_gradient(cout_g, x.dtype.name)(x, g, *pairs(), partial)
        return torch.from_numpy(_sum_tasks(partial))
    if feats.device.type != "cpu" and keep is None:
        nbr = kmap.table_on(feats.device, transposed)
    else:
        nbr = torch.from_numpy(table()).long().to(feats.device)
    out = feats.new_zeros(shape_kgio)
    for k in range(kvol):
        rows = (nbr[:, k] >= 0).nonzero().squeeze(1)
        x = feats[nbr[rows, k]].view(len(rows), groups, cin_g).transpose(0, 1)
        g = grad[rows].view(len(rows), groups, cout_g).transpose(0, 1)
        out[k] = torch.bmm(x.transpose(1, 2), g)
    return out


# (cin, cout) from which a dense conv's float weight gradient runs as one torch GEMM per offset over gathered rows
# rather than the register-blocked kernel, whose dW blocks stream from memory at wide output widths (SubM 3^3 on the
# EPYC, 16.7 k sites: 256 -> 256 1.6x, 512 -> 512 1.9x, 96 -> 192 1.3x; 256 -> 128 and 512 -> 64 0.7x and 0.5x)
WIDE_WGRAD = (96, 192)


def _gemm_weight_gradient(feats: torch.Tensor, grad: torch.Tensor, kmap: KernelMap, transposed: bool,
                          shape_kgio: tuple[int, int, int, int]) -> torch.Tensor:
    """dW[k] = feats[inputs of k]^T @ grad[outputs of k] by torch.mm (CPU, groups 1), over the map's own table: a
    transposed run (an inverse conv) reads the same pairs with the roles swapped, so no transposed table is built.
    Deterministic at a fixed thread count; with skip_zero the all-zero rows take part (they add zeros)."""
    nbr = kmap.table(False)
    out = feats.new_empty(shape_kgio)
    for k in range(shape_kgio[0]):
        rows = np.flatnonzero(nbr[:, k] >= 0)
        if not len(rows):
            out[k].zero_()
            continue
        outs, ins = torch.from_numpy(rows), torch.from_numpy(nbr[rows, k].astype(np.int64))
        if transposed:
            outs, ins = ins, outs
        torch.mm(feats[ins].t(), grad[outs], out=out[k, 0])
    return out


def _sum_tasks(partial: np.ndarray) -> np.ndarray:
    total = partial[0].copy()
    for t in range(1, partial.shape[0]):  # fixed order: deterministic
        total += partial[t]
    return total


def nonzero_rows(feats: torch.Tensor) -> np.ndarray:
    """bool [N]: the rows of feats (CPU) with a non-zero value; a conv leaves the others (a spiking layer's
    silent sites) out of its work with the same sums."""
    sync_threads()
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[feats.element_size()]
    return kernels.nonzero_rows(feats.contiguous().view(bits).numpy())


class _SparseConvFunction(torch.autograd.Function):
    """Features [N_out, G*cout_g] = conv of feats with w [K, G, cin_g, cout_g], multiplied in `dtype`.

    Inputs of another dtype are cast here (autocast's cast_inputs); gradients are returned in the
    inputs' own dtypes. custom_fwd / custom_bwd run backward under forward's autocast state.
    With `skip_zero`, forward and weight gradient run over the table without all-zero input rows
    (they add nothing to either); the feature gradient needs every row and keeps the full table. The
    output is bitwise the full table's (each row keeps its sum order); the weight gradient's register
    blocks regroup the remaining pairs, so it equals the full table's up to float32 rounding.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, feats, w, kmap: KernelMap, inverse: bool, dtype: torch.dtype, skip_zero: bool = False,
                out_dtype: torch.dtype | None = None):
        # `inverse` runs the map backwards: outputs are the map's inputs (inverse conv).
        ctx.kmap, ctx.inverse = kmap, inverse
        ctx.dtypes = feats.dtype, w.dtype
        feats, w = feats.to(dtype).contiguous(), w.to(dtype)
        ctx.keep = nonzero_rows(feats) if skip_zero and feats.device.type == "cpu" else None
        ctx.save_for_backward(feats, w)
        return _gather_gemm_scatter(feats, w, kmap, inverse, out_dtype, keep=ctx.keep)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out):
        feats, w = ctx.saved_tensors
        kmap, inverse = ctx.kmap, ctx.inverse
        feats_dtype, w_dtype = ctx.dtypes
        grad_out = grad_out.to(feats.dtype).contiguous()
        grad_feats = grad_w = None
        if ctx.needs_input_grad[0]:
            w_t = w.transpose(2, 3)
            if kmap.symmetric:  # the transpose is the same table read with reversed offsets
                w_t = w_t.flip(0)
                grad_feats = _gather_gemm_scatter(grad_out, w_t.contiguous(), kmap, inverse, feats_dtype)
            else:
                grad_feats = _gather_gemm_scatter(grad_out, w_t.contiguous(), kmap, not inverse, feats_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_gradient(feats, grad_out, kmap, inverse, tuple(w.shape), ctx.keep)
            grad_w = grad_w.to(w.device, w_dtype)
        return grad_feats, grad_w, None, None, None, None, None


def sparse_conv(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, groups: int = 1,
                inverse: bool = False, skip_zero: bool = False, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Features [N_out, Cout] of a conv with spconv-layout `weight` over `kmap`; skip_zero: pairs whose
    input row is all zeros are left out of the work (same outputs; worth it when many rows are silent);
    out_dtype: float32 returns a bf16 conv's float32 sums unrounded on CPU (to add a bias before the one
    rounding); None: the compute dtype."""
    cin = feats.shape[1]
    if cin != weight.shape[-1] * groups:
        raise SparseTensorError(f"conv expects {weight.shape[-1] * groups} input channels, got {cin}")
    dtype = compute_dtype(feats, weight)
    return _SparseConvFunction.apply(feats.contiguous(), _weight_kgio(weight, groups), kmap, inverse, dtype,
                                     skip_zero, out_dtype)


class _SparseMaxPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats, kmap: KernelMap):
        nbr = kmap.table()
        if feats.device.type == "cpu" and feats.dtype in _NUMBA_DTYPES:
            out = feats.new_empty((nbr.shape[0], feats.shape[1]))
            argmax = np.empty((nbr.shape[0], feats.shape[1]), np.int64)
            sync_threads()
            kernels.max_pool(feats.contiguous().numpy(), nbr, out.numpy(), argmax)
            argmax = torch.from_numpy(argmax)
        else:
            nbr_t = kmap.table_on(feats.device)
            padded = torch.cat([feats.new_full((1, feats.shape[1]), -torch.inf), feats])
            out, which = padded[nbr_t + 1].max(dim=1)
            argmax = nbr_t.gather(1, which)
            out = torch.where(argmax >= 0, out, torch.zeros_like(out))
        ctx.save_for_backward(argmax)
        ctx.n_in = feats.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (argmax,) = ctx.saved_tensors
        grad = grad_out.new_zeros((ctx.n_in + 1, grad_out.shape[1]))
        grad.scatter_add_(0, argmax + 1, grad_out)
        return grad[1:], None


def sparse_max_pool(feats: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Per-channel maximum over each output's active inputs."""
    return _SparseMaxPoolFunction.apply(feats, kmap)


def sparse_avg_pool(feats: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Per-channel mean over each output's active inputs (a depthwise conv of ones, then a divide)."""
    channels = feats.shape[1]
    ones = feats.new_ones((channels, *kmap.kernel_size, 1))
    summed = sparse_conv(feats, ones, kmap, groups=channels)
    count = torch.from_numpy((kmap.table() >= 0).sum(1)).to(feats.device, feats.dtype).clamp_(min=1)
    return summed / count[:, None]
