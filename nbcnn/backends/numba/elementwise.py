"""Element-wise kernels on flat float32 arrays (the caller passes ``a.reshape(-1)``).

One ``prange`` over the elements; each iteration reads a[k], b[k] and writes only out[k], so
``out`` may be ``a`` or ``b`` itself (the sum then accumulates in place).
"""

from __future__ import annotations

from numba import prange

from ._jit import strict_kernel


@strict_kernel
def add(a, b, out):
    """out = a + b (a residual block's two paths; IEEE semantics, so NaN and inf propagate)."""
    for k in prange(a.size):
        out[k] = a[k] + b[k]
