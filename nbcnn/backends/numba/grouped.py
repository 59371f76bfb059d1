"""Grouped, dilated and depthwise convolution kernels (NCHW, float32).

The plain convolution (groups 1, dilation 1) runs the kernels of ``blocked.py`` and ``conv.py``;
a layer with ``groups`` > 1 or a dilation runs these. Notation as in ``conv.py``, plus G groups,
Cg = C // G input channels and Og = O // G filters per group, filter o in group g = o // Og, and
dilation (dh, dw):

    y[n, o, i, j] = b[o] + sum_{c < Cg, p, q} w[o, c, p, q] * xp[n, g*Cg + c, i*sh + p*dh, j*sw + q*dw]

* grouped (``grouped_forward``, ``grouped_backward_weights``): one register-blocked product
  (``blocked.abt``) per group, as in ``blocked.py``; a window row no longer is one contiguous run
  (a group holds only Cg of the C channels, and dilated taps are apart), so the patches are built
  from runs of Cg channels-last values, one per tap. dx for stride 1 is the grouped forward
  convolution of dy (padded by (k-1)*d - pad) with the flipped filters of each group
  (``grouped_input_grad_filters``); otherwise ``backward_input`` scatters.
* depthwise (G == C, filters a multiple m of C; filter o reads channel o // m): almost no reuse,
  so no product: ``depthwise_forward`` and ``depthwise_backward_weights`` slide each filter over
  its channel's plane, vectorised over a row's output pixels. dx is ``backward_input``, whose
  inner loop for Cg = 1 is exactly that sliding window run backwards.

Parallel scheme (no two ``prange`` iterations write the same element): forward one iteration per
output row (n, i) (grouped) or plane (n, o) (depthwise); weights one per image n (grouped) or
plane (n, o) (depthwise) into its own partial sums, added over the images by the host in a fixed
order; dx one per input plane (n, c).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import kernel
from .blocked import _pad_columns, abt


@kernel
def grouped_forward(xpn, w2g, b, kh, kw, sh, sw, dh, dw, y):
    """y[n, g*Og + o, i, j] = b[g*Og + o] + dot(w2g[g, o], patch of output pixel (i, j) in group
    g), with each group's input channels-last and padded, xpn[n*G + g, r, s, c] = xp[n, g*Cg + c,
    r, s] (N*G, Hp, Wp, Cg), and w2g[g, o, (p*kw + q)*Cg + c] = w[g*Og + o, c, p, q]
    (zero-padded to whole SIMD vectors). The patch row of pixel j is patches[j, (p*kw + q)*Cg
    + c] = xpn[n*G + g, i*sh + p*dh, j*sw + q*dw, c]: without dilation a window row p is one
    contiguous run of kw*Cg values, with it kw runs of Cg. One prange iteration per output row
    (n, i)."""
    n_img, n_out, oh, ow = y.shape
    n_groups, og, k_pad = w2g.shape
    wp, cg = xpn.shape[2], xpn.shape[3]
    k_len = kh * kw * cg
    for t in prange(n_img * oh):
        n = t // oh
        i = t % oh
        patches = np.empty((ow, k_pad), np.float32)
        for j in range(ow):
            for u in range(k_len, k_pad):
                patches[j, u] = np.float32(0.0)
        out = np.empty((og, ow), np.float32)
        for g in range(n_groups):
            for p in range(kh):
                src = xpn[n * n_groups + g, i * sh + p * dh].reshape(wp * cg)
                for j in range(ow):
                    start = j * sw * cg
                    # slice copies, not element loops: Numba then emits plain vectorised copies
                    if dw == 1:
                        run = kw * cg
                        patches[j, p * run:(p + 1) * run] = src[start:start + run]
                    else:
                        for q in range(kw):
                            col = (p * kw + q) * cg
                            at = start + q * dw * cg
                            patches[j, col:col + cg] = src[at:at + cg]
            abt(w2g[g], patches, out, False)
            for o in range(og):
                bias = b[g * og + o]
                row = y[n, g * og + o, i]
                for j in range(ow):
                    row[j] = out[o, j] + bias


@kernel
def grouped_backward_weights(xp, dy, kh, kw, sh, sw, dh, dw, n_groups, partial):
    """partial[n, g*Og + o, (c*kh + p)*kw + q] = sum_{i,j} dy[n, g*Og + o, i, j] *
    xp[n, g*Cg + c, i*sh + p*dh, j*sw + q*dw]; dw is the sum of the partials over the images.
    One prange iteration per image n lays out, per group, cols[(c*kh + p)*kw + q, i*OW + j] =
    xp[n, g*Cg + c, i*sh + p*dh, j*sw + q*dw] and multiplies: abt(dy[n, group g] as
    (Og, OH*OW), cols)."""
    n_img, n_out, oh, ow = dy.shape
    cg = xp.shape[1] // n_groups
    og = n_out // n_groups
    kk = kh * kw
    pix = oh * ow
    for n in prange(n_img):
        cols = np.empty((cg * kk, pix), np.float32)
        dyn = dy[n].reshape(n_out, pix)
        for g in range(n_groups):
            for c in range(cg):
                for p in range(kh):
                    for q in range(kw):
                        dst = cols[c * kk + p * kw + q]
                        for i in range(oh):
                            src = xp[n, g * cg + c, i * sh + p * dh]
                            # slice copies (vectorised); strided when sw > 1
                            dst[i * ow:(i + 1) * ow] = src[q * dw:q * dw + (ow - 1) * sw + 1:sw]
            abt(dyn[g * og:(g + 1) * og], cols, partial[n, g * og:(g + 1) * og], False)


@kernel
def backward_input(dy, w, sh, sw, dh, dw, top, left, dxp, dx):
    """dx = the adjoint of the grouped forward: every dy[n, o, i, j] * w[o, c - g*Cg] is added
    back onto the dilated window of xp it came from, for the Og filters o of channel c's group g
    (for a depthwise layer: the m filters of channel c). One prange iteration per (n, c) owns the
    planes dxp[n, c] (a scratch plane, padded) and dx[n, c] (its unpadded interior)."""
    n_img, n_out, oh, ow = dy.shape
    cg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    n_in, h, wd = dx.shape[1], dx.shape[2], dx.shape[3]
    og = n_out // (n_in // cg)
    for t in prange(n_img * n_in):
        n = t // n_in
        c = t % n_in
        g = c // cg
        cl = c - g * cg
        plane = dxp[n, c]
        plane[:, :] = np.float32(0.0)
        for o in range(g * og, (g + 1) * og):
            for i in range(oh):
                drow = dy[n, o, i]
                for p in range(kh):
                    xrow = plane[i * sh + p * dh]
                    for q in range(kw):
                        wv = w[o, cl, p, q]
                        # a view starting at the tap: the loop then indexes it with j alone
                        # (a computed index j + q*dw keeps a negative-index check that stops
                        # LLVM vectorising)
                        dst = xrow[q * dw:]
                        if sw == 1:                             # contiguous: vectorised
                            for j in range(ow):
                                dst[j] += wv * drow[j]
                        else:
                            for j in range(ow):
                                dst[j * sw] += wv * drow[j]
        for r in range(h):
            for s in range(wd):
                dx[n, c, r, s] = plane[top + r, left + s]


@kernel
def depthwise_forward(xp, w, b, sh, sw, dh, dw, y):
    """y[n, o, i, j] = b[o] + sum_{p,q} w[o, 0, p, q] * xp[n, o // m, i*sh + p*dh, j*sw + q*dw]
    with m = O // C filters per channel: each filter slides over its one channel's plane, the
    output row's pixels j innermost (vectorised). One prange iteration per plane (n, o)."""
    n_img, n_out, oh, ow = y.shape
    kh, kw = w.shape[2], w.shape[3]
    mult = n_out // xp.shape[1]
    for t in prange(n_img * n_out):
        n = t // n_out
        o = t % n_out
        c = o // mult
        bias = b[o]
        for i in range(oh):
            row = y[n, o, i]
            for j in range(ow):
                row[j] = bias
            for p in range(kh):
                xrow = xp[n, c, i * sh + p * dh]
                for q in range(kw):
                    wv = w[o, 0, p, q]
                    src = xrow[q * dw:]             # indexed with j alone (see backward_input)
                    if sw == 1:                                 # contiguous: vectorised
                        for j in range(ow):
                            row[j] += wv * src[j]
                    else:
                        for j in range(ow):
                            row[j] += wv * src[j * sw]


@kernel
def depthwise_backward_weights(xp, dy, kh, kw, sh, sw, dh, dw, partial):
    """partial[n, o, p*kw + q] = sum_{i,j} dy[n, o, i, j] * xp[n, o // m, i*sh + p*dh,
    j*sw + q*dw]; dw is the sum of the partials over the images. One prange iteration per
    plane (n, o)."""
    n_img, n_out, oh, ow = dy.shape
    mult = n_out // xp.shape[1]
    for t in prange(n_img * n_out):
        n = t // n_out
        o = t % n_out
        c = o // mult
        for p in range(kh):
            for q in range(kw):
                acc = np.float32(0.0)
                for i in range(oh):
                    drow = dy[n, o, i]
                    src = xp[n, c, i * sh + p * dh, q * dw:]    # indexed with j alone
                    if sw == 1:                                 # contiguous: vectorised
                        for j in range(ow):
                            acc += drow[j] * src[j]
                    else:
                        for j in range(ow):
                            acc += drow[j] * src[j * sw]
                partial[n, o, p * kw + q] = acc


def grouped_filters(w, groups):
    """w (O, Cg, KH, KW) as ``grouped_forward`` wants it: (G, Og, KH*KW*Cg), channels last,
    each row zero-padded to whole SIMD vectors."""
    o, cg, kh, kw = w.shape
    og = o // groups
    w2 = w.transpose(0, 2, 3, 1).reshape(o, kh * kw * cg)
    return _pad_columns(w2).reshape(groups, og, -1)


def grouped_input_grad_filters(w, groups):
    """The filters of the stride-1 dx = grouped conv(dy padded by (k-1)*d - pad, ...): per group
    flipped in space with in/out swapped, wf[g, c, kh-1-p, kw-1-q, o] = w[g*Og + o, c, p, q],
    flattened to (G, Cg, KH*KW*Og) and padded as ``grouped_filters``."""
    o, cg, kh, kw = w.shape
    og = o // groups
    wf = w.reshape(groups, og, cg, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 3, 4, 1)
    return _pad_columns(wf.reshape(groups * cg, kh * kw * og)).reshape(groups, cg, -1)
