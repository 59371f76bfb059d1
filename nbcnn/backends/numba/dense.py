"""Dense (fully connected) layer: y = x @ w.T + b with x (N, in), w (out, in).

    forward:   y  = x @ w.T + b
    backward:  dw = dy.T @ x,  db = sum_n dy[n],  dx = dy @ w

The forward product is "A @ B.T" (both operands read along contiguous rows) and runs in the
register-blocked dot-product kernel ``blocked.matmul_abt``. The backward products are "A @ B"
with B read along its rows (x and w as they are, dy.T packed once, the smallest operand) and run
in ``matmul_ab``: outer products in explicit SIMD vectors (``simd``), the form of BLIS's
micro-kernels. BLAS (numpy ``@``) is deliberately not used: OpenBLAS's worker threads keep
spinning after each call and, on a machine with few cores, starve the Numba threads of the next
op (measured: 10x slower steps).
"""

from __future__ import annotations

import numpy as np

from numba import prange

from ._jit import call, helper, inlined_helper, kernel
from .blocked import matmul_abt
from .simd import LANES, fma, load, splat, store

#: columns of c one ``matmul_ab`` task owns: the 3 accumulator vectors of its tiles
PANEL = 3 * LANES
#: values of k one pass over a panel covers: the panel's KC x PANEL slice of b (96 KiB with
#: 16-float vectors) stays in L2 while every row tile of c uses it
KC = 512


