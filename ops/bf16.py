"""bfloat16 helpers of the sparse-conv kernels: the `vdpbf16ps` micro-kernel and its fallback.

numba has no bfloat16 type: bf16 arrays travel as int16 views of torch tensors
(`t.view(torch.int16).numpy()`). A bf16 value is the upper 16 bits of a float32, so widening is a
16-bit shift and every product of two bf16 values is exact in float32.

`dot_rows` is the bf16 twin of `microkernel.mac_rows`: `rows x (cols / 16)` float32 accumulators
held in vector registers across the reduction, two reduction steps per instruction:

    acc[acc_offs[p + r] + c] += sum_a x[x_offs[p + r] + a] * w[a, c]    (float32 sums)

with w in "pair-interleaved" (VNNI) layout, w_vnni[w_off + (a // 2) * 2 * cols + 2 * c + a % 2],
zero-padded to an even depth. Where the CPU has AVX512_BF16 each step is one `vdpbf16ps`
(`llvm.x86.avx512bf16.dpbf16ps.512`); elsewhere the fallback widens both halves of each pair
and adds the two products in the order the instruction defines (odd element, then even), each
with one float32 rounding (the product is exact, so mul + add = fma).

Where the CPU has AMX-BF16 the forward and feature-gradient kernels use tiles instead
(`amx`, `sparse_conv_amx`; PC3D_BF16_NO_AMX=1 keeps these kernels); `kernel_name` reports which.
"""
from __future__ import annotations

import functools
import os

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from .microkernel import PREFETCH_CALLS, llvm_major, prefetch_rows

LANES = 16  # float32 accumulators per 512-bit vector; one vector covers 16 output columns
ENV_FORCE_FALLBACK = "PC3D_BF16_FALLBACK"


@intrinsic
def float_bits(typingctx, value):
    """The bits of a float32 as a uint32 (reinterpreted, not converted)."""
    if value != types.float32:
        raise TypingError(f"float_bits needs a float32, got {value}")
    return types.uint32(value), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(32))


@intrinsic
def bits_float(typingctx, bits):
    """The float32 whose bits are the uint32 `bits` (reinterpreted, not converted)."""
    if bits != types.uint32:
        raise TypingError(f"bits_float needs a uint32, got {bits}")
    return types.float32(bits), lambda context, builder, sig, args: builder.bitcast(args[0], ir.FloatType())


@nb.njit(inline="always", cache=True)
def widen(h):
    """The float32 value of bf16 bits h (int16): exact, a 16-bit shift."""
    return bits_float(np.uint32(np.uint32(np.uint16(h)) << 16))


@nb.njit(inline="always", cache=True)
def narrow(v):
    """The bf16 bits (int16) of float32 v rounded to nearest even, bit for bit as torch's `.bfloat16()`; NaN
    becomes all ones, as torch's vectorised conversion writes. Branch-free, so loops of it vectorise."""
    u = float_bits(v)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.int16(np.uint32(0xFFFF) if nan else rounded)


def as_float(value):
    """value as a float: bf16 bits (int16) widened to float32, a float as it is."""


@overload(as_float, inline="always")
def _as_float(value):
    if value == types.int16:
        return lambda value: widen(value)
    if not isinstance(value, types.Float):
        raise TypingError(f"as_float reads bf16 bits (int16) or a float, not {value}")
    return lambda value: value


def element_of(array, value):
    """float32 value as an element of `array`: bf16 bits (rounded) for an int16 array, else converted."""


@overload(element_of, inline="always")
def _element_of(array, value):
    if array.dtype == types.int16:
        return lambda array, value: narrow(value)
    return lambda array, value: value  # the store converts


class _BFloat(ir.Type):
    """LLVM's `bfloat` (llvmlite has no class for it); only used as a vector element type."""

    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, _BFloat)

    def __hash__(self):
        return hash("bfloat")


