"""Register-blocked convolution: every output is a dot product, computed in 4 x 3 tiles.

The core is ``abt``: C[a, b] (+)= sum_t A[a, t] * B[b, t], i.e. C = A @ B.T with both operands
read along their contiguous rows. It walks C in 4 x 3 tiles, so each pass over t loads 7 values
and does 12 multiply-adds into 12 independent accumulators; with ``fastmath`` LLVM vectorises the
t loop (8 float32 lanes), keeping the 12 accumulator vectors in registers (AVX2 has 16). Twelve
independent chains also cover the FMA latency, which 4 x 2 tiles (8 chains) did not: 10-30% faster
here.

* forward (of strided convolutions; stride 1 runs in ``plane.py``):
            the padded input is first moved to channels-last order (``to_padded_nhwc``), so
            that for one output row (n, i) the "patches" matrix, each output pixel's window as a
            contiguous row, patches[j, (p*KW + q)*C + c] = xpn[n, i*sh + p, j*sw + q, c], is
            built from contiguous runs of KW*C values; then y[n, :, i, :] = abt(w2, patches) + b
            with w2 the filters in the same (p, q, c) order. One prange iteration per (n, i).
* dw:       per image, cols[(c*KH + p)*KW + q, i*OW + j] = xp[n, c, i*sh + p, j*sw + q] and
            partial[n] = abt(dy[n] as (O, OH*OW), cols); one prange iteration per image. dw = the
            partials summed over images by numpy, in a fixed order, so the result does not
            depend on the thread count. For stride 1 no cols are built: every window is a
            contiguous slice of the flattened padded planes of several images laid end to end
            (``conv_backward_weights_stride1``), 1.6x faster on 28 x 28 planes here; a chunk of
            images per prange iteration, summed the same way.
* dx:       runs in ``plane.py`` (the forward convolution of dy with the flipped filters).
* dense:    ``matmul_abt`` runs abt in parallel over 16 x 64 tiles of the result (the forward
            pass; the backward products are ``dense.matmul_ab``).

Dot products are padded with zeros to whole 8-float vectors; a very short one wastes most of
its tile on the padding and the final horizontal sums, so the forward pass of a layer with
C*KH*KW < 24 (a grey-image first layer: 9 values padded to 16) uses the direct kernel in
``conv.py`` instead. With 27 values (3x3 on RGB, padded to 32) the blocked kernel is 1.4x faster
than the direct one here.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import helper, inlined_helper, kernel


@helper
def abt(a, b, c, accumulate):
    """c[r, s] (+)= dot(a[r], b[s]) for 2-D C-contiguous a (R, T), b (S, T), c (R, S)."""
    abt_block(a, b, c, 0, a.shape[0], 0, b.shape[0], accumulate)


@helper
def abt_block(a, b, c, r_begin, n_r, s_begin, n_s, accumulate):
    """The tile r_begin <= r < n_r, s_begin <= s < n_s of ``abt``."""
    n_t = a.shape[1]
    r_end = r_begin + (n_r - r_begin) // 4 * 4      # the part whole 4 x 3 tiles cover
    s_end = s_begin + (n_s - s_begin) // 3 * 3
    for r in range(r_begin, r_end, 4):
        a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
        for s in range(s_begin, s_end, 3):
            tile4x3(a0, a1, a2, a3, b[s], b[s + 1], b[s + 2], n_t, c, r, s, accumulate)
        for s in range(s_end, n_s):                 # the last one or two columns
            tile4x1(a0, a1, a2, a3, b[s], n_t, c, r, s, accumulate)
    for r in range(r_end, n_r):                     # the last rows, one dot product at a time
        for s in range(s_begin, n_s):
            acc = dot(a[r], b[s], n_t)
            c[r, s] = acc + c[r, s] if accumulate else acc


@inlined_helper
def tile4x3(a0, a1, a2, a3, b0, b1, b2, n_t, c, r, s, accumulate):
    """The micro-kernel: c[r + i, s + k] (+)= dot(a_i, b_k) over the first n_t values, for
    i < 4, k < 3. 7 loads per 12 multiply-adds into 12 independent accumulators; LLVM
    vectorises the t loop (8 lanes). (Inlined by Numba itself, and it stores its results
    itself: called as a separate function, or returning its sums as a tuple, it ran 1.5x
    slower.)"""
    c00 = c01 = c02 = c10 = c11 = c12 = np.float32(0.0)
    c20 = c21 = c22 = c30 = c31 = c32 = np.float32(0.0)
    for t in range(n_t):
        u = b0[t]
        v = b1[t]
        z = b2[t]
        x0 = a0[t]
        x1 = a1[t]
        x2 = a2[t]
        x3 = a3[t]
        c00 += x0 * u
        c01 += x0 * v
        c02 += x0 * z
        c10 += x1 * u
        c11 += x1 * v
        c12 += x1 * z
        c20 += x2 * u
        c21 += x2 * v
        c22 += x2 * z
        c30 += x3 * u
        c31 += x3 * v
        c32 += x3 * z
    if accumulate:
        c00 += c[r, s]
        c01 += c[r, s + 1]
        c02 += c[r, s + 2]
        c10 += c[r + 1, s]
        c11 += c[r + 1, s + 1]
        c12 += c[r + 1, s + 2]
        c20 += c[r + 2, s]
        c21 += c[r + 2, s + 1]
        c22 += c[r + 2, s + 2]
        c30 += c[r + 3, s]
        c31 += c[r + 3, s + 1]
        c32 += c[r + 3, s + 2]
    c[r, s] = c00
    c[r, s + 1] = c01
    c[r, s + 2] = c02
    c[r + 1, s] = c10
    c[r + 1, s + 1] = c11
    c[r + 1, s + 2] = c12
    c[r + 2, s] = c20
    c[r + 2, s + 1] = c21
    c[r + 2, s + 2] = c22
    c[r + 3, s] = c30
    c[r + 3, s + 1] = c31
    c[r + 3, s + 2] = c32


@inlined_helper
def tile4x1(a0, a1, a2, a3, b0, n_t, c, r, s, accumulate):
    """c[r + i, s] (+)= dot(a_i, b0) for i < 4: a tile's edge column, 4 accumulators."""
    c0 = c1 = c2 = c3 = np.float32(0.0)
    for t in range(n_t):
        u = b0[t]
        c0 += a0[t] * u
        c1 += a1[t] * u
        c2 += a2[t] * u
        c3 += a3[t] * u
    if accumulate:
        c0 += c[r, s]
        c1 += c[r + 1, s]
        c2 += c[r + 2, s]
        c3 += c[r + 3, s]
    c[r, s] = c0
    c[r + 1, s] = c1
    c[r + 2, s] = c2
    c[r + 3, s] = c3


