"""Register-blocked multiply-accumulates over a few gathered rows, emitted as LLVM vector IR.

numba gives no SIMD intrinsics, and LLVM scalarises the natural loop nest when the output width
is 16 or 32 (the short channel loop is fully unrolled and the SLP vectoriser cannot prove the
accumulator does not alias the inputs). `mac_rows` keeps a tile of `rows x vectors` accumulators
in vector registers across the whole reduction, which is what a GEMM micro-kernel does:

    acc[acc_offs[p + r] + c] += sum_a x[x_offs[p + r] + a] * w[w_off + a * cols + c]

for r < rows and c < cols, covered by vectors of 64 bytes (16 float32 or 8 float64) where they divide cols,
else by 32-byte halves where those do (float32 8, 24, 40), else by whole vectors (halves below one: 1-7
float32) whose last one is masked (`llvm.masked.load` / `masked.store`: its missing lanes are neither read nor
written), so every width runs on vectors (`row_lanes`). A run-time cols (one kernel for many widths) is covered
by whole vectors only. `mac_pairs` is the weight-gradient twin. On CPUs without 512-bit registers LLVM splits
each vector in two.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .fma import emit_fma

VECTOR_BYTES = 64


def vector_lanes(dtype) -> int:
    """Elements of `dtype` in one vector (16 for float32, 8 for float64)."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


def row_lanes(cols: int, item_bytes: int) -> int:
    """The lanes of the vectors a row of `cols` (> 0) elements is cut into: whole 64-byte vectors where they divide
    it, else 32-byte halves where they do (float32 widths 8, 24, 40, ...: one register each, half of it used),
    else whole vectors, the last one masked (halves for a row shorter than one: float32 1-7)."""
    lanes = VECTOR_BYTES // item_bytes
    if cols % lanes == 0 or cols > lanes // 2 and cols % (lanes // 2):
        return lanes
    return lanes // 2