@functools.cache
def cpu_has_avx512_bf16() -> bool:
    """Whether the host CPU (as LLVM sees it) has AVX512_BF16."""
    import llvmlite.binding as llvm

    try:
        return bool(llvm.get_host_cpu_features().get("avx512bf16", False))
    except RuntimeError:  # features unknown on this platform
        return False


def use_native() -> bool:
    """Whether the kernels use `vdpbf16ps`: the CPU has it and PC3D_BF16_FALLBACK is not set."""
    return cpu_has_avx512_bf16() and os.environ.get(ENV_FORCE_FALLBACK, "") in ("", "0")


def kernel_name(native: bool | None = None) -> str:
    """Human-readable name of the bf16 micro-kernel in use (for `python -m pc3d info`); `native` names
    the vdpbf16ps kernel (True) or its fallback (False) whatever runs."""
    from . import amx

    if native is None:
        why_not_amx = amx.why_not()
        if not why_not_amx:
            return "AMX tdpbf16ps tiles (amx_bf16)"
        native = use_native()
        if native and amx.cpu_has_amx_bf16():
            return f"vdpbf16ps (avx512_bf16; AMX not used: {why_not_amx})"
    if native:
        return "vdpbf16ps (avx512_bf16)"
    why = "forced by PC3D_BF16_FALLBACK" if cpu_has_avx512_bf16() else "no avx512_bf16 on this CPU"
    return f"float32 FMA fallback ({why})"


class _Sums:
    """The float32 accumulators of one micro-kernel call, rows x n_vec vectors of 16, and the step that feeds
    them two reduction elements at a time: `vdpbf16ps` (native) or its fallback, which widens both halves of
    each 32-bit pair and adds the odd (upper) halves' product first, then the even ones', each with one
    float32 rounding (the products are exact): bitwise the instruction's sums."""

    def __init__(self, builder, native: bool, rows: int, n_vec: int):
        self.builder, self.native = builder, native
        self.vf = ir.VectorType(ir.FloatType(), LANES)
        self.vi = ir.VectorType(ir.IntType(32), LANES)
        self.sums = [[cgutils.alloca_once_value(builder, ir.Constant(self.vf, None)) for _ in range(n_vec)]
                     for _ in range(rows)]
        self.high = ir.Constant(self.vi, [-65536] * LANES)  # 0xFFFF0000: the odd (upper) bf16 of each pair
        self.shift = ir.Constant(self.vi, [16] * LANES)
        if native:
            self.operand = ir.VectorType(_BFloat(), 2 * LANES) if llvm_major() >= 17 else self.vi
            fnty = ir.FunctionType(self.vf, [self.vf, self.operand, self.operand])
            self.dp = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512bf16.dpbf16ps.512")

    def _halves(self, v):
        b = self.builder
        if self.native:
            return b.bitcast(v, self.operand)
        return b.bitcast(b.and_(v, self.high), self.vf), b.bitcast(b.shl(v, self.shift), self.vf)

    def step(self, x_pairs, w_vectors):
        """sums[r][l] += x_pairs[r] (an i32: two bf16, broadcast) . w_vectors[l] (<16 x i32>: 16 pairs)."""
        b = self.builder
        w = [self._halves(v) for v in w_vectors]
        splat = ir.Constant(self.vi, [0] * LANES)
        for row, xi in zip(self.sums, x_pairs, strict=True):
            xv = b.insert_element(ir.Constant(self.vi, ir.Undefined), xi, ir.Constant(ir.IntType(32), 0))
            x = self._halves(b.shuffle_vector(xv, ir.Constant(self.vi, ir.Undefined), splat))
            for acc, wl in zip(row, w, strict=True):
                s = b.load(acc)
                if self.native:
                    s = b.call(self.dp, [s, x, wl])
                else:
                    s = b.fadd(b.fadd(s, b.fmul(x[0], wl[0])), b.fmul(x[1], wl[1]))
                b.store(s, acc)

    def add_to(self, acc_p, row_starts):
        """acc[row_starts[r] + c] += sums[r] (float32 pointer, i64 element offsets)."""
        b = self.builder
        for row, start in zip(self.sums, row_starts, strict=True):
            for l, s in enumerate(row):
                ptr = b.bitcast(b.gep(acc_p, [b.add(start, ir.Constant(ir.IntType(64), l * LANES))]),
                                self.vf.as_pointer())
                b.store(b.fadd(b.load(ptr, align=4), b.load(s)), ptr, align=4)


