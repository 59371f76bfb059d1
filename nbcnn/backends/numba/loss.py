"""Softmax cross-entropy, numerically stable, float32.

For each row (one image's logits z, label t) over K classes, with label smoothing eps:

    m = max_k z_k,  lse = m + log sum_k exp(z_k - m)
    q = (1 - eps) * onehot(t) + eps / K                       (the target; one-hot when eps = 0)
    loss = lse - sum_k q_k z_k = lse - (1 - eps) z_t - eps/K sum_k z_k
    dlogits = (softmax(z) - q) / N

Subtracting the row maximum keeps every exp() in [0, 1], so nothing overflows. One ``prange``
iteration per row writes that row's loss, its dlogits row and whether its arg-max (the first
maximum) is the label; the host sums the two small per-row vectors.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import strict_kernel


@strict_kernel
def softmax_xent(logits, labels, smoothing, dlogits, row_loss, row_correct):
    n, k = logits.shape
    inv_n = np.float32(1.0) / np.float32(n)
    keep = np.float32(1.0) - smoothing              # target weight of the label (beyond eps/K)
    spread = smoothing / np.float32(k)              # target weight of every class
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
        inv_s = np.float32(1.0) / s
        if smoothing == 0:
            row_loss[r] = np.log(s) - (z[t] - m)
            for c in range(k):
                dlogits[r, c] = dlogits[r, c] * inv_s * inv_n
            dlogits[r, t] -= inv_n
        else:
            total = np.float32(0.0)                 # sum_k (z_k - m)
            for c in range(k):
                total += z[c] - m
                dlogits[r, c] = (dlogits[r, c] * inv_s - spread) * inv_n
            row_loss[r] = np.log(s) - keep * (z[t] - m) - spread * total
            dlogits[r, t] -= keep * inv_n
        row_correct[r] = 1 if arg == t else 0