def row_vectors(cols: int, item_bytes: int) -> int:
    """The vectors (of `row_lanes`) that cover a row of cols elements, the last one possibly masked."""
    return -(-cols // row_lanes(cols, item_bytes))


class _RegisterBlock:
    """rows x (cols / lanes, rounded up) vector accumulators of acc's dtype, the code both micro-kernels share:
    `load_row(base, start)` reads base[start:start + cols] as vectors, `fma(r, scalar, vecs)` adds scalar * vecs
    to row r's accumulators, `flush(r, base, start)` adds row r's to base[start:start + cols]. Where the lanes do
    not divide cols the last vector is masked: its missing lanes load as 0 and are never stored, so a row never
    reads or writes past its own elements."""

    def __init__(self, context, builder, acc_t, rows: int, cols: int):
        elem = context.get_value_type(acc_t.dtype)
        if cols <= 0:
            raise TypingError(f"the micro-kernels need cols > 0, got {cols}")
        self.builder, self.width = builder, row_lanes(cols, context.get_abi_sizeof(elem))
        self.vec = ir.VectorType(elem, self.width)
        self.vectors = -(-cols // self.width)
        tail = cols - (self.vectors - 1) * self.width
        self.mask = None if tail == self.width else ir.Constant(
            ir.VectorType(ir.IntType(1), self.width), [int(lane < tail) for lane in range(self.width)])
        self.sums = [[cgutils.alloca_once_value(builder, ir.Constant(self.vec, None)) for _ in range(self.vectors)]
                     for _ in range(rows)]

    def vector_at(self, base, index):
        """Pointer to the vector at element `index` of the array data pointer `base`."""
        return self.builder.bitcast(self.builder.gep(base, [index]), self.vec.as_pointer())

    def _masked(self, l: int) -> bool:
        return self.mask is not None and l == self.vectors - 1

    def _load(self, ptr, masked: bool):
        if not masked:
            return self.builder.load(ptr, align=4)
        return self.builder.call(_masked_memory(self.builder, self.vec, "load"),
                                 [ptr, ir.Constant(ir.IntType(32), 4), self.mask, ir.Constant(self.vec, None)])

    def load_row(self, base, start):
        """The vectors of base[start:start + cols]."""
        b = self.builder
        return [self._load(self.vector_at(base, b.add(start, ir.Constant(start.type, l * self.width))), self._masked(l))
                for l in range(self.vectors)]

    def fma(self, r, scalar, vecs):
        b = self.builder
        s = b.insert_element(ir.Constant(self.vec, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
        s = b.shuffle_vector(s, ir.Constant(self.vec, ir.Undefined),
                             ir.Constant(ir.VectorType(ir.IntType(32), self.width), [0] * self.width))
        for l, v in enumerate(vecs):  # llvm.fma: fused whatever the optimiser does (see `fma`)
            b.store(emit_fma(b, s, v, b.load(self.sums[r][l])), self.sums[r][l])

    def flush(self, r, base, start):
        """base[start:start + cols] += row r's accumulators."""
        b = self.builder
        for l in range(self.vectors):
            ptr = self.vector_at(base, b.add(start, ir.Constant(start.type, l * self.width)))
            total = b.fadd(self._load(ptr, self._masked(l)), b.load(self.sums[r][l]))
            if self._masked(l):
                b.call(_masked_memory(b, self.vec, "store"), [total, ptr, ir.Constant(ir.IntType(32), 4), self.mask])
            else:
                b.store(total, ptr, align=4)


def _masked_memory(builder, vec, op: str):
    """`llvm.masked.load` (ptr, align, mask, passthru) or `llvm.masked.store` (value, ptr, align, mask) of vec."""
    elem = {ir.FloatType: "f32", ir.DoubleType: "f64"}[type(vec.element)]
    name = f"llvm.masked.{op}.v{vec.count}{elem}." + ("p0" if llvm_major() >= 15 else f"p0v{vec.count}{elem}")
    mask, align = ir.VectorType(ir.IntType(1), vec.count), ir.IntType(32)
    fn_type = (ir.FunctionType(vec, [vec.as_pointer(), align, mask, vec]) if op == "load"
               else ir.FunctionType(ir.VoidType(), [vec, vec.as_pointer(), align, mask]))
    return cgutils.get_or_insert_function(builder.module, fn_type, name)


PREFETCH_CALLS = 2  # mac_rows / bf16.dot_rows prefetch the gathered rows of the call this many calls ahead
_LINE = 64  # bytes per cache line


def prefetch_rows(builder, x_p, starts, depth, item_bytes: int) -> None:
    """Prefetch (into every cache level) the cache lines of the rows x[start : start + depth] (items of
    item_bytes): a hint that never faults, so a stale or unused start costs a wasted line and nothing else."""
    i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
    name = "llvm.prefetch.p0" if llvm_major() >= 15 else "llvm.prefetch.p0i8"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), name)
    per_line = _LINE // item_bytes
    last = builder.sub(depth, ir.Constant(i64, 1))
    lines = builder.add(builder.udiv(depth, ir.Constant(i64, per_line)), ir.Constant(i64, 2))  # a row may straddle
    for start in starts:
        with cgutils.for_range(builder, lines) as loop:
            step = builder.mul(loop.index, ir.Constant(i64, per_line))
            at = builder.select(builder.icmp_signed("<", step, last), step, last)
            ptr = builder.bitcast(builder.gep(x_p, [builder.add(start, at)]), i8p)
            builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])  # read, L1, data


def llvm_major() -> int:
    import llvmlite.binding as llvm

    return llvm.llvm_version_info[0]


