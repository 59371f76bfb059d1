"""Dense (fully connected) layer: y = x @ w.T + b with x (N, in), w (out, in).

    forward:   y  = x @ w.T + b
    backward:  dw = dy.T @ x,  db = sum_n dy[n],  dx = dy @ w

The forward product is "A @ B.T" (both operands read along contiguous rows) and runs in the
register-blocked kernel ``blocked.matmul_abt``. The backward products are "A.T @ B", summed over
the batch (dw) or over the outputs (dx); ``matmul_atb`` computes them as sums of scaled rows of B,
so nothing large is transposed (transposing a 4096-wide x or w took longer than the products).
BLAS (numpy ``@``) is deliberately not used: OpenBLAS's worker threads keep spinning after each
call and, on a machine with few cores, starve the Numba threads of the next op (measured: 10x
slower steps).
"""

from __future__ import annotations

import numpy as np

from numba import prange

from ._jit import call, kernel
from .blocked import matmul_abt

#: columns of c one ``matmul_atb`` task covers (4 rows x 512 float32 = 8 KiB stays in L1)
ATB_COLUMNS = 512


def forward(x, w, b):
    y = np.empty((x.shape[0], w.shape[0]), np.float32)
    call(matmul_abt, y.size * x.shape[1] // 16, x, w, y)            # y[n, o] = dot(x[n], w[o])
    if b is not None:
        y += b
    return y


def backward(x, w, dy, with_bias, need_dx):
    dw = np.empty(w.shape, np.float32)
    call(matmul_atb, dw.size * x.shape[0] // 16, dy, x, dw)       # dw[o, i] = sum_n dy[n, o] x[n, i]
    db = dy.sum(axis=0, dtype=np.float32) if with_bias else None
    dx = None
    if need_dx:
        dx = np.empty(x.shape, np.float32)
        # dx[n, i] = sum_o dy[n, o] w[o, i]
        call(matmul_atb, dx.size * w.shape[0] // 16, np.ascontiguousarray(dy.T), w, dx)
    return dx, dw, db


@kernel
def matmul_atb(a, b, c):
    """c = a.T @ b (a: T x R, b: T x S, c: R x S, C-contiguous float32) as sums of rows:
    c[r, :] = sum_t a[t, r] * b[t, :]. The s loop is contiguous in b and c, so it vectorises;
    four rows of c take two rows of b per pass (8 multiply-adds per value of c loaded and
    stored). One prange iteration per tile of 4 rows x ATB_COLUMNS columns of c, which it
    alone writes."""
    n_t, n_r = a.shape
    n_s = b.shape[1]
    width = ATB_COLUMNS
    tiles_r = (n_r + 3) // 4
    tiles_s = (n_s + width - 1) // width
    t_end = n_t // 2 * 2
    for tile in prange(tiles_r * tiles_s):
        r0 = (tile // tiles_s) * 4
        s0 = (tile % tiles_s) * width
        s1 = min(n_s, s0 + width)
        if r0 + 4 <= n_r:
            c0, c1, c2, c3 = c[r0, s0:s1], c[r0 + 1, s0:s1], c[r0 + 2, s0:s1], c[r0 + 3, s0:s1]
            c0[:] = 0.0
            c1[:] = 0.0
            c2[:] = 0.0
            c3[:] = 0.0
            for t in range(0, t_end, 2):
                b0, b1 = b[t, s0:s1], b[t + 1, s0:s1]
                p0, p1, p2, p3 = a[t, r0], a[t, r0 + 1], a[t, r0 + 2], a[t, r0 + 3]
                q0, q1, q2, q3 = a[t + 1, r0], a[t + 1, r0 + 1], a[t + 1, r0 + 2], a[t + 1, r0 + 3]
                for s in range(s1 - s0):
                    u = b0[s]
                    v = b1[s]
                    c0[s] += p0 * u + q0 * v
                    c1[s] += p1 * u + q1 * v
                    c2[s] += p2 * u + q2 * v
                    c3[s] += p3 * u + q3 * v
            for t in range(t_end, n_t):                 # an odd last t
                b0 = b[t, s0:s1]
                p0, p1, p2, p3 = a[t, r0], a[t, r0 + 1], a[t, r0 + 2], a[t, r0 + 3]
                for s in range(s1 - s0):
                    u = b0[s]
                    c0[s] += p0 * u
                    c1[s] += p1 * u
                    c2[s] += p2 * u
                    c3[s] += p3 * u
        else:                                           # the last one to three rows
            for r in range(r0, n_r):
                cr = c[r, s0:s1]
                cr[:] = 0.0
                for t in range(n_t):
                    b0 = b[t, s0:s1]
                    p0 = a[t, r]
                    for s in range(s1 - s0):
                        cr[s] += p0 * b0[s]
