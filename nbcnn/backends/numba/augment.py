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
    (image, channel) plane per parallel iteration. Per row, the columns j whose source s = j+dx
    lies inside the image are j0 <= j < j1; the rest are zero."""
    n, c, h, w = x.shape
    for p in prange(n * c):
        k = p // c
        ch = p - k * c
        j0 = max(0, -dx[k])
        j1 = min(w, w - dx[k])
        for i in range(h):
            si = i + dy[k]
            if si < 0 or si >= h or j0 >= j1:
                y[k, ch, i, :] = np.float32(0.0)
                continue
            y[k, ch, i, :j0] = np.float32(0.0)
            y[k, ch, i, j1:] = np.float32(0.0)
            if flip[k]:
                for j in range(j0, j1):
                    y[k, ch, i, j] = x[k, ch, si, w - 1 - j - dx[k]]
            else:
                for j in range(j0, j1):
                    y[k, ch, i, j] = x[k, ch, si, j + dx[k]]
