"""Element-wise activation kernels on flat float32 arrays (the caller passes ``a.reshape(-1)``).

One ``prange`` over the elements; each iteration writes only its own output element. NaN
propagates as in the numpy reference: ReLU keeps a NaN input (np.maximum), and its gradient is
dy * (x > 0), so a NaN dy stays NaN even where the unit is off.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import kernel


@kernel
def relu_forward(x, y):
    """y = max(x, 0), NaN where x is NaN."""
    for k in prange(x.size):
        v = x[k]
        y[k] = np.float32(0.0) if v <= np.float32(0.0) else v


@kernel
def relu_backward(x, dy, dx):
    """dx = dy * (x > 0): dy where x > 0, else 0 * dy (0, or NaN for a NaN dy)."""
    for k in prange(x.size):
        dx[k] = dy[k] if x[k] > np.float32(0.0) else dy[k] * np.float32(0.0)


@kernel
def leaky_relu_forward(x, alpha, y):
    """y = x where x > 0, else alpha * x (alpha is float32)."""
    for k in prange(x.size):
        v = x[k]
        y[k] = v if v > np.float32(0.0) else v * alpha


@kernel
def leaky_relu_backward(x, dy, alpha, dx):
    """dx = dy where x > 0, else alpha * dy."""
    for k in prange(x.size):
        dx[k] = dy[k] if x[k] > np.float32(0.0) else dy[k] * alpha


@kernel
def sigmoid_forward(x, y):
    """y = 1 / (1 + exp(-x))."""
    for k in prange(x.size):
        y[k] = np.float32(1.0) / (np.float32(1.0) + np.exp(-x[k]))


@kernel
def sigmoid_backward(y, dy, dx):
    """dx = dy * y * (1 - y), since sigmoid' = sigmoid (1 - sigmoid)."""
    for k in prange(y.size):
        dx[k] = dy[k] * y[k] * (np.float32(1.0) - y[k])


@kernel
def tanh_forward(x, y):
    """y = tanh(x)."""
    for k in prange(x.size):
        y[k] = np.tanh(x[k])


@kernel
def tanh_backward(y, dy, dx):
    """dx = dy * (1 - y^2), since tanh' = 1 - tanh^2."""
    for k in prange(y.size):
        dx[k] = dy[k] * (np.float32(1.0) - y[k] * y[k])