@intrinsic(prefer_literal=True)
def mac_rows(typingctx, rows, vectors, acc, acc_offs, x, x_offs, p, w, w_off, cols, depth):
    """mac_rows(rows, vectors, acc, acc_offs, x, x_offs, p, w, w_off, cols, depth); rows and vectors compile-time
    ints, cols a multiple of the vector width (`vector_lanes`), or any compile-time int (cut into vectors by
    `row_lanes`, the last one masked where they do not divide it):

        acc[acc_offs[p + r] + c] += sum_{a < depth} x[x_offs[p + r] + a] * w[w_off + a * cols + c]

    for r < rows and c < cols. The register tile is rows x `vectors` vectors, and the columns are covered by
    whole tiles, then (a compile-time cols) by one tile of the vectors left, or (a run-time cols, `vectors` a
    power of two) by halves of a tile. cols may be a run-time value: one compiled kernel then serves
    every output width, where a kernel keyed on the width compiled once per width (3-5 s each). Each output
    element is summed over `a` in order in its register and added to acc once, however the columns are tiled.

    A module-level intrinsic (not a closure) so that numba's on-disk cache of the kernels that call
    it stays valid across processes.

    It also prefetches the x rows of the call PREFETCH_CALLS calls ahead (x_offs[p + PREFETCH_CALLS * rows
    + r]): x_offs needs that many spare entries past the last call's rows (their values may be stale). A
    sparse conv gathers its rows from anywhere in the feature array, where the hardware prefetchers cannot
    follow: SubM 64->64 on the benchmark sweep ran 1.07x faster with it in float32 (`bf16.dot_rows`, which
    does the same, 1.10-1.14x).
    """
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(vectors, types.IntegerLiteral)):
        raise TypingError("mac_rows needs compile-time constant rows and vectors")
    static_cols = cols.literal_value if isinstance(cols, types.IntegerLiteral) else None
    # the literal types stay in the signature: numba reuses a lowering for an equal signature
    sig = types.void(rows, vectors, acc, acc_offs, x, x_offs, p, w, w_off, cols, depth)
    rows, vectors = rows.literal_value, vectors.literal_value
    if static_cols is None and vectors & (vectors - 1):
        raise TypingError(f"mac_rows with a run-time cols needs vectors a power of two, got {vectors}")

    def codegen(context, builder, signature, args):
        acc_v, acc_offs_v, x_v, x_offs_v, p_v, w_v, w_off_v, cols_v, depth_v = args[2:]
        acc_t, acc_offs_t, x_t, x_offs_t, _, w_t, _, cols_t = signature.args[2:10]
        i64 = ir.IntType(64)
        item_bytes = context.get_abi_sizeof(context.get_value_type(acc_t.dtype))
        lanes = VECTOR_BYTES // item_bytes if static_cols is None else row_lanes(static_cols, item_bytes)

        def data(typ, value):
            return cgutils.create_struct_proxy(typ)(context, builder, value=value).data

        def const(v):
            return ir.Constant(i64, v)

        acc_p, x_p, w_p = data(acc_t, acc_v), data(x_t, x_v), data(w_t, w_v)
        acc_offs_p, x_offs_p = data(acc_offs_t, acc_offs_v), data(x_offs_t, x_offs_v)
        cols_i = context.cast(builder, cols_v, cols_t, types.int64)
        x_rows = [builder.load(builder.gep(x_offs_p, [builder.add(p_v, const(r))])) for r in range(rows)]
        acc_rows = [builder.load(builder.gep(acc_offs_p, [builder.add(p_v, const(r))])) for r in range(rows)]
        prefetch_rows(builder, x_p, [builder.load(builder.gep(x_offs_p, [builder.add(p_v, const(r))]))
                                     for r in range(PREFETCH_CALLS * rows, (PREFETCH_CALLS + 1) * rows)], depth_v,
                      x_t.dtype.bitwidth // 8)

        def tile(width, c0):
            """Columns [c0, c0 + width) of the rows: accumulators zeroed here, summed over depth, added."""
            block = _RegisterBlock(context, builder, acc_t, rows, width)
            w_col = builder.add(w_off_v, c0)
            with cgutils.for_range(builder, depth_v) as loop:
                w_vecs = block.load_row(w_p, builder.add(w_col, builder.mul(loop.index, cols_i)))
                for r in range(rows):
                    block.fma(r, builder.load(builder.gep(x_p, [builder.add(x_rows[r], loop.index)])), w_vecs)
            for r in range(rows):
                block.flush(r, acc_p, builder.add(acc_rows[r], c0))

        step = vectors * lanes
        if static_cols is not None:  # the tiles are known: no loop over them; the last may end in a masked vector
            for c0 in range(0, static_cols, step):
                tile(min(step, static_cols - c0), const(c0))
            return context.get_dummy_value()
        with cgutils.for_range(builder, builder.udiv(cols_i, const(step))) as loop:
            tile(step, builder.mul(loop.index, const(step)))
        done = cgutils.alloca_once_value(builder, builder.mul(builder.udiv(cols_i, const(step)), const(step)))
        width = vectors // 2
        while width:
            c0 = builder.load(done)
            with builder.if_then(builder.icmp_signed("<=", builder.add(c0, const(width * lanes)), cols_i)):
                tile(width * lanes, c0)
                builder.store(builder.add(c0, const(width * lanes)), done)
            width //= 2
        return context.get_dummy_value()

    return sig, codegen


@intrinsic(prefer_literal=True)
def mac_pairs(typingctx, rows, cols, acc, acc_off, x, ins, x_col, g, outs, g_base, p, n, x_stride, g_stride):
    """mac_pairs(rows, cols, acc, acc_off, x, ins, x_col, g, outs, g_base, p, n, x_stride, g_stride):

        acc[acc_off + r * cols + c] += sum_{d < n} x[ins[p + d] * x_stride + x_col + r]
                                                   * g[g_base + outs[p + d] * g_stride + c]

    for r < rows and c < cols: a weight-gradient block X^T G over n gathered pairs, read straight from
    the feature and gradient rows (no transposed panel). rows (>= 0; 0 does nothing) and cols (> 0; cut into
    vectors by `row_lanes`, the last one masked where they do not divide it) are compile-time ints. rows x
    `row_vectors(cols)` accumulators stay in vector registers over the pairs, which are summed in order; each
    pair costs `row_vectors(cols)` vector loads of its gradient row and rows broadcasts of its features.
    """
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(cols, types.IntegerLiteral)):
        raise TypingError("mac_pairs needs compile-time constant rows and cols")
    sig = types.void(rows, cols, acc, acc_off, x, ins, x_col, g, outs, g_base, p, n, x_stride, g_stride)
    rows, cols = rows.literal_value, cols.literal_value

    def codegen(context, builder, signature, args):
        acc_t, _, x_t, ins_t, _, g_t, outs_t = signature.args[2:9]
        i64 = ir.IntType(64)
        if rows < 0:
            raise TypingError("mac_pairs needs rows >= 0")
        block = _RegisterBlock(context, builder, acc_t, rows, cols)
        if rows == 0:
            return context.get_dummy_value()

        def data(typ, value):
            return cgutils.create_struct_proxy(typ)(context, builder, value=value).data

        def as_i64(i):
            return context.cast(builder, args[i], signature.args[i], types.int64)

        acc_p, x_p, ins_p, g_p, outs_p = (data(signature.args[i], args[i]) for i in (2, 4, 5, 7, 8))
        acc_off, x_col, g_base, p, n, x_stride, g_stride = (as_i64(i) for i in (3, 6, 9, 10, 11, 12, 13))
        with cgutils.for_range(builder, n) as loop:
            pair = builder.add(p, loop.index)
            i = context.cast(builder, builder.load(builder.gep(ins_p, [pair])), ins_t.dtype, types.int64)
            o = context.cast(builder, builder.load(builder.gep(outs_p, [pair])), outs_t.dtype, types.int64)
            x_row = builder.add(builder.mul(i, x_stride), x_col)
            g_vecs = block.load_row(g_p, builder.add(g_base, builder.mul(o, g_stride)))
            for r in range(rows):
                block.fma(r, builder.load(builder.gep(x_p, [builder.add(x_row, ir.Constant(i64, r))])), g_vecs)
        for r in range(rows):
            block.flush(r, acc_p, builder.add(acc_off, ir.Constant(i64, r * cols)))
        return context.get_dummy_value()

    return sig, codegen
