"""Dense (fully connected) layer: y = x @ w.T + b with x (N, in), w (out, in).

No Numba kernel here on purpose: the matrix products go to numpy's ``@``, a BLAS sgemm that
OpenBLAS runs multi-threaded (Numba's own ``np.dot`` would need SciPy, and a hand-written loop
does not beat a tuned GEMM). The bias add and the bias gradient are tiny numpy steps, which
also saves two kernels' compile time.

    forward:   y  = x @ w.T + b
    backward:  dw = dy.T @ x,  db = sum_n dy[n],  dx = dy @ w
"""

from __future__ import annotations

import numpy as np


def forward(x, w, b):
    y = x @ w.T                              # (N, in) @ (in, out)
    if b is not None:
        y += b
    return y


def backward(x, w, dy, with_bias, need_dx):
    dw = dy.T @ x                            # (out, N) @ (N, in)
    db = dy.sum(axis=0, dtype=np.float32) if with_bias else None
    dx = dy @ w if need_dx else None         # (N, out) @ (out, in)
    return dx, dw, db