@helper
def dot(a, b, n_t):
    acc = np.float32(0.0)
    for t in range(n_t):
        acc += a[t] * b[t]
    return acc


@kernel
def matmul_abt(a, b, c):
    """c = a @ b.T (a: R x T, b: S x T, c: R x S, all C-contiguous float32), in parallel over
    tiles of 16 rows x 64 columns of c; each prange iteration writes only its own tile."""
    n_r, n_s = c.shape
    tiles_r = (n_r + 15) // 16
    tiles_s = (n_s + 63) // 64
    for t in prange(tiles_r * tiles_s):
        r0 = (t // tiles_s) * 16
        s0 = (t % tiles_s) * 64
        abt_block(a, b, c, r0, min(n_r, r0 + 16), s0, min(n_s, s0 + 64), False)


@kernel
def to_padded_nhwc(x, top, left, xpn):
    """xpn[n, top + r, left + s, c] = x[n, c, r, s]: the input moved to channels-last order inside
    a zero border (the border of the reused buffer ``xpn`` is zero and never written). One
    prange iteration per (n, r) input row."""
    n_img, n_in, h, w = x.shape
    for t in prange(n_img * h):
        n = t // h
        r = t % h
        dst = xpn[n, top + r, left:left + w]    # a view: its indices below start at 0
        for s in range(w):
            for c in range(n_in):
                dst[s, c] = x[n, c, r, s]


@kernel
def conv_forward(xpn, w2, b, kh, kw, sh, sw, y):
    """y[n, o, i, j] = b[o] + dot(w2[o], window of output pixel (i, j)), with the input
    channels-last and padded (xpn: N, Hp, Wp, C) and w2 = w.transpose(0, 2, 3, 1) flattened to
    (O, KH*KW*C). Then a window row p is one contiguous run of KW*C values. One prange
    iteration per output row (n, i) builds that row's patches and writes y[n, :, i, :]."""
    n_img, n_out, oh, ow = y.shape
    wp, n_in = xpn.shape[2], xpn.shape[3]
    run = kw * n_in
    k_len = kh * run
    k_pad = w2.shape[1]                     # k_len rounded up to whole SIMD vectors
    for t in prange(n_img * oh):
        n = t // oh
        i = t % oh
        patches = np.empty((ow, k_pad), np.float32)
        for j in range(ow):
            for u in range(k_len, k_pad):
                patches[j, u] = np.float32(0.0)
        for p in range(kh):
            src = xpn[n, i * sh + p].reshape(wp * n_in)
            for j in range(ow):
                start = j * sw * n_in
                # a slice copy, not an element loop: Numba then emits a plain vectorised copy
                # (computed indices such as p*run + u keep negative-index checks that block it)
                patches[j, p * run:(p + 1) * run] = src[start:start + run]
        out = np.empty((n_out, ow), np.float32)
        abt(w2, patches, out, False)
        for o in range(n_out):
            bias = b[o]
            row = y[n, o, i]
            for j in range(ow):
                row[j] = out[o, j] + bias


@kernel
def conv_backward_weights(xp, dy, kh, kw, sh, sw, partial):
    """partial[n, o, (c*kh + p)*kw + q] = sum_{i,j} dy[n, o, i, j] * xp[n, c, i*sh + p, j*sw + q],
    one prange iteration per image n; dw is the sum of the partials over the images.

    The iteration lays out cols[(c*kh + p)*kw + q, i*OW + j] = xp[n, c, i*sh + p, j*sw + q]
    and computes partial[n] = abt(dy[n] as (O, OH*OW), cols). The host sums the partials in image
    order (numpy), so the result does not depend on the thread count."""
    n_img, n_out, oh, ow = dy.shape
    n_in = xp.shape[1]
    kk = kh * kw
    k_len = n_in * kk
    pix = oh * ow
    for n in prange(n_img):
        cols = np.empty((k_len, pix), np.float32)
        for c in range(n_in):
            for p in range(kh):
                for q in range(kw):
                    dst = cols[c * kk + p * kw + q]
                    for i in range(oh):
                        src = xp[n, c, i * sh + p]
                        # slice copies (vectorised); strided when sw > 1
                        dst[i * ow:(i + 1) * ow] = src[q:q + (ow - 1) * sw + 1:sw]
        abt(dy[n].reshape(n_out, pix), cols, partial[n], False)


@helper
def window_start(k, kw, wp):
    """Flat offset p*Wp + q of kernel tap k = p*kw + q in a padded plane of row length Wp."""
    return (k // kw) * wp + k % kw


def _pad_columns(w2):
    """Zero columns appended so each row is a whole number of 8-float SIMD vectors: the dot
    products then need no scalar remainder loop (this matters for a first layer's K = 9 or 27)."""
    k = w2.shape[1]
    k_pad = -(-k // 8) * 8
    if k_pad == k:
        return np.ascontiguousarray(w2)
    out = np.zeros((w2.shape[0], k_pad), np.float32)
    out[:, :k] = w2
    return out


def forward_filters(w):
    """w (O, C, KH, KW) as the forward kernel wants it: (O, KH*KW*C), channels last."""
    return _pad_columns(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))


@kernel
def conv_backward_weights_stride1(x, top, left, hp, wp, dy, kh, kw, per, partial):
    """The stride-1 case of ``conv_backward_weights`` without im2col, ``per`` images per prange
    iteration g: partial[g, o, (c*kh + p)*kw + q] = sum over the chunk's images n and output
    pixels (i, j) of dy[n, o, i, j] * xp[n, c, i + p, j + q], where xp is x inside a zero border
    (``top`` rows above, ``left`` columns before, padded planes of hp x wp).

    The chunk's padded planes of channel c are laid end to end (the border is made here, as the
    planes are copied: no padded copy of x is needed) in a row (``planes[c]``, image m
    from m*Hp*Wp, zeros after the last), and dy on the same grid, dyw[o, m*Hp*Wp + i*Wp + j] =
    dy[n0 + m, o, i, j] with zeros everywhere else. The window value xp[n, c, i + p, j + q] then
    sits at (p*Wp + q) + (m*Hp*Wp + i*Wp + j), so

        partial[g, o, (c*kh + p)*kw + q] = dot(dyw[o], planes[c, p*Wp + q:])

    over a whole number of 16-float vectors covering every dy value: a dot product with a
    contiguous slice of a plane, nothing copied per tap, no scalar remainder loop, and long
    enough (several small images) that the horizontal sums at its end cost little. Values a
    zero of dyw meets are multiplied by zero. One prange iteration per chunk."""
    n_img, n_out, oh, ow = dy.shape
    n_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    plane_len = hp * wp
    kk = kh * kw
    n_chunks = (n_img + per - 1) // per
    o_end = n_out // 4 * 4                      # the part whole 4 x 3 tiles cover
    k_end = kk // 3 * 3
    for g in prange(n_chunks):
        n0 = g * per
        n1 = min(n_img, n0 + per)
        length = (n1 - n0 - 1) * plane_len + (oh - 1) * wp + ow
        lpad = (length + 15) // 16 * 16
        dyw = np.zeros((n_out, lpad), np.float32)
        for o in range(n_out):
            for m in range(n1 - n0):
                for i in range(oh):
                    start = m * plane_len + i * wp
                    dyw[o, start:start + ow] = dy[n0 + m, o, i]
        # the last window reads up to (kh - 1)*Wp + kw - 1 values past lpad's start
        planes = np.zeros((n_in, lpad + (kh - 1) * wp + kw), np.float32)
        for c in range(n_in):
            for m in range(n1 - n0):
                for r in range(h):
                    start = m * plane_len + (top + r) * wp + left
                    planes[c, start:start + w] = x[n0 + m, c, r]
        out = partial[g]
        for c in range(n_in):
            plane = planes[c]
            col = c * kk                        # this channel's first column of partial[g]
            for o in range(0, o_end, 4):
                a0, a1, a2, a3 = dyw[o], dyw[o + 1], dyw[o + 2], dyw[o + 3]
                for k in range(0, k_end, 3):
                    tile4x3(a0, a1, a2, a3, plane[window_start(k, kw, wp):],
                            plane[window_start(k + 1, kw, wp):],
                            plane[window_start(k + 2, kw, wp):], lpad, out, o, col + k, False)
                for k in range(k_end, kk):
                    tile4x1(a0, a1, a2, a3, plane[window_start(k, kw, wp):], lpad, out, o,
                            col + k, False)
            for o in range(o_end, n_out):
                for k in range(kk):
                    out[o, col + k] = dot(dyw[o], plane[window_start(k, kw, wp):], lpad)



#: the padded-plane values one chunk of ``conv_backward_weights_stride1`` aims at: several
#: small images per dot product (14 x 14 planes: 4 images, 1.4x faster than one here)
DW_CHUNK_VALUES = 1024


@kernel
def pointwise_backward_weights(x, dy, per, partial):
    """partial[g, o, c] = sum over the chunk's images n and pixels t of dy[n, o, t] * x[n, c, t]:
    the weight gradient of a 1 x 1 convolution without padding (x: N x C x P, dy: N x O x P,
    the planes flattened), each image's dy[n] @ x[n].T in ``abt``'s 4 x 3 tiles over filters x
    input channels (the stride-1 kernel above would tile 4 filters x its one tap). ``per``
    images per prange iteration g."""
    n_img = x.shape[0]
    for g in prange((n_img + per - 1) // per):
        n0 = g * per
        for n in range(n0, min(n_img, n0 + per)):
            abt(dy[n], x[n], partial[g], n > n0)


def dw_images_per_chunk(n_img, plane_len):
    """Images per prange iteration of ``conv_backward_weights_stride1`` for padded planes of
    ``plane_len`` values: about DW_CHUNK_VALUES values, but at least 8 chunks where the batch
    has 8 images (7 chunks would keep one of 2 cores waiting an eighth of the time). From the
    shapes alone, never the thread count, so the sum of the partials does not depend on it."""
    return max(1, min(n_img // 8, DW_CHUNK_VALUES // plane_len))
