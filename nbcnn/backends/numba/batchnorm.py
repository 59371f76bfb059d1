"""Batch normalisation over (N, H, W) per channel, NCHW float32.

Training: mean and biased variance of the batch per channel c, x_hat = (x - mean) * inv_std with
inv_std = 1 / sqrt(var + eps), y = gamma * x_hat + beta; the running statistics follow PyTorch
(running = (1 - momentum) * running + momentum * batch statistic, unbiased variance).

Backward (m = N*H*W values per channel):
    dbeta = sum dy,  dgamma = sum dy * x_hat,
    dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

x_hat is not stored: the backward pass recomputes it from x and the channel's mean and inv_std
(the same expression, so the same values). Batch norm is memory-bound, and writing x_hat was a
quarter of the forward pass's traffic.

Every kernel runs one ``prange`` iteration per channel, which owns that channel's statistics and
its slices of y / dx. Each image's plane is one flat loop (vectorised whole, even for
8 x 8 planes), and sums go plane by plane (a float32 partial per image plane, then added), which
keeps the float32 rounding error small for large batches.

A dense layer's outputs (N, C) have 1 x 1 planes: there a channel's values lie C apart, and a
loop per channel would read one value per cache line. The ``*_rows`` kernels take them as rows
instead: one ``prange`` iteration per block of ``ROW_BLOCK`` channels, reading each row's block
contiguously (the same sums, over the rows).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import kernel

#: channels one task of the ``*_rows`` kernels owns (64 float32: one 256-byte run of each row)
ROW_BLOCK = 64


@kernel
def bn_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                     y, mean_out, inv_std_out):
    n_img, n_ch, h, w = x.shape
    hw = h * w
    m = n_img * hw
    unbias = np.float32(m) / np.float32(max(m - 1, 1))
    one = np.float32(1.0)
    for c in prange(n_ch):
        # one pass for both moments, shifted by a value of the channel (var = E[(x - k)^2] -
        # E[x - k]^2 loses no precision to a large mean), a float32 partial per image plane
        k = x[0, c, 0, 0]
        total = np.float32(0.0)
        squares = np.float32(0.0)
        for n in range(n_img):
            plane = x[n, c].reshape(hw)
            part = np.float32(0.0)
            part2 = np.float32(0.0)
            for t in range(hw):
                d = plane[t] - k
                part += d
                part2 += d * d
            total += part
            squares += part2
        shift = total / np.float32(m)
        mean = k + shift
        var = max(squares / np.float32(m) - shift * shift, np.float32(0.0))
        inv_std = one / np.sqrt(var + eps)
        mean_out[c] = mean
        inv_std_out[c] = inv_std
        g = gamma[c]
        bt = beta[c]
        for n in range(n_img):
            plane = x[n, c].reshape(hw)
            y_plane = y[n, c].reshape(hw)
            for t in range(hw):
                y_plane[t] = g * ((plane[t] - mean) * inv_std) + bt
        running_mean[c] = (one - momentum) * running_mean[c] + momentum * mean
        running_var[c] = (one - momentum) * running_var[c] + momentum * (var * unbias)


@kernel
def bn_forward_eval(x, gamma, beta, running_mean, running_var, eps, y):
    """y = (x - running_mean) * gamma / sqrt(running_var + eps) + beta."""
    n_img, n_ch, h, w = x.shape
    for c in prange(n_ch):
        scale = gamma[c] / np.sqrt(running_var[c] + eps)
        mean = running_mean[c]
        bt = beta[c]
        for n in range(n_img):
            for r in range(h):
                for s in range(w):
                    y[n, c, r, s] = (x[n, c, r, s] - mean) * scale + bt


@kernel
def bn_backward(dy, x, mean, inv_std, gamma, dx, dgamma, dbeta):
    n_img, n_ch, h, w = dy.shape
    hw = h * w
    m = np.float32(n_img * hw)
    for c in prange(n_ch):
        mu = mean[c]
        s = inv_std[c]
        sb = np.float32(0.0)
        sg = np.float32(0.0)
        for n in range(n_img):
            g_plane = dy[n, c].reshape(hw)
            x_plane = x[n, c].reshape(hw)
            pb = np.float32(0.0)
            pg = np.float32(0.0)
            for t in range(hw):
                g = g_plane[t]
                pb += g
                pg += g * ((x_plane[t] - mu) * s)
            sb += pb
            sg += pg
        dbeta[c] = sb
        dgamma[c] = sg
        k = gamma[c] * s / m
        for n in range(n_img):
            g_plane = dy[n, c].reshape(hw)
            x_plane = x[n, c].reshape(hw)
            dx_plane = dx[n, c].reshape(hw)
            for t in range(hw):
                dx_plane[t] = k * (m * g_plane[t] - sb - ((x_plane[t] - mu) * s) * sg)


@kernel
def bn_forward_train_rows(x, gamma, beta, running_mean, running_var, momentum, eps,
                          y, mean_out, inv_std_out):
    """``bn_forward_train`` for x of shape (N, C): channels in blocks, rows read along them."""
    n_img, n_ch = x.shape
    unbias = np.float32(n_img) / np.float32(max(n_img - 1, 1))
    one = np.float32(1.0)
    for blk in prange((n_ch + ROW_BLOCK - 1) // ROW_BLOCK):
        c0 = blk * ROW_BLOCK
        width = min(n_ch, c0 + ROW_BLOCK) - c0
        k = x[0, c0:c0 + width].copy()                     # the shift, as above: the first row
        total = np.zeros(width, np.float32)
        squares = np.zeros(width, np.float32)
        for n in range(n_img):
            row = x[n, c0:c0 + width]
            for c in range(width):
                d = row[c] - k[c]
                total[c] += d
                squares[c] += d * d
        mean = np.empty(width, np.float32)
        inv_std = np.empty(width, np.float32)
        for c in range(width):
            shift = total[c] / np.float32(n_img)
            mean[c] = k[c] + shift
            var = max(squares[c] / np.float32(n_img) - shift * shift, np.float32(0.0))
            inv_std[c] = one / np.sqrt(var + eps)
            mean_out[c0 + c] = mean[c]
            inv_std_out[c0 + c] = inv_std[c]
            running_mean[c0 + c] = (one - momentum) * running_mean[c0 + c] + momentum * mean[c]
            running_var[c0 + c] = (one - momentum) * running_var[c0 + c] + \
                momentum * (var * unbias)
        g = gamma[c0:c0 + width]
        bt = beta[c0:c0 + width]
        for n in range(n_img):
            row = x[n, c0:c0 + width]
            y_row = y[n, c0:c0 + width]
            for c in range(width):
                y_row[c] = g[c] * ((row[c] - mean[c]) * inv_std[c]) + bt[c]


@kernel
def bn_forward_eval_rows(x, gamma, beta, running_mean, running_var, eps, y):
    """``bn_forward_eval`` for x of shape (N, C)."""
    n_img, n_ch = x.shape
    scale = gamma / np.sqrt(running_var + eps)
    for n in prange(n_img):
        for c in range(n_ch):
            y[n, c] = (x[n, c] - running_mean[c]) * scale[c] + beta[c]


@kernel
def bn_backward_rows(dy, x, mean, inv_std, gamma, dx, dgamma, dbeta):
    """``bn_backward`` for dy of shape (N, C)."""
    n_img, n_ch = dy.shape
    m = np.float32(n_img)
    for blk in prange((n_ch + ROW_BLOCK - 1) // ROW_BLOCK):
        c0 = blk * ROW_BLOCK
        width = min(n_ch, c0 + ROW_BLOCK) - c0
        mu = mean[c0:c0 + width]
        s = inv_std[c0:c0 + width]
        sb = np.zeros(width, np.float32)
        sg = np.zeros(width, np.float32)
        for n in range(n_img):
            g_row = dy[n, c0:c0 + width]
            x_row = x[n, c0:c0 + width]
            for c in range(width):
                sb[c] += g_row[c]
                sg[c] += g_row[c] * ((x_row[c] - mu[c]) * s[c])
        k = np.empty(width, np.float32)
        for c in range(width):
            dbeta[c0 + c] = sb[c]
            dgamma[c0 + c] = sg[c]
            k[c] = gamma[c0 + c] * s[c] / m
        for n in range(n_img):
            g_row = dy[n, c0:c0 + width]
            x_row = x[n, c0:c0 + width]
            dx_row = dx[n, c0:c0 + width]
            for c in range(width):
                dx_row[c] = k[c] * (m * g_row[c] - sb[c] - ((x_row[c] - mu[c]) * s[c]) * sg[c])
