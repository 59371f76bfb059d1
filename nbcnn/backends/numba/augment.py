"""Augmentation: every image of a batch shifted by its own (dy, dx) and optionally mirrored.

y[n,c,i,j] = x[n,c,i+dy[n], s if not flip[n] else W-1-s] with s = j+dx[n], and 0 where the row
i+dy[n] or the column s falls outside the image (see ``Backend.augment``). A pure copy, so the
result equals numpy's bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import strict_kernel


@strict_kernel
def shift_flip(x, dy, dx, flip, y):
    """y = x shifted by (dy[n], dx[n]) and mirrored where flip[n], zeros shifted in; one
    (image, channel) plane per parallel iteration."""
    n, c, h, w = x.shape
    for p in prange(n * c):
        k = p // c
        ch = p - k * c
        for i in range(h):
            si = i + dy[k]
            for j in range(w):
                s = j + dx[k]
                if 0 <= si < h and 0 <= s < w:
                    y[k, ch, i, j] = x[k, ch, si, w - 1 - s if flip[k] else s]
                else:
                    y[k, ch, i, j] = np.float32(0.0)
