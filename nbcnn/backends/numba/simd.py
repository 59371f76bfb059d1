"""Explicit SIMD vectors for Numba kernels: a float32 vector type and four operations on it.

Numba leaves vectorisation to LLVM's loop vectoriser, which only vectorises a reduction along
the innermost loop: the accumulators of a dot product. A convolution vectorised the other way,
broadcasting one weight and multiply-adding it into a whole vector of output pixels at once
(the outer-product form of BLIS's and oneDNN's micro-kernels), needs a tile of accumulator
*vectors* that stay in registers across the whole reduction. Numba cannot express that with
arrays (a local array lives on the heap, and LLVM cannot prove it does not alias the inputs, so
every multiply-add would load and store it). A value of the type below is an SSA value, so
LLVM keeps a tile of them in registers:

    acc = splat(bias)                     # a vector with every lane = bias
    for t in range(n):
        acc = fma(splat(w[t]), load(x, base + t), acc)
    store(y, 0, acc)

``LANES`` (floats per vector) follows the vector width Numba compiles for in this process
(``numba_env.width()``, chosen per CPU at start-up): 16 with 512-bit vectors, 8 with 256-bit
(AVX2, or ``NBCNN_VECTOR_WIDTH=256``), 4 with SSE only. Numba's on-disk cache is keyed by the
CPU's name and feature string, which decide the width, so a cached kernel always matches LANES.

``load`` and ``store`` do no bounds checks: a kernel using them must keep every lane of every
access inside its array (the kernels here pad their buffers so that they do).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

from ..numba_env import width as _width


class Float32Vector(types.Type):
    """The Numba type of a vector of ``lanes`` float32 values (LLVM's <lanes x float>)."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__(name=f"float32x{lanes}")


@register_model(Float32Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.FloatType(), fe_type.lanes))


#: floats per vector in this process (see the module docstring)
LANES = {"512": 16, "256": 8, "128": 4}.get(_width(), 8)
VECTOR = Float32Vector(LANES)
_LLVM_VECTOR = ir.VectorType(ir.FloatType(), LANES)
#: LLVM may fuse the multiply and the add (no other fast-math flag: NaN and infinity propagate)
_FAST = ("contract",)


def _vector_pointer(context, builder, array_type, array, index):
    """Pointer to element ``index`` of a 1-D array, as a pointer to a whole vector."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), _LLVM_VECTOR.as_pointer())


@intrinsic
def load(typingctx, array, index):
    """The LANES values array[index:index + LANES] (1-D float32 array, C order), as a vector."""
    def codegen(context, builder, sig, args):
        return builder.load(_vector_pointer(context, builder, sig.args[0], *args), align=4)
    return VECTOR(array, types.intp), codegen


@intrinsic
def store(typingctx, array, index, vector):
    """array[index:index + LANES] = vector."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _vector_pointer(context, builder, sig.args[0], args[0], args[1]),
                      align=4)
        return context.get_dummy_value()
    return types.void(array, types.intp, VECTOR), codegen


@intrinsic
def splat(typingctx, value):
    """A vector whose every lane is ``value``."""
    def codegen(context, builder, sig, args):
        one = builder.insert_element(ir.Constant(_LLVM_VECTOR, ir.Undefined), args[0],
                                     ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), LANES),
                                                            [0] * LANES))
    return VECTOR(types.float32), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c, lane by lane (one fused multiply-add instruction where the CPU has one)."""
    def codegen(context, builder, sig, args):
        return builder.fadd(builder.fmul(args[0], args[1], flags=_FAST), args[2], flags=_FAST)
    return VECTOR(VECTOR, VECTOR, VECTOR), codegen