def _data(context, builder, typ, value):
    return cgutils.create_struct_proxy(typ)(context, builder, value=value).data


@intrinsic(prefer_literal=True)
def dot_rows(typingctx, native, rows, cols, acc, acc_offs, x, x_offs, p, w, w_off, depth):
    """dot_rows(native, rows, cols, acc, acc_offs, x, x_offs, p, w, w_off, depth).

    native, rows and cols are compile-time ints (native: 1 = vdpbf16ps, 0 = fallback); acc is
    float32, x and w int16 (bf16 bits), w in VNNI layout (see the module docstring); depth is the
    reduction length (odd depths read the last x element alone: its pair partner is zero).

    Like `microkernel.mac_rows` it prefetches the x rows of the call PREFETCH_CALLS calls ahead: x_offs
    needs PREFETCH_CALLS * rows spare entries (SubM 64->64 on the benchmark sweep: 1.10-1.14x).
    """
    if not all(isinstance(v, types.IntegerLiteral) for v in (native, rows, cols)):
        raise TypingError("dot_rows needs compile-time constant native, rows and cols")
    if cols.literal_value % LANES:
        raise TypingError(f"dot_rows needs cols a multiple of {LANES}")
    sig = types.void(native, rows, cols, acc, acc_offs, x, x_offs, p, w, w_off, depth)
    native, rows, cols = native.literal_value, rows.literal_value, cols.literal_value
    n_vec = cols // LANES

    def codegen(context, builder, signature, args):
        acc_v, acc_offs_v, x_v, x_offs_v, p_v, w_v, w_off_v, depth_v = args[3:]
        acc_t, acc_offs_t, x_t, x_offs_t, _, w_t = signature.args[3:9]
        i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
        vh = ir.VectorType(i16, 2 * LANES)

        def const(v):
            return ir.Constant(i64, v)

        acc_p, acc_offs_p, x_p, x_offs_p, w_p = (
            _data(context, builder, t, v)
            for t, v in ((acc_t, acc_v), (acc_offs_t, acc_offs_v), (x_t, x_v), (x_offs_t, x_offs_v), (w_t, w_v)))
        x_rows = [builder.load(builder.gep(x_offs_p, [builder.add(p_v, const(r))])) for r in range(rows)]
        prefetch_rows(builder, x_p, [builder.load(builder.gep(x_offs_p, [builder.add(p_v, const(r))]))
                                     for r in range(PREFETCH_CALLS * rows, (PREFETCH_CALLS + 1) * rows)], depth_v, 2)
        sums = _Sums(builder, native, rows, n_vec)

        def step(j, pair_of_row):
            """One reduction pair j: w row pair j against each row's pair (an i32 per row)."""
            w_row = builder.add(w_off_v, builder.mul(j, const(2 * cols)))
            w_vecs = [builder.bitcast(builder.load(builder.bitcast(
                builder.gep(w_p, [builder.add(w_row, const(2 * LANES * l))]), vh.as_pointer()), align=2), sums.vi)
                for l in range(n_vec)]
            sums.step([pair_of_row(r) for r in range(rows)], w_vecs)

        def x_pair(j):
            def load(r):
                ptr = builder.gep(x_p, [builder.add(x_rows[r], builder.mul(j, const(2)))])
                return builder.load(builder.bitcast(ptr, i32.as_pointer()), align=2)
            return load

        pairs = builder.lshr(depth_v, const(1))
        with cgutils.for_range(builder, pairs) as loop:
            step(loop.index, x_pair(loop.index))
        odd = builder.icmp_unsigned("!=", builder.and_(depth_v, const(1)), const(0))
        with builder.if_then(odd, likely=False):
            last = builder.sub(depth_v, const(1))

            def x_last(r):
                return builder.zext(builder.load(builder.gep(x_p, [builder.add(x_rows[r], last)])), i32)
            step(pairs, x_last)
        sums.add_to(acc_p, [builder.load(builder.gep(acc_offs_p, [builder.add(p_v, const(r))])) for r in range(rows)])
        return context.get_dummy_value()

    return sig, codegen


