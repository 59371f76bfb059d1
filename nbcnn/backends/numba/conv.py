"""2-D convolution kernels (NCHW, float32), direct form.

Notation: x (N, C, H, W) input, xp the zero-padded input (N, C, Hp, Wp), w (O, C, KH, KW) filters,
y / dy (N, O, OH, OW) output and its gradient, stride (sh, sw).

    y[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q] * xp[n, c, i*sh + p, j*sw + q]

Every kernel loops with the output row's pixels ``j`` innermost: that axis is contiguous in
memory, so LLVM turns it into SIMD fused multiply-adds (fully contiguous when sw == 1).

Parallel scheme (no two ``prange`` iterations ever write the same element):

* forward:  one iteration per (image n, filter o) writes the plane y[n, o];
* dw, db:   one iteration per (filter o, channel c) pair reduces over the batch and the pixels
            into its own dw[o, c]; the c == 0 iteration also sums db[o];
* dx:       one iteration per (image n, channel c) scatters every filter's contribution into
            its own plane dxp[n, c] of the padded gradient, then copies the unpadded part out.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import kernel


@kernel
def conv_forward_direct(xp, w, b, sh, sw, y):
    """y = conv(xp, w) + b, written into ``y``; one prange iteration per (n, o) plane."""
    n_img, n_out, oh, ow = y.shape
    n_in, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    for t in prange(n_img * n_out):
        n = t // n_out
        o = t % n_out
        bias = b[o]
        for i in range(oh):
            row = y[n, o, i]
            for j in range(ow):
                row[j] = bias
            for c in range(n_in):
                for p in range(kh):
                    xrow = xp[n, c, i * sh + p]
                    for q in range(kw):
                        wv = w[o, c, p, q]
                        for j in range(ow):
                            row[j] += wv * xrow[j * sw + q]


@kernel
def conv_backward_weights_direct(xp, dy, sh, sw, with_bias, dw, db):
    """dw[o, c, p, q] = sum_{n, i, j} dy[n, o, i, j] * xp[n, c, i*sh + p, j*sw + q] and
    db[o] = sum_{n, i, j} dy[n, o, i, j]; one prange iteration per (o, c) pair."""
    n_img, n_out, oh, ow = dy.shape
    n_in, kh, kw = dw.shape[1], dw.shape[2], dw.shape[3]
    for t in prange(n_out * n_in):
        o = t // n_in
        c = t % n_in
        for p in range(kh):
            for q in range(kw):
                acc = np.float32(0.0)
                for n in range(n_img):
                    for i in range(oh):
                        drow = dy[n, o, i]
                        xrow = xp[n, c, i * sh + p]
                        for j in range(ow):
                            acc += drow[j] * xrow[j * sw + q]
                dw[o, c, p, q] = acc
        if with_bias and c == 0:
            acc = np.float32(0.0)
            for n in range(n_img):
                for i in range(oh):
                    for j in range(ow):
                        acc += dy[n, o, i, j]
            db[o] = acc


@kernel
def conv_backward_input_direct(dy, w, sh, sw, top, left, dxp, dx):
    """dx = the adjoint of the forward: every dy[n, o, i, j] * w[o, c] is added back onto the
    window of xp it came from. One prange iteration per (n, c) owns the planes dxp[n, c] (a
    scratch plane, padded) and dx[n, c] (its unpadded interior)."""
    n_img, n_out, oh, ow = dy.shape
    n_in, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    h, wd = dx.shape[2], dx.shape[3]
    for t in prange(n_img * n_in):
        n = t // n_in
        c = t % n_in
        plane = dxp[n, c]
        plane[:, :] = np.float32(0.0)
        for o in range(n_out):
            for i in range(oh):
                drow = dy[n, o, i]
                for p in range(kh):
                    xrow = plane[i * sh + p]
                    for q in range(kw):
                        wv = w[o, c, p, q]
                        for j in range(ow):
                            xrow[j * sw + q] += wv * drow[j]
        for r in range(h):
            for s in range(wd):
                dx[n, c, r, s] = plane[top + r, left + s]
