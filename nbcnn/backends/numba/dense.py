"""Dense (fully connected) layer: y = x @ w.T + b with x (N, in), w (out, in).

    forward:   y  = x @ w.T + b
    backward:  dw = dy.T @ x,  db = sum_n dy[n],  dx = dy @ w

Every product is written as "A @ B.T" with both operands read along contiguous rows and runs
in the register-blocked Numba kernel ``blocked.matmul_abt`` (parallel over tiles of the result).
The operands that are not in that form are transposed first (small copies). BLAS (numpy ``@``)
is deliberately not used: OpenBLAS's worker threads keep spinning after each call and, on a
machine with few cores, starve the Numba threads of the next op (measured: 10x slower steps).
"""

from __future__ import annotations

import numpy as np

from ._jit import call
from .blocked import matmul_abt


def forward(x, w, b):
    y = np.empty((x.shape[0], w.shape[0]), np.float32)
    call(matmul_abt, y.size * x.shape[1] // 16, x, w, y)            # y[n, o] = dot(x[n], w[o])
    if b is not None:
        y += b
    return y


def backward(x, w, dy, with_bias, need_dx):
    dw = np.empty(w.shape, np.float32)
    # dw[o, i] = dot(dy[:, o], x[:, i]): a dot product over the batch
    call(matmul_abt, dw.size * x.shape[0] // 16, np.ascontiguousarray(dy.T),
         np.ascontiguousarray(x.T), dw)
    db = dy.sum(axis=0, dtype=np.float32) if with_bias else None
    dx = None
    if need_dx:
        dx = np.empty(x.shape, np.float32)
        # dx[n, i] = dot(dy[n], w[:, i])
        call(matmul_abt, dx.size * w.shape[0] // 16, dy, np.ascontiguousarray(w.T), dx)
    return dx, dw, db