def to_vnni(w: np.ndarray) -> np.ndarray:
    """[..., depth, cols] int16 -> [..., ceil(depth / 2), cols, 2]: reduction pairs interleaved, zero-padded."""
    depth, cols = w.shape[-2:]
    if depth % 2:
        w = np.concatenate([w, np.zeros((*w.shape[:-2], 1, cols), w.dtype)], axis=-2)
    return np.ascontiguousarray(w.reshape(*w.shape[:-2], -1, 2, cols).swapaxes(-1, -2))


@intrinsic(prefer_literal=True)
def dot_packed(typingctx, native, rows, cols, acc, acc_off, xp, xp_off, xp_stride, gp, m):
    """dot_packed(native, rows, cols, acc, acc_off, xp, xp_off, xp_stride, gp, m): the weight-gradient
    micro-kernel over panels packed two reduction steps deep (float32 sums):

        acc[acc_off + r * cols + c] += sum_{j < m} xp[xp_off + j * xp_stride + r] . gp[j * cols + c]

    where each int32 of xp and gp holds two bf16 (step 2j in the low, 2j + 1 in the high half; `.` is the
    two-term dot product of `vdpbf16ps`). native (1: vdpbf16ps, 0: its fallback), rows (>= 0) and cols
    (a multiple of 16) are compile-time ints; acc is float32, xp and gp int32. `rows` accumulator rows
    stay in registers over the m steps; xp's value is broadcast, gp's row is read as cols / 16 vectors."""
    if not all(isinstance(v, types.IntegerLiteral) for v in (native, rows, cols)):
        raise TypingError("dot_packed needs compile-time constant native, rows and cols")
    if cols.literal_value % LANES:
        raise TypingError(f"dot_packed needs cols a multiple of {LANES}")
    sig = types.void(native, rows, cols, acc, acc_off, xp, xp_off, xp_stride, gp, m)
    native, rows, cols = native.literal_value, rows.literal_value, cols.literal_value

    def codegen(context, builder, signature, args):
        if rows <= 0:
            return context.get_dummy_value()
        tys = signature.args
        acc_p, xp_p, gp_p = (_data(context, builder, tys[i], args[i]) for i in (3, 5, 8))
        acc_off, xp_off, xp_stride, m = (context.cast(builder, args[i], tys[i], types.int64) for i in (4, 6, 7, 9))
        i64 = ir.IntType(64)
        sums = _Sums(builder, native, rows, cols // LANES)
        with cgutils.for_range(builder, m) as loop:
            g_row = builder.mul(loop.index, ir.Constant(i64, cols))
            x_row = builder.add(xp_off, builder.mul(loop.index, xp_stride))
            g_vecs = [builder.load(builder.bitcast(builder.gep(gp_p, [builder.add(g_row, ir.Constant(i64, l))]),
                                                   sums.vi.as_pointer()), align=4) for l in range(0, cols, LANES)]
            x_pairs = [builder.load(builder.gep(xp_p, [builder.add(x_row, ir.Constant(i64, r))]), align=4)
                       for r in range(rows)]
            sums.step(x_pairs, g_vecs)
        sums.add_to(acc_p, [builder.add(acc_off, ir.Constant(i64, r * cols)) for r in range(rows)])
        return context.get_dummy_value()

    return sig, codegen
