"""``fma(a, b, c)``: a * b + c rounded once (LLVM's ``llvm.fma``), for the numba kernels.

The engine's kernels do not use numba's ``fastmath``: its ``contract`` and ``reassoc`` flags let LLVM choose
per compilation which multiply-adds it fuses and how it regroups a sum, and numba compiles a parallel
kernel's loop body twice, once on its own and once inside the kernel that calls it. The process that
compiled a kernel runs the first copy; every later process loads the second from the on-disk cache. With
those flags the two copies of one source rounded differently (SubM 16 -> 24 float32 weight gradient: up to
3 ulp), so a first run and a cached run of the same code gave different gradients. Written with `fma` and
without the flags, each sum has the order and the roundings its source states, whichever copy runs, and a
multiply-add is still one ``vfmadd`` instruction (scalar, or vector where the loop is vectorised or the
micro-kernels emit vectors). What the flags also allowed and is now gone: LLVM vectorising a reduction by
regrouping it (the sum over input channels of the scalar loops the engine then had).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic


def emit_fma(builder, a, b, c):
    """Emit ``llvm.fma`` on three LLVM values of one float or float-vector type (llvmlite's own ``fma`` takes
    scalars only)."""
    typ = a.type
    elem = typ.element if isinstance(typ, ir.VectorType) else typ
    name = {ir.FloatType: "f32", ir.DoubleType: "f64"}[type(elem)]
    if isinstance(typ, ir.VectorType):
        name = f"v{typ.count}{name}"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(typ, [typ, typ, typ]), f"llvm.fma.{name}")
    return builder.call(fn, [a, b, c])


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c with one rounding; a, b, c of one float type (the result's)."""
    if not (isinstance(a, types.Float) and a == b == c):
        raise TypingError(f"fma needs three values of one float type, got {a}, {b}, {c}")

    def codegen(context, builder, signature, args):
        return emit_fma(builder, *args)

    return a(a, b, c), codegen
