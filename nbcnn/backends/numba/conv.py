"""2-D convolution kernels (NCHW, float32): the direct form and im2col + BLAS.

The default path (``conv_variant = "auto"``) uses the SIMD outer-product kernel of
``plane.py`` (stride-1 convolutions and every input gradient) and the register-blocked
kernels of ``blocked.py``, and, for strided forward passes with short windows (< 24 values),
the direct forward kernel below. The rest of this module is selectable (``"direct"``,
``"gemm"``) and tested; "gemm" calls OpenBLAS through numpy, whose spinning worker threads
compete with Numba's on a machine with few cores, which is why it is not the default.

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

from ._jit import helper, kernel


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
                        if sw == 1:                 # contiguous: vectorised
                            for j in range(ow):
                                row[j] += wv * xrow[j + q]
                        else:
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


# ---- im2col + GEMM ---------------------------------------------------------------------------
#
# The same convolution as one matrix product. "im2col" copies, for every output pixel, the
# C*KH*KW input values its window sees into one column of a matrix:
#
#     cols[(c*KH + p)*KW + q, n*P + i*OW + j] = xp[n, c, i*sh + p, j*sw + q]      (P = OH*OW)
#
# so that Y = W2 @ cols with W2 = w.reshape(O, C*KH*KW) gives Y[o, n*P + i*OW + j] = y[n, o, i, j]
# The product runs in BLAS (numpy ``@``); the kernels below only move data. Backward reuses the
# layout:  dw = dY @ cols.T  and  dcols = W2.T @ dY,  and "col2im" adds dcols back onto the
# (padded) input positions, the adjoint of im2col.


@kernel
def im2col(xp, kh, kw, sh, sw, oh, ow, cols):
    """cols[(c*kh + p)*kw + q, n*P + i*ow + j] = xp[n, c, i*sh + p, j*sw + q]. One prange
    iteration per (cols row, image) pair writes its own segment of that row."""
    n_img, n_in = xp.shape[0], xp.shape[1]
    kk = kh * kw
    pix = oh * ow
    for t in prange(n_in * kk * n_img):
        k = t // n_img
        n = t % n_img
        c = k // kk
        p = (k % kk) // kw
        q = k % kw
        row = cols[k]
        for i in range(oh):
            src = xp[n, c, i * sh + p]
            base = n * pix + i * ow
            if sw == 1:
                for j in range(ow):
                    row[base + j] = src[j + q]
            else:
                for j in range(ow):
                    row[base + j] = src[j * sw + q]


@kernel
def cols_to_nchw(ymat, b, y):
    """y[n, o, :, :] = ymat[o, n*P:(n+1)*P] + b[o] (the GEMM's (O, N*P) result back to NCHW,
    with the bias fused); one prange iteration per (n, o) plane."""
    n_img, n_out = y.shape[0], y.shape[1]
    pix = y.shape[2] * y.shape[3]
    yf = y.reshape(n_img, n_out, pix)
    for t in prange(n_img * n_out):
        n = t // n_out
        o = t % n_out
        src = ymat[o]
        dst = yf[n, o]
        bias = b[o]
        base = n * pix
        for k in range(pix):
            dst[k] = src[base + k] + bias


@kernel
def nchw_to_cols(dy, dymat, db):
    """dymat[o, n*P + k] = dy[n, o, k] (NCHW to the GEMM's (O, N*P) layout) and
    db[o] = sum of dy[:, o]; one prange iteration per filter o owns row o and db[o]."""
    n_img, n_out = dy.shape[0], dy.shape[1]
    pix = dy.shape[2] * dy.shape[3]
    dyf = dy.reshape(n_img, n_out, pix)
    for o in prange(n_out):
        dst = dymat[o]
        acc = np.float32(0.0)
        for n in range(n_img):
            src = dyf[n, o]
            base = n * pix
            part = np.float32(0.0)
            for k in range(pix):
                v = src[k]
                dst[base + k] = v
                part += v
            acc += part
        db[o] = acc


@kernel
def col2im(dcols, kh, kw, sh, sw, oh, ow, top, left, dxp, dx):
    """The adjoint of im2col: dxp[n, c, i*sh + p, j*sw + q] += dcols[(c*kh + p)*kw + q, n*P +
    i*ow + j], then dx[n, c] = the unpadded interior of dxp[n, c]. One prange iteration per
    (n, c) owns those two planes."""
    n_img, n_in = dx.shape[0], dx.shape[1]
    h, wd = dx.shape[2], dx.shape[3]
    kk = kh * kw
    pix = oh * ow
    for t in prange(n_img * n_in):
        n = t // n_in
        c = t % n_in
        plane = dxp[n, c]
        plane[:, :] = np.float32(0.0)
        for p in range(kh):
            for q in range(kw):
                src = dcols[(c * kk) + p * kw + q]
                for i in range(oh):
                    dst = plane[i * sh + p]
                    base = n * pix + i * ow
                    if sw == 1:
                        for j in range(ow):
                            dst[j + q] += src[base + j]
                    else:
                        for j in range(ow):
                            dst[j * sw + q] += src[base + j]
        for r in range(h):
            for s in range(wd):
                dx[n, c, r, s] = plane[top + r, left + s]
