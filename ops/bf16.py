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

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

LANES = 16  # float32 accumulators per 512-bit vector; one vector covers 16 output columns
ENV_FORCE_FALLBACK = "PC3D_BF16_FALLBACK"


class _BFloat(ir.Type):
    """LLVM's `bfloat` (llvmlite has no class for it); only used as a vector element type."""

    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, _BFloat)

    def __hash__(self):
        return hash("bfloat")


def _llvm_major() -> int:
    import llvmlite.binding as llvm

    return llvm.llvm_version_info[0]


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


@intrinsic(prefer_literal=True)
def dot_rows(typingctx, native, rows, cols, acc, acc_offs, x, x_offs, p, w, w_off, depth):
    """dot_rows(native, rows, cols, acc, acc_offs, x, x_offs, p, w, w_off, depth).

    native, rows and cols are compile-time ints (native: 1 = vdpbf16ps, 0 = fallback); acc is
    float32, x and w int16 (bf16 bits), w in VNNI layout (see the module docstring); depth is the
    reduction length (odd depths read the last x element alone: its pair partner is zero).
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
        f32 = ir.FloatType()
        vf = ir.VectorType(f32, LANES)
        vi = ir.VectorType(i32, LANES)
        vh = ir.VectorType(i16, 2 * LANES)
        splat = ir.Constant(vi, [0] * LANES)
        if native:
            operand = ir.VectorType(_BFloat(), 2 * LANES) if _llvm_major() >= 17 else vi
            fnty = ir.FunctionType(vf, [vf, operand, operand])
            dp = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512bf16.dpbf16ps.512")
        high = ir.Constant(vi, [-65536] * LANES)  # 0xFFFF0000: the odd (upper) bf16 of each pair
        shift = ir.Constant(vi, [16] * LANES)

        def data(typ, value):
            return cgutils.create_struct_proxy(typ)(context, builder, value=value).data

        def const(v):
            return ir.Constant(i64, v)

        acc_p, x_p, w_p = data(acc_t, acc_v), data(x_t, x_v), data(w_t, w_v)
        acc_offs_p, x_offs_p = data(acc_offs_t, acc_offs_v), data(x_offs_t, x_offs_v)
        x_rows = [builder.load(builder.gep(x_offs_p, [builder.add(p_v, const(r))])) for r in range(rows)]
        sums = [[cgutils.alloca_once_value(builder, ir.Constant(vf, None)) for _ in range(n_vec)]
                for _ in range(rows)]

        def step(j, pair_of_row):
            """One reduction pair j: w row pair j against each row's pair (an i32 per row)."""
            w_row = builder.add(w_off_v, builder.mul(j, const(2 * cols)))
            w_vecs = []
            for l in range(n_vec):
                ptr = builder.bitcast(builder.gep(w_p, [builder.add(w_row, const(2 * LANES * l))]), vh.as_pointer())
                wv = builder.bitcast(builder.load(ptr, align=2), vi)
                if native:
                    w_vecs.append(builder.bitcast(wv, operand))
                else:
                    w_vecs.append((builder.bitcast(builder.and_(wv, high), vf),
                                   builder.bitcast(builder.shl(wv, shift), vf)))
            for r in range(rows):
                xi = pair_of_row(r)
                xv = builder.insert_element(ir.Constant(vi, ir.Undefined), xi, ir.Constant(i32, 0))
                xv = builder.shuffle_vector(xv, ir.Constant(vi, ir.Undefined), splat)
                if native:
                    xb = builder.bitcast(xv, operand)
                else:
                    x_odd = builder.bitcast(builder.and_(xv, high), vf)
                    x_even = builder.bitcast(builder.shl(xv, shift), vf)
                for l in range(n_vec):
                    s = builder.load(sums[r][l])
                    if native:
                        s = builder.call(dp, [s, xb, w_vecs[l]])
                    else:
                        s = builder.fadd(s, builder.fmul(x_odd, w_vecs[l][0]))
                        s = builder.fadd(s, builder.fmul(x_even, w_vecs[l][1]))
                    builder.store(s, sums[r][l])

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
        for r in range(rows):
            base = builder.load(builder.gep(acc_offs_p, [builder.add(p_v, const(r))]))
            for l in range(n_vec):
                ptr = builder.bitcast(builder.gep(acc_p, [builder.add(base, const(l * LANES))]), vf.as_pointer())
                builder.store(builder.fadd(builder.load(ptr, align=4), builder.load(sums[r][l])), ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


def to_vnni(w: np.ndarray) -> np.ndarray:
    """[..., depth, cols] int16 -> [..., ceil(depth / 2), cols, 2]: reduction pairs interleaved, zero-padded."""
    depth, cols = w.shape[-2:]
    if depth % 2:
        w = np.concatenate([w, np.zeros((*w.shape[:-2], 1, cols), w.dtype)], axis=-2)
    return np.ascontiguousarray(w.reshape(*w.shape[:-2], -1, 2, cols).swapaxes(-1, -2))


@intrinsic(prefer_literal=True)
def dot_pairs(typingctx, native, rows, cols, acc, acc_off, x, ins, x_col, g, outs, g_base, p, n, x_stride, g_stride):
    """dot_pairs(native, rows, cols, acc, acc_off, x, ins, x_col, g, outs, g_base, p, n, x_stride, g_stride): the bf16
    twin of `microkernel.mac_pairs` (a weight-gradient block over n gathered pairs, float32 sums):

        acc[acc_off + r * cols + c] += sum_{d < n} x[ins[p + d] * x_stride + x_col + r]
                                                   * g[g_base + outs[p + d] * g_stride + c]

    x and g int16 (bf16 bits), acc float32; native (1: vdpbf16ps, 0: its fallback), rows (>= 0) and cols (a
    multiple of 16) compile-time ints. Two pairs per `vdpbf16ps`: their gradient rows are interleaved in
    registers (pair d in the even, d + 1 in the odd bf16 of each 32-bit lane) and each feature channel's two
    values are packed the same way and broadcast, so no panel is copied; an odd last pair runs with a zero
    partner. The fallback adds the two exact products in the instruction's order (odd, then even), as
    `dot_rows`' does: bitwise the same sums."""
    if not all(isinstance(v, types.IntegerLiteral) for v in (native, rows, cols)):
        raise TypingError("dot_pairs needs compile-time constant native, rows and cols")
    if cols.literal_value % LANES:
        raise TypingError(f"dot_pairs needs cols a multiple of {LANES}")
    sig = types.void(native, rows, cols, acc, acc_off, x, ins, x_col, g, outs, g_base, p, n, x_stride, g_stride)
    native, rows, cols = native.literal_value, rows.literal_value, cols.literal_value
    n_vec = cols // LANES

    def codegen(context, builder, signature, args):
        if rows <= 0:
            return context.get_dummy_value()
        args, arg_types = args[1:], signature.args[1:]  # drop `native`
        ins_t, outs_t = arg_types[5], arg_types[8]
        i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
        vf = ir.VectorType(ir.FloatType(), LANES)
        vi = ir.VectorType(i32, LANES)
        vh = ir.VectorType(i16, LANES)
        splat = ir.Constant(vi, [0] * LANES)
        operand = ir.VectorType(_BFloat(), 2 * LANES) if _llvm_major() >= 17 else vi
        if native:
            dp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf, operand, operand]),
                                                "llvm.x86.avx512bf16.dpbf16ps.512")
        shift16 = ir.Constant(vi, [16] * LANES)
        zero = ir.Constant(vf, [0.0] * LANES)

        def data(i):
            return cgutils.create_struct_proxy(arg_types[i])(context, builder, value=args[i]).data

        def as_i64(i):
            return context.cast(builder, args[i], arg_types[i], types.int64)

        def const(v):
            return ir.Constant(i64, v)

        acc_p, x_p, ins_p, g_p, outs_p = (data(i) for i in (2, 4, 5, 7, 8))
        acc_off, x_col, g_base, p, n, x_stride, g_stride = (as_i64(i) for i in (3, 6, 9, 10, 11, 12, 13))
        sums = [[cgutils.alloca_once_value(builder, ir.Constant(vf, None)) for _ in range(n_vec)] for _ in range(rows)]

        def index(arr_p, arr_t, d):
            v = builder.load(builder.gep(arr_p, [builder.add(p, d)]))
            return context.cast(builder, v, arr_t.dtype, types.int64)

        def g_row(o):
            """The cols bf16 of gradient row o, each widened into the low half of a 32-bit lane."""
            start = builder.add(g_base, builder.mul(o, g_stride))
            vecs = []
            for l in range(n_vec):
                ptr = builder.bitcast(builder.gep(g_p, [builder.add(start, const(l * LANES))]), vh.as_pointer())
                vecs.append(builder.zext(builder.load(ptr, align=2), vi))
            return vecs

        def x_value(i, r):
            ptr = builder.gep(x_p, [builder.add(builder.add(builder.mul(i, x_stride), x_col), const(r))])
            return builder.zext(builder.load(ptr), i32)

        def step(i0, o0, i1, o1):
            """Pairs (i0, o0) and (i1, o1) (None: a zero partner) into every accumulator."""
            lo = g_row(o0)
            hi = g_row(o1) if o1 is not None else None
            if native:
                gv = lo if hi is None else [builder.or_(a, builder.shl(b, shift16))
                                            for a, b in zip(lo, hi, strict=True)]
                gv = [builder.bitcast(v, operand) for v in gv]
            else:  # widened: bf16 bits << 16 are the float32 value
                g_even = [builder.bitcast(builder.shl(v, shift16), vf) for v in lo]
                g_odd = [zero] * n_vec if hi is None else [builder.bitcast(builder.shl(v, shift16), vf) for v in hi]
            for r in range(rows):
                if native:
                    xi = x_value(i0, r)
                    if i1 is not None:
                        xi = builder.or_(xi, builder.shl(x_value(i1, r), ir.Constant(i32, 16)))
                    xb = builder.bitcast(broadcast(xi), operand)
                else:
                    x_even = builder.bitcast(broadcast(builder.shl(x_value(i0, r), ir.Constant(i32, 16))), vf)
                    x_odd = zero if i1 is None else builder.bitcast(
                        broadcast(builder.shl(x_value(i1, r), ir.Constant(i32, 16))), vf)
                for l in range(n_vec):
                    acc_ptr = sums[r][l]
                    if native:
                        builder.store(builder.call(dp, [builder.load(acc_ptr), xb, gv[l]]), acc_ptr)
                    else:
                        t = builder.fadd(builder.load(acc_ptr), builder.fmul(x_odd, g_odd[l]))
                        builder.store(builder.fadd(t, builder.fmul(x_even, g_even[l])), acc_ptr)

        def broadcast(value):
            v = builder.insert_element(ir.Constant(vi, ir.Undefined), value, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, ir.Constant(vi, ir.Undefined), splat)

        with cgutils.for_range(builder, builder.lshr(n, const(1))) as loop:
            d0 = builder.mul(loop.index, const(2))
            d1 = builder.add(d0, const(1))
            step(index(ins_p, ins_t, d0), index(outs_p, outs_t, d0), index(ins_p, ins_t, d1), index(outs_p, outs_t, d1))
        odd = builder.icmp_unsigned("!=", builder.and_(n, const(1)), const(0))
        with builder.if_then(odd, likely=False):
            last = builder.sub(n, const(1))
            step(index(ins_p, ins_t, last), index(outs_p, outs_t, last), None, None)
        for r in range(rows):
            for l in range(n_vec):
                ptr = builder.bitcast(builder.gep(acc_p, [builder.add(acc_off, const(r * cols + l * LANES))]),
                                      vf.as_pointer())
                builder.store(builder.fadd(builder.load(ptr, align=4), builder.load(sums[r][l])), ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen
