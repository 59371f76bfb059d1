"""Inverted dropout with the counter-based mask every backend shares.

For flat element index k: u = lowbias32(k + lowbias32(seed)) / 2**32 taken to 24 bits
(see ``nbcnn.backends.base.dropout_uniform``); the element is kept when u >= p and then scaled by
1/(1-p). The hash runs in uint32 arithmetic (emulated in uint64 with a 32-bit mask, because Numba
widens small integers), so the mask equals numpy's bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import helper, strict_kernel

_M32 = np.uint64(0xFFFFFFFF)


@helper
def lowbias32(x):
    """Chris Wellons' lowbias32 integer hash of a uint32 value (held in a uint64)."""
    x = x & _M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & _M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & _M32
    x ^= x >> np.uint64(16)
    return x


@strict_kernel
def dropout_forward(x, p, scale, seed_hash, y, mask):
    """mask[k] = scale if uniform(k) >= p else 0; y = x * mask. ``p``, ``scale`` are float32."""
    inv24 = np.float32(1.0 / (1 << 24))
    for k in prange(x.size):
        h = lowbias32((np.uint64(k) + seed_hash) & _M32)
        u = np.float32(h >> np.uint64(8)) * inv24
        m = scale if u >= p else np.float32(0.0)
        mask[k] = m
        y[k] = x[k] * m


@strict_kernel
def multiply(a, b, out):
    """out = a * b, element-wise (dropout's backward: dx = dy * mask)."""
    for k in prange(a.size):
        out[k] = a[k] * b[k]
