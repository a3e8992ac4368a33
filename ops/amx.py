"""Intel AMX (tile) bf16 matrix multiply for the sparse-conv kernels: run-time detection and the micro-kernel.

AMX multiplies whole tiles: `tdpbf16ps` adds a [16 x K bf16] @ [K x 16 float32-columns] product
into a 16 x 16 float32 tile (K up to 32: 64 bytes per row), one instruction for 16 x 16 x 32
multiply-adds. numba knows nothing of tiles; `tile_product` below emits LLVM's "internal" AMX
intrinsics (`llvm.x86.tileloadd64.internal`, `tdpbf16ps.internal`, `tilestored64.internal`,
`tilezero.internal`), whose tile values have LLVM's `x86_amx` type. LLVM's X86 backend configures
the tiles itself (it derives the palette from the constant shapes and inserts `ldtilecfg` once at
the entry of the function the intrinsic is inlined into, `tilerelease` at its exit), so the
intrinsic only needs a target with +amx-tile,+amx-bf16: numba compiles for the host CPU.

The OS must grant the process AMX state before the first tile instruction (Linux:
`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); without it a tile instruction raises SIGILL
and kills the process. `available()` checks the CPU flags, that numba targets them, and that the
request succeeded; kernels that call `tile_product` are only built and run after it.

`tile_product` computes, for a gathered row panel `a` and one kernel offset's VNNI-packed weights,

    c[r, j] = sum_a a[r * depth_pad + a] * w[w_off + (a // 2) * 2 * cols + 2 * j + a % 2]

for r < 16, j < cols, in float32 (`tdpbf16ps` rounds to nearest even, treats bf16 denormal inputs
as zero and flushes denormal results). Loop order: per block of 64 columns (4 accumulator tiles
zeroed), per 32-deep slice of the reduction (one A tile, then one B tile per 16 columns), then the
accumulator tiles are stored to the float32 panel c. Every step is fixed at compile time, so
results are deterministic. `add_rows` adds such a panel's rows to scattered output rows with
vector adds (numba's own loop for it ran scalar).
"""
from __future__ import annotations

import ctypes
import functools
import itertools
import os
import sys

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

ENV_DISABLE = "PC3D_BF16_NO_AMX"
TILE_ROWS = 16  # rows of every tile (A, B in pairs, C)
TILE_BYTES = 64  # bytes per tile row: 32 bf16 of the reduction, or 16 float32 columns
COLS = TILE_BYTES // 4  # float32 output columns per accumulator tile
DEPTH = TILE_BYTES // 2  # bf16 reduction elements per A tile row
MAX_ACC_TILES = 4  # accumulator tiles live at once (of 8): 4 C + A + B leaves two spare

_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158  # x86-64


class _AmxTile(ir.Type):
    """LLVM's `x86_amx` (llvmlite has no class for it): the value of one tile register."""

    def _to_string(self):
        return "x86_amx"

    def __eq__(self, other):
        return isinstance(other, _AmxTile)

    def __hash__(self):
        return hash("x86_amx")


@functools.cache
def cpu_has_amx_bf16() -> bool:
    """Whether the host CPU (as LLVM sees it) has AMX tiles and AMX-BF16."""
    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:  # features unknown on this platform
        return False
    return bool(features.get("amx-tile", False) and features.get("amx-bf16", False))


def numba_targets_host() -> bool:
    """Whether numba compiles for the host CPU's features (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES not
    overriding them without AMX): otherwise LLVM cannot emit tile instructions."""
    import numba

    name, features = numba.config.CPU_NAME, numba.config.CPU_FEATURES
    if features:
        return "+amx-tile" in features and "+amx-bf16" in features
    return name in (None, "", "host")


@functools.cache
def request_tile_state() -> bool:
    """Ask Linux for the AMX tile state (once per process; inherited by forked children). True if granted."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.syscall(ctypes.c_long(_SYS_ARCH_PRCTL), ctypes.c_long(_ARCH_REQ_XCOMP_PERM),
                          ctypes.c_ulong(_XFEATURE_XTILEDATA))
    except (OSError, AttributeError):
        return False
    return rc == 0


def available() -> bool:
    """The CPU has AMX-BF16, numba targets it and the OS granted the tile state."""
    return cpu_has_amx_bf16() and numba_targets_host() and request_tile_state()


def why_not() -> str:
    """Why the bf16 kernels do not use AMX ("" if they do)."""
    from .bf16 import ENV_FORCE_FALLBACK

    for name in (ENV_DISABLE, ENV_FORCE_FALLBACK):
        if os.environ.get(name, "") not in ("", "0"):
            return f"disabled by {name}"
    if not cpu_has_amx_bf16():
        return "no amx_bf16 on this CPU"
    if not numba_targets_host():
        return "numba targets another CPU (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES)"
    if not request_tile_state():
        return "the OS refused the tile state (arch_prctl)"
    return ""


def use_amx() -> bool:
    """Whether the bf16 kernels multiply on AMX tiles: available and not disabled by PC3D_BF16_NO_AMX
    (or by PC3D_BF16_FALLBACK, which forces the float32 FMA fallback)."""
    return not why_not()


def supports(cout_g: int) -> bool:
    """Widths the tile kernel covers: whole accumulator tiles of output columns (any depth)."""
    return cout_g > 0 and cout_g % COLS == 0


def _data(context, builder, typ, value):
    return cgutils.create_struct_proxy(typ)(context, builder, value=value).data


def _int64(context, builder, value, typ):
    return context.cast(builder, value, typ, types.int64)


@intrinsic(prefer_literal=True)
def tile_product(typingctx, rows, depth, cols, a, a_off, w, w_off, c, c_off):
    """tile_product(rows, depth, cols, a, a_off, w, w_off, c, c_off): c[c_off:][rows, cols] = a[a_off:][rows, depth] @ w
    (see the module docstring).

    rows, depth and cols are compile-time ints (cols a multiple of 16; rows are taken 16 at a time,
    the last group may be shorter); a is int16 (bf16 bits), rows of depth_pad = depth rounded up
    to even (the pad element zero); w int16 in VNNI layout, the block starting at element w_off;
    c float32, rows of cols, overwritten.
    """
    return _tile_product(False, rows, depth, cols, a, a_off, w, w_off, c, c_off)


@intrinsic(prefer_literal=True)
def tile_product_add(typingctx, rows, max_depth, cols, a, a_off, w, w_off, c, c_off, depth):
    """tile_product_add(rows, max_depth, cols, a, a_off, w, w_off, c, c_off, depth): c[c_off:][rows, cols] +=
    a[a_off:][rows, depth] @ w, for a run-time depth, a multiple of 32 up to the compile-time max_depth
    (a's rows have `depth` elements). The accumulator tiles start from c's values (one tile load each), so the
    products are summed onto c on the tiles, in `tile_product`'s fixed order. One constant-depth product is
    generated per multiple of 32 and a switch on depth picks it (a depth outside them runs max_depth's)."""
    if not isinstance(max_depth, types.IntegerLiteral) or max_depth.literal_value % DEPTH:
        raise TypingError(f"tile_product_add needs a compile-time max_depth, a multiple of {DEPTH}")
    sig = types.void(rows, max_depth, cols, a, a_off, w, w_off, c, c_off, depth)
    products = {d: _tile_product(True, rows, types.IntegerLiteral(d), cols, a, a_off, w, w_off, c, c_off)[1]
                for d in range(DEPTH, max_depth.literal_value + 1, DEPTH)}

    def codegen(context, builder, signature, args):
        depth_v = _int64(context, builder, args[9], signature.args[9])
        done = builder.append_basic_block("tile_product_add.done")
        cases = {d: builder.append_basic_block(f"tile_product_add.depth{d}") for d in products}
        switch = builder.switch(depth_v, cases[max(products)])
        for d, block in cases.items():
            switch.add_case(ir.Constant(ir.IntType(64), d), block)
            with builder.goto_block(block):
                products[d](context, builder, signature, args)
                builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


def _tile_product(accumulate, rows, depth, cols, a, a_off, w, w_off, c, c_off):
    """Signature and code generation of one constant-depth product: c overwritten (`tile_product`) or, with
    accumulate, added to (`tile_product_add`). The code reads its operands from args[3:9] only."""
    if not all(isinstance(v, types.IntegerLiteral) for v in (rows, depth, cols)):
        raise TypingError("tile_product needs compile-time constant rows, depth and cols")
    if cols.literal_value % COLS or cols.literal_value <= 0 or depth.literal_value <= 0 or rows.literal_value <= 0:
        raise TypingError(f"tile_product needs cols a positive multiple of {COLS}, rows and depth > 0")
    sig = types.void(rows, depth, cols, a, a_off, w, w_off, c, c_off)
    rows, depth, cols = rows.literal_value, depth.literal_value, cols.literal_value
    depth_pad = depth + depth % 2

    def codegen(context, builder, signature, args):
        a_t, a_off_t, w_t, w_off_t, c_t, c_off_t = signature.args[3:9]
        a_v, w_v, c_v = (_data(context, builder, t, v) for t, v in ((a_t, args[3]), (w_t, args[5]), (c_t, args[7])))
        a_off_v = _int64(context, builder, args[4], a_off_t)
        w_off_v = _int64(context, builder, args[6], w_off_t)
        c_off_v = _int64(context, builder, args[8], c_off_t)
        i8p = ir.IntType(8).as_pointer()
        i16, i64 = ir.IntType(16), ir.IntType(64)
        tile = _AmxTile()
        module = builder.module
        load = cgutils.get_or_insert_function(module, ir.FunctionType(tile, [i16, i16, i8p, i64]),
                                              "llvm.x86.tileloadd64.internal")
        zero = cgutils.get_or_insert_function(module, ir.FunctionType(tile, [i16, i16]),
                                              "llvm.x86.tilezero.internal")
        dot = cgutils.get_or_insert_function(module, ir.FunctionType(tile, [i16, i16, i16, tile, tile, tile]),
                                             "llvm.x86.tdpbf16ps.internal")
        store = cgutils.get_or_insert_function(module, ir.FunctionType(ir.VoidType(), [i16, i16, i8p, i64, tile]),
                                               "llvm.x86.tilestored64.internal")

        def short(v):
            return ir.Constant(i16, v)

        def const(v):
            return ir.Constant(i64, v)

        def byte_ptr(base, index):
            return builder.bitcast(builder.gep(base, [index]), i8p)

        a_stride = const(2 * depth_pad)  # bytes per A row
        w_stride = const(4 * cols)  # bytes per VNNI row (one pair of reduction steps)
        c_stride = const(4 * cols)
        for r0, n0 in itertools.product(range(0, rows, TILE_ROWS), range(0, cols, MAX_ACC_TILES * COLS)):
            m = min(TILE_ROWS, rows - r0)
            n_tiles = min(MAX_ACC_TILES, (cols - n0) // COLS)
            c_ptrs = [byte_ptr(c_v, builder.add(c_off_v, const(r0 * cols + n0 + t * COLS))) for t in range(n_tiles)]
            if accumulate:
                accs = [builder.call(load, [short(m), short(TILE_BYTES), ptr, c_stride]) for ptr in c_ptrs]
            else:
                accs = [builder.call(zero, [short(m), short(TILE_BYTES)]) for _ in range(n_tiles)]
            for d0 in range(0, depth_pad, DEPTH):
                k_bytes = 2 * min(DEPTH, depth_pad - d0)  # a multiple of 4: whole pairs
                a_tile = builder.call(load, [short(m), short(k_bytes),
                                             byte_ptr(a_v, builder.add(a_off_v, const(r0 * depth_pad + d0))), a_stride])
                for t in range(n_tiles):
                    w_index = builder.add(w_off_v, const((d0 // 2) * 2 * cols + 2 * (n0 + t * COLS)))
                    b_tile = builder.call(load, [short(k_bytes // 4), short(TILE_BYTES), byte_ptr(w_v, w_index),
                                                 w_stride])
                    accs[t] = builder.call(dot, [short(m), short(TILE_BYTES), short(k_bytes), accs[t], a_tile, b_tile])
            for t in range(n_tiles):
                builder.call(store, [short(m), short(TILE_BYTES), c_ptrs[t], c_stride, accs[t]])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic(prefer_literal=True)
def add_rows(typingctx, cols, c, c_off, acc, rows, p, m, stride, col0):
    """add_rows(cols, c, c_off, acc, rows, p, m, stride, col0):
    acc[rows[p + r] * stride + col0 + j] += c[c_off + r * cols + j] for r < m, j < cols.

    cols is a compile-time int, a multiple of 16: each row is added with 16-lane float32 vector adds
    (numba's own loop for it ran scalar).
    """
    if not isinstance(cols, types.IntegerLiteral) or cols.literal_value % COLS or cols.literal_value <= 0:
        raise TypingError(f"add_rows needs compile-time constant cols, a positive multiple of {COLS}")
    sig = types.void(cols, c, c_off, acc, rows, p, m, stride, col0)
    cols = cols.literal_value

    def codegen(context, builder, signature, args):
        c_t, c_off_t, acc_t, rows_t, p_t, m_t, stride_t, col0_t = signature.args[1:]
        c_v, acc_v, rows_v = (_data(context, builder, t, v)
                              for t, v in ((c_t, args[1]), (acc_t, args[3]), (rows_t, args[4])))
        c_off_v, p_v, m_v, stride_v, col0_v = (_int64(context, builder, args[i], t) for i, t in
                                               ((2, c_off_t), (5, p_t), (6, m_t), (7, stride_t), (8, col0_t)))
        i64 = ir.IntType(64)
        vf = ir.VectorType(ir.FloatType(), COLS)

        def vector_at(base, index):
            return builder.bitcast(builder.gep(base, [index]), vf.as_pointer())

        with cgutils.for_range(builder, m_v) as loop:
            row = builder.load(builder.gep(rows_v, [builder.add(p_v, loop.index)]))
            row = _int64(context, builder, row, rows_t.dtype)
            base = builder.add(builder.mul(row, stride_v), col0_v)
            src0 = builder.add(c_off_v, builder.mul(loop.index, ir.Constant(i64, cols)))
            for l in range(cols // COLS):
                dst = vector_at(acc_v, builder.add(base, ir.Constant(i64, l * COLS)))
                src = builder.load(vector_at(c_v, builder.add(src0, ir.Constant(i64, l * COLS))), align=4)
                builder.store(builder.fadd(builder.load(dst, align=4), src), dst, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic(prefer_literal=True)
def gather_rows(typingctx, depth, a, a_off, x, x_rows, p, m, x_stride, col0):
    """gather_rows(depth, a, a_off, x, x_rows, p, m, x_stride, col0):
    a[a_off + r * depth_pad + d] = x[x_rows[p + r] * x_stride + col0 + d] for r < m, d < depth.

    depth is a compile-time int (depth_pad: rounded up to even, the row stride of a); a and x are
    int16. Rows are copied 32 elements (64 bytes) per vector, the tail element by element (numba's
    own loop for it ran about ten times slower).
    """
    if not isinstance(depth, types.IntegerLiteral) or depth.literal_value <= 0:
        raise TypingError("gather_rows needs a compile-time constant depth > 0")
    sig = types.void(depth, a, a_off, x, x_rows, p, m, x_stride, col0)
    depth = depth.literal_value
    depth_pad = depth + depth % 2

    def codegen(context, builder, signature, args):
        a_t, a_off_t, x_t, rows_t, p_t, m_t, stride_t, col0_t = signature.args[1:]
        a_v, x_v, rows_v = (_data(context, builder, t, v)
                            for t, v in ((a_t, args[1]), (x_t, args[3]), (rows_t, args[4])))
        a_off_v, p_v, m_v, stride_v, col0_v = (_int64(context, builder, args[i], t) for i, t in
                                               ((2, a_off_t), (5, p_t), (6, m_t), (7, stride_t), (8, col0_t)))
        i16, i64 = ir.IntType(16), ir.IntType(64)
        vh = ir.VectorType(i16, DEPTH)

        def const(v):
            return ir.Constant(i64, v)

        with cgutils.for_range(builder, m_v) as loop:
            row = builder.load(builder.gep(rows_v, [builder.add(p_v, loop.index)]))
            src = builder.add(builder.mul(_int64(context, builder, row, rows_t.dtype), stride_v), col0_v)
            dst = builder.add(a_off_v, builder.mul(loop.index, const(depth_pad)))
            d = 0
            while d + DEPTH <= depth:
                value = builder.load(builder.bitcast(builder.gep(x_v, [builder.add(src, const(d))]), vh.as_pointer()),
                                     align=2)
                builder.store(value, builder.bitcast(builder.gep(a_v, [builder.add(dst, const(d))]), vh.as_pointer()),
                              align=2)
                d += DEPTH
            for e in range(d, depth):
                value = builder.load(builder.gep(x_v, [builder.add(src, const(e))]))
                builder.store(value, builder.gep(a_v, [builder.add(dst, const(e))]))
        return context.get_dummy_value()

    return sig, codegen


def _row_loader(context, builder, x_v, rows_v, rows_t, p_v, m_v, stride_v, col0_v):
    """load(r, c0, width): x[x_rows[p + r] * stride + col0 + c0 : +width] as <width x i16>, zeros for r >= m
    (the row index is clamped to m - 1 first, so no stale index is dereferenced; m >= 1)."""
    i16, i64 = ir.IntType(16), ir.IntType(64)
    bases = []

    def base(r):
        while len(bases) <= r:
            q = len(bases)
            clamped = builder.select(builder.icmp_signed("<", ir.Constant(i64, q), m_v), ir.Constant(i64, q),
                                     builder.sub(m_v, ir.Constant(i64, 1)))
            row = builder.load(builder.gep(rows_v, [builder.add(p_v, clamped)]))
            start = builder.add(builder.mul(_int64(context, builder, row, rows_t.dtype), stride_v), col0_v)
            bases.append((start, builder.icmp_signed("<", ir.Constant(i64, q), m_v)))
        return bases[r]

    def load(r, c0, width):
        vt = ir.VectorType(i16, width)
        start, valid = base(r)
        ptr = builder.bitcast(builder.gep(x_v, [builder.add(start, ir.Constant(i64, c0))]), vt.as_pointer())
        return builder.select(valid, builder.load(ptr, align=2), ir.Constant(vt, None))

    return load


def _lane_mask(rule) -> list[int]:
    """A shufflevector mask over two <32 x i16> operands (b's elements numbered from 32) built lane by lane:
    rule(L) gives the 8 indices of 128-bit lane L of the result."""
    return [i for lane in range(4) for i in rule(lane)]


_B = DEPTH  # index of the second operand's first element in a shufflevector mask
# In-lane unpacks of 16-, 32- and 64-bit elements (vpunpck{l,h}{wd,dq,qdq}: one single-cycle shuffle each).
_UNPACK = {
    (16, 0): _lane_mask(lambda L: [x for e in range(4) for x in (8 * L + e, _B + 8 * L + e)]),
    (16, 1): _lane_mask(lambda L: [x for e in range(4, 8) for x in (8 * L + e, _B + 8 * L + e)]),
    (32, 0): _lane_mask(lambda L: [x for e in range(2) for x in (8 * L + 2 * e, 8 * L + 2 * e + 1,
                                                                  _B + 8 * L + 2 * e, _B + 8 * L + 2 * e + 1)]),
    (32, 1): _lane_mask(lambda L: [x for e in range(2, 4) for x in (8 * L + 2 * e, 8 * L + 2 * e + 1,
                                                                     _B + 8 * L + 2 * e, _B + 8 * L + 2 * e + 1)]),
    (64, 0): _lane_mask(lambda L: [8 * L + e for e in range(4)] + [_B + 8 * L + e for e in range(4)]),
    (64, 1): _lane_mask(lambda L: [8 * L + 4 + e for e in range(4)] + [_B + 8 * L + 4 + e for e in range(4)]),
}


def _lanes(*picks) -> list[int]:
    """Mask taking whole 128-bit lanes: picks are (operand 0 | 1, lane) for result lanes 0..3."""
    return [operand * _B + 8 * lane + e for operand, lane in picks for e in range(8)]


_LANES_01 = _lanes((0, 0), (1, 0), (0, 1), (1, 1))  # [a0 b0 a1 b1]
_LANES_23 = _lanes((0, 2), (1, 2), (0, 3), (1, 3))  # [a2 b2 a3 b3]
_PICK_01 = _lanes((0, 0), (0, 1), (1, 0), (1, 1))  # [a0 a1 b0 b1]
_PICK_23 = _lanes((0, 2), (0, 3), (1, 2), (1, 3))  # [a2 a3 b2 b3]


def _transpose_32x32(builder, rows):
    """Transpose 32 <32 x i16> rows: result d holds element d of every row.

    Three rounds of in-lane unpacks (16-, 32-, then 64-bit) transpose each group of 8 rows as 8 x 8
    blocks inside the 128-bit lanes: register j of group G then holds, in lane L, column 8 L + j of
    rows 8 G .. 8 G + 7. Two rounds of whole-lane shuffles put the four groups' lane L side by side.
    160 single-uop shuffles per block (five rounds of two-source 16-bit permutes cost twice that)."""
    def shuffle(a, b, mask):
        return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), DEPTH), mask))

    groups = []
    for g in range(4):
        r = rows[8 * g:8 * g + 8]
        s = [shuffle(r[2 * i], r[2 * i + 1], _UNPACK[16, h]) for i in range(4) for h in (0, 1)]
        u = [shuffle(s[a], s[b], _UNPACK[32, h]) for a, b in ((0, 2), (1, 3), (4, 6), (5, 7)) for h in (0, 1)]
        groups.append([shuffle(u[a], u[b], _UNPACK[64, h]) for a, b in ((0, 4), (1, 5), (2, 6), (3, 7))
                       for h in (0, 1)])
    out = [None] * DEPTH
    for j in range(8):
        a, b, c, d = (group[j] for group in groups)
        ab01, ab23 = shuffle(a, b, _LANES_01), shuffle(a, b, _LANES_23)
        cd01, cd23 = shuffle(c, d, _LANES_01), shuffle(c, d, _LANES_23)
        out[j], out[8 + j] = shuffle(ab01, cd01, _PICK_01), shuffle(ab01, cd01, _PICK_23)
        out[16 + j], out[24 + j] = shuffle(ab23, cd23, _PICK_01), shuffle(ab23, cd23, _PICK_23)
    return out


@intrinsic(prefer_literal=True)
def transpose_rows(typingctx, channels, a, a_off, a_stride, x, x_rows, p, m, x_stride, col0):
    """transpose_rows(channels, a, a_off, a_stride, x, x_rows, p, m, x_stride, col0):
    a[a_off + d * a_stride + r] = x[x_rows[p + r] * x_stride + col0 + d] for r < 32, d < channels
    (0 for r >= m; 1 <= m <= 32).

    channels is a compile-time multiple of 32: each 32 x 32 block of int16 is transposed in vector
    registers (32 loads and 32 stores of 64 bytes) by `_transpose_32x32`.
    """
    if not isinstance(channels, types.IntegerLiteral) or channels.literal_value % DEPTH:
        raise TypingError(f"transpose_rows needs compile-time constant channels, a multiple of {DEPTH}")
    sig = types.void(channels, a, a_off, a_stride, x, x_rows, p, m, x_stride, col0)
    channels = channels.literal_value

    def codegen(context, builder, signature, args):
        a_t, a_off_t, a_stride_t, x_t, rows_t, p_t, m_t, stride_t, col0_t = signature.args[1:]
        a_v, x_v, rows_v = (_data(context, builder, t, v)
                            for t, v in ((a_t, args[1]), (x_t, args[4]), (rows_t, args[5])))
        a_off_v, a_stride_v, p_v, m_v, stride_v, col0_v = (
            _int64(context, builder, args[i], t)
            for i, t in ((2, a_off_t), (3, a_stride_t), (6, p_t), (7, m_t), (8, stride_t), (9, col0_t)))
        i16, i64 = ir.IntType(16), ir.IntType(64)
        vt = ir.VectorType(i16, DEPTH)
        load = _row_loader(context, builder, x_v, rows_v, rows_t, p_v, m_v, stride_v, col0_v)
        for c0 in range(0, channels, DEPTH):
            rows = _transpose_32x32(builder, [load(r, c0, DEPTH) for r in range(DEPTH)])
            for d in range(DEPTH):
                index = builder.add(a_off_v, builder.mul(ir.Constant(i64, c0 + d), a_stride_v))
                builder.store(rows[d], builder.bitcast(builder.gep(a_v, [index]), vt.as_pointer()), align=2)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic(prefer_literal=True)
def interleave_rows(typingctx, cols, b, b_off, g, g_rows, p, m, g_stride, col0):
    """interleave_rows(cols, b, b_off, g, g_rows, p, m, g_stride, col0): 32 rows of g into VNNI layout,
    b[b_off + (r // 2) * 2 * cols + 2 * c + r % 2] = g[g_rows[p + r] * g_stride + col0 + c] for r < 32,
    c < cols (0 for r >= m; 1 <= m <= 32). cols is a compile-time int >= 1: two rows' vectors of 32
    columns (the rest at the end) are interleaved by one shuffle. The tiles take cols a multiple of 16;
    `sparse_conv_bf16.pair_weight_gradient` packs any width.
    """
    if not isinstance(cols, types.IntegerLiteral) or cols.literal_value < 1:
        raise TypingError("interleave_rows needs compile-time constant cols >= 1")
    sig = types.void(cols, b, b_off, g, g_rows, p, m, g_stride, col0)
    cols = cols.literal_value

    def codegen(context, builder, signature, args):
        b_t, b_off_t, g_t, rows_t, p_t, m_t, stride_t, col0_t = signature.args[1:]
        b_v, g_v, rows_v = (_data(context, builder, t, v)
                            for t, v in ((b_t, args[1]), (g_t, args[3]), (rows_t, args[4])))
        b_off_v, p_v, m_v, stride_v, col0_v = (_int64(context, builder, args[i], t) for i, t in
                                               ((2, b_off_t), (5, p_t), (6, m_t), (7, stride_t), (8, col0_t)))
        i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
        load = _row_loader(context, builder, g_v, rows_v, rows_t, p_v, m_v, stride_v, col0_v)
        for q in range(DEPTH // 2):
            for c0 in range(0, cols, DEPTH):
                width = min(DEPTH, cols - c0)
                mask = ir.Constant(ir.VectorType(i32, 2 * width), [i // 2 + (i % 2) * width for i in range(2 * width)])
                pair = builder.shuffle_vector(load(2 * q, c0, width), load(2 * q + 1, c0, width), mask)
                index = builder.add(b_off_v, ir.Constant(i64, q * 2 * cols + 2 * c0))
                ptr = builder.bitcast(builder.gep(b_v, [index]), ir.VectorType(i16, 2 * width).as_pointer())
                builder.store(pair, ptr, align=2)
        return context.get_dummy_value()

    return sig, codegen
