"""Batch normalisation over (N, H, W) per channel, NCHW float32.

Training: mean and biased variance of the batch per channel c, x_hat = (x - mean) * inv_std with
inv_std = 1 / sqrt(var + eps), y = gamma * x_hat + beta; the running statistics follow PyTorch
(running = (1 - momentum) * running + momentum * batch statistic, unbiased variance).

Backward (m = N*H*W values per channel):
    dbeta = sum dy,  dgamma = sum dy * x_hat,
    dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

Every kernel runs one ``prange`` iteration per channel, which owns that channel's statistics and
its slices of x_hat / y / dx. Sums go row by row (a float32 partial per image row, then added),
which keeps the float32 rounding error small for large batches.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import kernel


@kernel
def bn_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                     y, x_hat, inv_std_out):
    n_img, n_ch, h, w = x.shape
    m = n_img * h * w
    unbias = np.float32(m) / np.float32(max(m - 1, 1))
    one = np.float32(1.0)
    for c in prange(n_ch):
        total = np.float32(0.0)
        for n in range(n_img):
            for r in range(h):
                part = np.float32(0.0)
                for s in range(w):
                    part += x[n, c, r, s]
                total += part
        mean = total / np.float32(m)
        total = np.float32(0.0)
        for n in range(n_img):
            for r in range(h):
                part = np.float32(0.0)
                for s in range(w):
                    d = x[n, c, r, s] - mean
                    part += d * d
                total += part
        var = total / np.float32(m)
        inv_std = one / np.sqrt(var + eps)
        inv_std_out[c] = inv_std
        g = gamma[c]
        bt = beta[c]
        for n in range(n_img):
            for r in range(h):
                for s in range(w):
                    xh = (x[n, c, r, s] - mean) * inv_std
                    x_hat[n, c, r, s] = xh
                    y[n, c, r, s] = g * xh + bt
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
    m = np.float32(n_img * h * w)
    for c in prange(n_ch):
        sb = np.float32(0.0)
        sg = np.float32(0.0)
        for n in range(n_img):
            for r in range(h):
                pb = np.float32(0.0)
                pg = np.float32(0.0)
                for s in range(w):
                    g = dy[n, c, r, s]
                    pb += g
                    pg += g * x_hat[n, c, r, s]
                sb += pb
                sg += pg
        dbeta[c] = sb
        dgamma[c] = sg
        k = gamma[c] * inv_std[c] / m
        for n in range(n_img):
            for r in range(h):
                for s in range(w):
                    dx[n, c, r, s] = k * (m * dy[n, c, r, s] - sb - x_hat[n, c, r, s] * sg)
