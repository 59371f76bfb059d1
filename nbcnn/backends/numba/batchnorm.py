"""Batch normalisation over (N, H, W) per channel, NCHW float32.

Training: mean and biased variance of the batch per channel c, x_hat = (x - mean) * inv_std with
inv_std = 1 / sqrt(var + eps), y = gamma * x_hat + beta; the running statistics follow PyTorch
(running = (1 - momentum) * running + momentum * batch statistic, unbiased variance).

Backward (m = N*H*W values per channel):
    dbeta = sum dy,  dgamma = sum dy * x_hat,
    dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

Every kernel runs one ``prange`` iteration per channel, which owns that channel's statistics and
its slices of x_hat / y / dx. Each image's plane is one flat loop (vectorised whole, even for
8 x 8 planes), and sums go plane by plane (a float32 partial per image plane, then added), which
keeps the float32 rounding error small for large batches.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import kernel


@kernel
def bn_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                     y, x_hat, inv_std_out):
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
        inv_std_out[c] = inv_std
        g = gamma[c]
        bt = beta[c]
        for n in range(n_img):
            plane = x[n, c].reshape(hw)
            xh_plane = x_hat[n, c].reshape(hw)
            y_plane = y[n, c].reshape(hw)
            for t in range(hw):
                xh = (plane[t] - mean) * inv_std
                xh_plane[t] = xh
                y_plane[t] = g * xh + bt
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
def bn_backward(dy, x_hat, inv_std, gamma, dx, dgamma, dbeta):
    n_img, n_ch, h, w = dy.shape
    hw = h * w
    m = np.float32(n_img * hw)
    for c in prange(n_ch):
        sb = np.float32(0.0)
        sg = np.float32(0.0)
        for n in range(n_img):
            g_plane = dy[n, c].reshape(hw)
            xh_plane = x_hat[n, c].reshape(hw)
            pb = np.float32(0.0)
            pg = np.float32(0.0)
            for t in range(hw):
                g = g_plane[t]
                pb += g
                pg += g * xh_plane[t]
            sb += pb
            sg += pg
        dbeta[c] = sb
        dgamma[c] = sg
        k = gamma[c] * inv_std[c] / m
        for n in range(n_img):
            g_plane = dy[n, c].reshape(hw)
            xh_plane = x_hat[n, c].reshape(hw)
            dx_plane = dx[n, c].reshape(hw)
            for t in range(hw):
                dx_plane[t] = k * (m * g_plane[t] - sb - xh_plane[t] * sg)
