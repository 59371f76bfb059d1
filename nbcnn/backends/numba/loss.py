"""Softmax cross-entropy, numerically stable, float32.

For each row (one image's logits z, label t):

    m = max_k z_k,  lse = m + log sum_k exp(z_k - m)
    loss = lse - z_t,  dlogits = (softmax(z) - onehot(t)) / N

Subtracting the row maximum keeps every exp() in [0, 1], so nothing overflows. One ``prange``
iteration per row writes that row's loss, its dlogits row and whether its arg-max (the first
maximum) is the label; the host sums the two small per-row vectors.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import strict_kernel


@strict_kernel
def softmax_xent(logits, labels, dlogits, row_loss, row_correct):
    n, k = logits.shape
    inv_n = np.float32(1.0) / np.float32(n)
    for r in prange(n):
        z = logits[r]
        m = z[0]
        arg = 0
        for c in range(1, k):
            if z[c] > m:
                m = z[c]
                arg = c
        s = np.float32(0.0)
        for c in range(k):
            e = np.exp(z[c] - m)
            dlogits[r, c] = e
            s += e
        t = labels[r]
        row_loss[r] = np.log(s) - (z[t] - m)
        inv_s = np.float32(1.0) / s
        for c in range(k):
            dlogits[r, c] = dlogits[r, c] * inv_s * inv_n
        dlogits[r, t] -= inv_n
        row_correct[r] = 1 if arg == t else 0
