"""Optimizer steps, element-wise and in place on flat float32 arrays.

Each ``prange`` iteration reads and writes only its own element of param and of the state
buffers. Hyper-parameters arrive as float32 scalars so every product stays in float32. Weight
decay is added only when it is not zero, as in the reference: 0 * a NaN parameter would
otherwise put NaN into the gradient and the state buffers.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import kernel


@kernel
def sgd_plain(param, grad, lr, weight_decay):
    """param -= lr * (grad + weight_decay * param)."""
    for k in prange(param.size):
        g = grad[k]
        if weight_decay != 0:
            g += weight_decay * param[k]
        param[k] -= lr * g


@kernel
def sgd_momentum(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """g = grad + wd*param; v = momentum*v + g; param -= lr * (g + momentum*v if nesterov
    else v)."""
    for k in prange(param.size):
        g = grad[k]
        if weight_decay != 0:
            g += weight_decay * param[k]
        v = momentum * velocity[k] + g
        velocity[k] = v
        if nesterov:
            param[k] -= lr * (g + momentum * v)
        else:
            param[k] -= lr * v


@kernel
def adam(param, grad, m, v, lr, beta1, beta2, eps, corr1, corr2, weight_decay, decoupled):
    """Adam (or AdamW when ``decoupled``); corr1 = 1 - beta1**step, corr2 = 1 - beta2**step."""
    one = np.float32(1.0)
    for k in prange(param.size):
        p = param[k]
        g = grad[k]
        if decoupled:
            p = p * (one - lr * weight_decay)
        elif weight_decay != 0:
            g = g + weight_decay * p
        mk = beta1 * m[k] + (one - beta1) * g
        vk = beta2 * v[k] + (one - beta2) * g * g
        m[k] = mk
        v[k] = vk
        param[k] = p - lr * (mk / corr1) / (np.sqrt(vk / corr2) + eps)


@kernel
def rmsprop(param, grad, square_avg, buf, lr, alpha, eps, momentum, weight_decay, use_momentum):
    """s = alpha*s + (1-alpha)*g^2; u = g / (sqrt(s) + eps); param -= lr * (buf or u)."""
    one = np.float32(1.0)
    for k in prange(param.size):
        g = grad[k]
        if weight_decay != 0:
            g += weight_decay * param[k]
        s = alpha * square_avg[k] + (one - alpha) * g * g
        square_avg[k] = s
        u = g / (np.sqrt(s) + eps)
        if use_momentum:
            b = momentum * buf[k] + u
            buf[k] = b
            u = b
        param[k] -= lr * u


@kernel
def adagrad(param, grad, state_sum, clr, eps, weight_decay):
    """g = grad + wd*param; sum += g^2; param -= clr * g / (sqrt(sum) + eps), where clr is the
    decayed learning rate lr / (1 + (step-1)*lr_decay)."""
    for k in prange(param.size):
        g = grad[k] + weight_decay * param[k]
        s = state_sum[k] + g * g
        state_sum[k] = s
        param[k] -= clr * g / (np.sqrt(s) + eps)


@kernel
def adadelta(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
    """s = rho*s + (1-rho)*g^2; d = sqrt(acc + eps) / sqrt(s + eps) * g;
    acc = rho*acc + (1-rho)*d^2; param -= lr*d (g = grad + wd*param)."""
    one = np.float32(1.0)
    for k in prange(param.size):
        g = grad[k] + weight_decay * param[k]
        s = rho * square_avg[k] + (one - rho) * g * g
        square_avg[k] = s
        d = np.sqrt(acc_delta[k] + eps) / np.sqrt(s + eps) * g
        acc_delta[k] = rho * acc_delta[k] + (one - rho) * d * d
        param[k] -= lr * d


#: elements summed by one task of ``sum_of_squares`` (a fixed split: the total does not depend
#: on the number of threads)
SQUARES_CHUNK = 1 << 14


@kernel
def sum_of_squares(x, out, slot):
    """out[slot] = sum of x[k]^2 over the flat array x, in float64: one prange task per chunk of
    SQUARES_CHUNK elements, then the chunks' sums in order."""
    n_chunks = (x.size + SQUARES_CHUNK - 1) // SQUARES_CHUNK
    parts = np.zeros(n_chunks, np.float64)
    for c in prange(n_chunks):
        s = 0.0
        for k in range(c * SQUARES_CHUNK, min(x.size, (c + 1) * SQUARES_CHUNK)):
            v = np.float64(x[k])
            s += v * v
        parts[c] = s
    total = 0.0
    for c in range(n_chunks):
        total += parts[c]
    out[slot] = total


@kernel
def scale(x, factor):
    """x *= factor, in place."""
    for k in prange(x.size):
        x[k] *= factor