def forward(x, w, b):
    y = np.empty((x.shape[0], w.shape[0]), np.float32)
    call(matmul_abt, y.size * x.shape[1] // 16, x, w, y)            # y[n, o] = dot(x[n], w[o])
    if b is not None:
        y += b
    return y


def backward(x, w, dy, with_bias, need_dx):
    dw = np.empty(w.shape, np.float32)
    call(matmul_ab, dw.size * x.shape[0] // 16, np.ascontiguousarray(dy.T), x, dw)  # dy.T @ x
    db = dy.sum(axis=0, dtype=np.float32) if with_bias else None
    dx = None
    if need_dx:
        dx = np.empty(x.shape, np.float32)
        call(matmul_ab, dx.size * w.shape[0] // 16, dy, w, dx)                       # dy @ w
    return dx, dw, db


@kernel
def matmul_ab(a, b, c):
    """c = a @ b (a: M x K, b: K x N, c: M x N, C-contiguous float32) as outer products: a tile
    of 4 rows x 3 vectors of c stays in 12 accumulator vectors while k runs; per k it loads 3
    vectors of b's row k and broadcasts 4 values of a's column k (12 multiply-adds). One prange
    iteration per panel of PANEL columns of c, which it alone writes (``ab_panel``)."""
    n = b.shape[1]
    bias = np.zeros(a.shape[0], np.float32)
    bf = b.reshape(b.size)
    cf = c.reshape(c.size)
    for p in prange((n + PANEL - 1) // PANEL):
        ab_panel(a, bf, cf, n, bias, p, b, c)


@kernel
def matmul_ab_batched(a, b, bias, c):
    """c[t] = a @ b[t] + bias[:, None] for every t (a: M x K, b: T x K x N, c: T x M x N,
    C-contiguous float32): a 1 x 1 convolution of T images (a the filters, b[t] an image's
    C x H*W planes). One prange iteration per (t, panel of PANEL columns)."""
    n_t, _, n = b.shape
    panels = (n + PANEL - 1) // PANEL
    for task in prange(n_t * panels):
        t = task // panels
        ab_panel(a, b[t].reshape(b[t].size), c[t].reshape(c[t].size), n, bias, task % panels,
                 b[t], c[t])


@helper
def ab_panel(a, bf, cf, n, bias, p, b, c):
    """Columns p*PANEL .. of c = a @ b + bias[:, None] (bf, cf: b and c flattened, n: their
    columns). k goes in blocks of KC (c's tiles reloaded between blocks) and the row tiles run
    down the panel. The last one to three rows run in a tile whose missing rows repeat the last
    row and are not stored; a panel narrower than PANEL runs in 4 x 1 vector tiles, its last
    columns (fewer than a vector) one value at a time."""
    m, kk = a.shape
    j0 = p * PANEL
    j1 = min(n, j0 + PANEL)
    vectors = (j1 - j0) // LANES
    for k0 in range(0, kk, KC):
        k1 = min(kk, k0 + KC)
        first = k0 == 0
        for i in range(0, m, 4):
            rows = min(4, m - i)
            if vectors == 3:
                tile4x3(a, bf, cf, n, m, i, rows, j0, k0, k1, first, bias)
            else:
                for v in range(vectors):
                    tile4x1(a, bf, cf, n, m, i, rows, j0 + v * LANES, k0, k1, first, bias)
        scalar_columns(a, b, c, j0 + vectors * LANES, j1, k0, k1, first, bias)


@inlined_helper
def tile4x3(a, bf, cf, n, m, i, rows, j, k0, k1, first, bias):
    """c[i + r, j : j + 3 * LANES] = (bias[i + r] if first else itself) + sum_{k0 <= k < k1}
    a[i + r, k] * b[k, j : j + 3 * LANES] for r < rows (bf, cf: b and c flattened)."""
    i1 = min(i + 1, m - 1)
    i2 = min(i + 2, m - 1)
    i3 = min(i + 3, m - 1)
    if first:
        c00 = c01 = c02 = splat(bias[i])
        c10 = c11 = c12 = splat(bias[i1])
        c20 = c21 = c22 = splat(bias[i2])
        c30 = c31 = c32 = splat(bias[i3])
    else:
        c00, c01, c02 = load(cf, i * n + j), load(cf, i * n + j + LANES), \
            load(cf, i * n + j + 2 * LANES)
        c10, c11, c12 = load(cf, i1 * n + j), load(cf, i1 * n + j + LANES), \
            load(cf, i1 * n + j + 2 * LANES)
        c20, c21, c22 = load(cf, i2 * n + j), load(cf, i2 * n + j + LANES), \
            load(cf, i2 * n + j + 2 * LANES)
        c30, c31, c32 = load(cf, i3 * n + j), load(cf, i3 * n + j + LANES), \
            load(cf, i3 * n + j + 2 * LANES)
    for k in range(k0, k1):
        at = k * n + j
        x0 = load(bf, at)
        x1 = load(bf, at + LANES)
        x2 = load(bf, at + 2 * LANES)
        w = splat(a[i, k])
        c00 = fma(w, x0, c00)
        c01 = fma(w, x1, c01)
        c02 = fma(w, x2, c02)
        w = splat(a[i1, k])
        c10 = fma(w, x0, c10)
        c11 = fma(w, x1, c11)
        c12 = fma(w, x2, c12)
        w = splat(a[i2, k])
        c20 = fma(w, x0, c20)
        c21 = fma(w, x1, c21)
        c22 = fma(w, x2, c22)
        w = splat(a[i3, k])
        c30 = fma(w, x0, c30)
        c31 = fma(w, x1, c31)
        c32 = fma(w, x2, c32)
    store(cf, i * n + j, c00)
    store(cf, i * n + j + LANES, c01)
    store(cf, i * n + j + 2 * LANES, c02)
    if rows > 1:
        store(cf, i1 * n + j, c10)
        store(cf, i1 * n + j + LANES, c11)
        store(cf, i1 * n + j + 2 * LANES, c12)
    if rows > 2:
        store(cf, i2 * n + j, c20)
        store(cf, i2 * n + j + LANES, c21)
        store(cf, i2 * n + j + 2 * LANES, c22)
    if rows > 3:
        store(cf, i3 * n + j, c30)
        store(cf, i3 * n + j + LANES, c31)
        store(cf, i3 * n + j + 2 * LANES, c32)


@inlined_helper
def tile4x1(a, bf, cf, n, m, i, rows, j, k0, k1, first, bias):
    """``tile4x3`` for one vector of columns: c[i + r, j : j + LANES] for r < rows."""
    i1 = min(i + 1, m - 1)
    i2 = min(i + 2, m - 1)
    i3 = min(i + 3, m - 1)
    if first:
        c0, c1, c2, c3 = splat(bias[i]), splat(bias[i1]), splat(bias[i2]), splat(bias[i3])
    else:
        c0, c1 = load(cf, i * n + j), load(cf, i1 * n + j)
        c2, c3 = load(cf, i2 * n + j), load(cf, i3 * n + j)
    for k in range(k0, k1):
        x = load(bf, k * n + j)
        c0 = fma(splat(a[i, k]), x, c0)
        c1 = fma(splat(a[i1, k]), x, c1)
        c2 = fma(splat(a[i2, k]), x, c2)
        c3 = fma(splat(a[i3, k]), x, c3)
    store(cf, i * n + j, c0)
    if rows > 1:
        store(cf, i1 * n + j, c1)
    if rows > 2:
        store(cf, i2 * n + j, c2)
    if rows > 3:
        store(cf, i3 * n + j, c3)


@helper
def scalar_columns(a, b, c, j0, j1, k0, k1, first, bias):
    """c[:, j0:j1] = (bias[:, None] if first else itself) + a[:, k0:k1] @ b[k0:k1, j0:j1], a
    value at a time (fewer than LANES columns at the right edge)."""
    for i in range(a.shape[0]):
        if first:
            for j in range(j0, j1):
                c[i, j] = bias[i]
        for k in range(k0, k1):
            s = a[i, k]
            for j in range(j0, j1):
                c[i, j] += s * b[k, j]
