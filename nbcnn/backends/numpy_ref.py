"""The numpy reference backend: plain, commented, and the oracle for every other backend.

Clarity wins over speed here. Convolution and pooling are written with *windows*: a strided view
that, for every output pixel, shows the patch of input it looks at. With those windows a
convolution is one ``einsum`` per group of channels, and its gradients are ``einsum`` too. No Python loop runs over
pixels; the only loops run over the few kernel offsets when gradients are scattered back.

It keeps the dtype it is given (float32 by default, float64 for finite-difference checks).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .base import Backend, dropout_uniform, pool_geometry


def _pad(x, padding, value=0):
    """Pad the two spatial axes of an NCHW array by (top, bottom, left, right) with ``value``."""
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _pool_pads(x_shape, kernel, stride, padding, output_size):
    """The padding that makes room for every pooling window: the declared one, grown at the
    bottom/right where the last window runs past it (ceil mode)."""
    top, bottom, left, right = padding
    (oh, ow), (kh, kw), (sh, sw) = output_size, kernel, stride
    h, w = x_shape[2], x_shape[3]
    return (top, max(bottom, (oh - 1) * sh + kh - h - top),
            left, max(right, (ow - 1) * sw + kw - w - left))


def _window_counts(size, k, stride, before, after, out, count_include_pad):
    """Along one axis: how many positions of each of the ``out`` windows an average divides by.
    Window i starts at i*stride - before (in the leading padding when negative). With padding
    counted, the window is cut only where the trailing padding ends (size + after); without,
    it is cut to the input [0, size)."""
    start = np.arange(out) * stride - before
    if count_include_pad:
        return np.minimum(start + k, size + after) - start
    return np.minimum(start + k, size) - np.maximum(start, 0)


def _windows(xp, kernel, stride):
    """View of shape (N, C, OH, OW, kh, kw): window [n, c, i, j] is the kh x kw patch of
    ``xp[n, c]`` that output pixel (i, j) sees. No data is copied."""
    kh, kw = kernel
    sh, sw = stride
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def _conv_windows(xp, kernel, stride, dilation):
    """Like ``_windows``, for a dilated kernel: tap (p, q) of window [n, c, i, j] is
    ``xp[n, c, i*sh + p*dh, j*sw + q*dw]``. The view first takes the whole span of the window,
    (kh-1)*dh + 1 rows by (kw-1)*dw + 1 columns, then keeps every dh-th row and dw-th column."""
    (kh, kw), (dh, dw) = kernel, dilation
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    return _windows(xp, span, stride)[..., ::dh, ::dw]


def _scatter_windows(dwin, x_shape, kernel, stride, dilation=(1, 1)):
    """The adjoint of ``_windows`` (and of ``_conv_windows`` with ``dilation``): add every
    window's values back onto the input positions it was read from (windows overlap when
    stride < kernel, so positions accumulate)."""
    n, c, oh, ow, kh, kw = dwin.shape
    sh, sw = stride
    dh, dw = dilation
    dx = np.zeros(x_shape, dtype=dwin.dtype)
    for p in range(kh):                 # loop over kernel offsets, not pixels
        for q in range(kw):
            # tap (p, q) sits at offset (p*dh, q*dw) inside each window
            dx[:, :, p * dh:p * dh + sh * oh:sh, q * dw:q * dw + sw * ow:sw] += dwin[:, :, :, :, p, q]
    return dx


class NumpyBackend(Backend):
    """Reference implementation of the op contract on numpy arrays."""

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self.name = "numpy" if self.dtype == np.float32 else f"numpy-{self.dtype.name}"

    # ---- arrays ---------------------------------------------------------------------------
    def from_numpy(self, a):
        return np.ascontiguousarray(a, dtype=self.dtype)

    def labels_from_numpy(self, y):
        return np.ascontiguousarray(y, dtype=np.int64)

    def to_numpy(self, a):
        return np.asarray(a)

    def zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def copy_into(self, dst, src):
        np.copyto(dst, src)

    def all_finite(self, a):
        return bool(np.isfinite(a).all())

    # ---- convolution ----------------------------------------------------------------------
    def conv2d_forward(self, x, w, b, stride, padding, dilation=(1, 1), groups=1):
        cg, og = x.shape[1] // groups, w.shape[0] // groups     # channels / filters per group
        win = _conv_windows(_pad(x, padding), w.shape[2:], stride, dilation)  # (N,C,OH,OW,kh,kw)
        y = np.empty((x.shape[0], w.shape[0]) + win.shape[2:4], dtype=x.dtype)
        for g in range(groups):
            # group g: its filters see only its own input channels. Every output pixel is the
            # dot product of its window with each filter.
            xs, ws = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
            y[:, ws] = np.einsum("ncijpq,ocpq->noij", win[:, xs], w[ws], optimize=True)
        if b is not None:
            y += b[None, :, None, None]
        return np.ascontiguousarray(y, dtype=x.dtype)

    def conv2d_backward(self, x, w, dy, stride, padding, with_bias, need_dx, dilation=(1, 1),
                        groups=1):
        top, bottom, left, right = padding
        cg, og = x.shape[1] // groups, w.shape[0] // groups
        xp = _pad(x, padding)
        win = _conv_windows(xp, w.shape[2:], stride, dilation)
        dw = np.empty(w.shape, dtype=x.dtype)
        dwin = np.empty(win.shape, dtype=x.dtype) if need_dx else None
        for g in range(groups):
            xs, ws = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
            # dL/dw[o,c,p,q]: each filter weight met every window position it multiplied
            dw[ws] = np.einsum("ncijpq,noij->ocpq", win[:, xs], dy[:, ws], optimize=True)
            if need_dx:
                # each window's gradient is the sum over the group's filters of dy * filter
                dwin[:, xs] = np.einsum("noij,ocpq->ncijpq", dy[:, ws], w[ws], optimize=True)
        db = dy.sum(axis=(0, 2, 3)).astype(x.dtype) if with_bias else None
        dx = None
        if need_dx:
            # add the windows back onto the input positions they were read from
            dxp = _scatter_windows(dwin, xp.shape, w.shape[2:], stride, dilation)
            dx = np.ascontiguousarray(dxp[:, :, top:top + x.shape[2], left:left + x.shape[3]])
        return dx, dw, db

    # ---- pooling --------------------------------------------------------------------------
    def maxpool2d_forward(self, x, kernel, stride, padding=(0, 0, 0, 0), output_size=None):
        oh, ow = pool_geometry(x.shape, kernel, stride, padding, output_size)
        pads = _pool_pads(x.shape, kernel, stride, padding, (oh, ow))
        n, c = x.shape[:2]
        kh, kw = kernel
        # pad with -inf, so a padded position never beats an input element
        win = _windows(_pad(x, pads, -np.inf), kernel, stride)[:, :, :oh, :ow]
        win = win.reshape(n, c, oh, ow, kh * kw)
        is_input = _windows(_pad(np.ones(x.shape, bool), pads, False), kernel, stride)
        is_input = is_input[:, :, :oh, :ow].reshape(n, c, oh, ow, kh * kw)
        y = win.max(axis=-1)
        # position of the first maximum inside each flattened window that is an input element
        # (argmax of a boolean: its first True). Only a window of -inf inputs ties with padding.
        arg = ((win == y[..., None]) & is_input).argmax(axis=-1)
        return np.ascontiguousarray(y), (arg, x.shape, kernel, stride, pads)

    def maxpool2d_backward(self, dy, state):
        arg, x_shape, kernel, stride, pads = state
        kh, kw = kernel
        top, bottom, left, right = pads
        n, c, h, w = x_shape
        # a window's gradient is dy at its winning position and zero elsewhere
        dwin = np.zeros(dy.shape + (kh * kw,), dtype=dy.dtype)
        np.put_along_axis(dwin, arg[..., None], dy[..., None], axis=-1)
        dxp = _scatter_windows(dwin.reshape(dy.shape + (kh, kw)),
                               (n, c, h + top + bottom, w + left + right), kernel, stride)
        return np.ascontiguousarray(dxp[:, :, top:top + h, left:left + w])

    @staticmethod
    def _avg_divisors(x_shape, kernel, stride, padding, output_size, count_include_pad):
        """(OH, OW) array: the number each window's sum is divided by (base.avgpool2d_forward)."""
        h, w = x_shape[2], x_shape[3]
        top, bottom, left, right = padding
        rows = _window_counts(h, kernel[0], stride[0], top, bottom, output_size[0],
                              count_include_pad)
        cols = _window_counts(w, kernel[1], stride[1], left, right, output_size[1],
                              count_include_pad)
        return np.outer(rows, cols)

    def avgpool2d_forward(self, x, kernel, stride, padding=(0, 0, 0, 0), output_size=None,
                          count_include_pad=True):
        oh, ow = pool_geometry(x.shape, kernel, stride, padding, output_size)
        pads = _pool_pads(x.shape, kernel, stride, padding, (oh, ow))
        # zero padding adds nothing to a sum; what it counts for is the divisor's business
        sums = _windows(_pad(x, pads), kernel, stride)[:, :, :oh, :ow].sum(axis=(-2, -1))
        div = self._avg_divisors(x.shape, kernel, stride, padding, (oh, ow), count_include_pad)
        return np.ascontiguousarray(sums / div, dtype=x.dtype)

    def avgpool2d_backward(self, dy, x_shape, kernel, stride, padding=(0, 0, 0, 0),
                           count_include_pad=True):
        n, c, h, w = x_shape
        kh, kw = kernel
        oh, ow = pool_geometry(x_shape, kernel, stride, padding, dy.shape[2:])
        top, bottom, left, right = pads = _pool_pads(x_shape, kernel, stride, padding, (oh, ow))
        div = self._avg_divisors(x_shape, kernel, stride, padding, (oh, ow), count_include_pad)
        # every position of a window gets the share 1/divisor of that window's gradient; the
        # shares that land on padding are cut off with it
        share = (dy / div).astype(dy.dtype)
        dwin = np.broadcast_to(share[..., None, None], dy.shape + (kh, kw))
        dxp = _scatter_windows(dwin, (n, c, h + top + bottom, w + left + right), kernel, stride)
        return np.ascontiguousarray(dxp[:, :, top:top + h, left:left + w])

    def global_avgpool2d_forward(self, x):
        # one window that covers the whole feature map
        return np.ascontiguousarray(x.mean(axis=(2, 3), dtype=x.dtype))

    def global_avgpool2d_backward(self, dy, x_shape):
        n, c, h, w = x_shape
        # every pixel of a map gets an equal 1/(H*W) share of that map's gradient
        share = (dy / (h * w)).astype(dy.dtype)
        return np.ascontiguousarray(np.broadcast_to(share[:, :, None, None], (n, c, h, w)))

    # ---- dense ----------------------------------------------------------------------------
    def dense_forward(self, x, w, b):
        y = x @ w.T
        if b is not None:
            y += b
        return y

    def dense_backward(self, x, w, dy, with_bias, need_dx):
        dw = dy.T @ x
        db = dy.sum(axis=0) if with_bias else None
        dx = dy @ w if need_dx else None
        return dx, dw, db

    # ---- element-wise sum ------------------------------------------------------------------
    def add(self, a, b, out=None):
        # a residual block's output (body + shortcut) and its input gradient (the sum of both
        # paths' input gradients); with out=a or out=b the sum overwrites that array in place
        if a.shape != b.shape:
            raise ValueError(f"add: shapes {a.shape} and {b.shape} differ")
        return np.add(a, b, out=out)

    # ---- activations ----------------------------------------------------------------------
    def activation_forward(self, kind, x, alpha):
        if kind == "relu":
            return np.maximum(x, 0)
        if kind == "leaky_relu":
            return np.where(x > 0, x, x * x.dtype.type(alpha))
        if kind == "sigmoid":
            return 1 / (1 + np.exp(-x))
        if kind == "tanh":
            return np.tanh(x)
        raise ValueError(f"unknown activation {kind!r}")

    def activation_backward(self, kind, x, y, dy, alpha):
        if kind == "relu":
            return dy * (x > 0)
        if kind == "leaky_relu":
            return np.where(x > 0, dy, dy * dy.dtype.type(alpha))
        if kind == "sigmoid":
            return dy * y * (1 - y)           # sigma' = sigma (1 - sigma)
        if kind == "tanh":
            return dy * (1 - y * y)           # tanh' = 1 - tanh^2
        raise ValueError(f"unknown activation {kind!r}")

    # ---- loss -----------------------------------------------------------------------------
    def softmax_cross_entropy(self, logits, labels, label_smoothing=0.0):
        n, k = logits.shape
        rows = np.arange(n)
        # subtract each row's max so exp never overflows; log-sum-exp gives log of the denominator
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_sum_exp = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_sum_exp
        # the targets: one-hot, or with label smoothing (1 - eps) on the label plus eps/K on
        # every class
        target = np.zeros_like(log_probs)
        target[rows, labels] = 1
        if label_smoothing:
            target = (1 - label_smoothing) * target + label_smoothing / k
        loss = -(target * log_probs).sum(axis=1).mean()
        # d(mean loss)/d logits = (softmax - target) / N
        dlogits = (np.exp(log_probs) - target) / n
        correct = int((logits.argmax(axis=1) == labels).sum())
        return float(loss), dlogits.astype(logits.dtype), correct

    # ---- dropout --------------------------------------------------------------------------
    def dropout_forward(self, x, p, seed):
        u = dropout_uniform(seed, np.arange(x.size)).reshape(x.shape)
        mask = np.where(u >= p, 1 / (1 - p), 0).astype(x.dtype)
        return x * mask, mask

    def dropout_backward(self, dy, mask):
        return dy * mask

    # ---- augmentation ---------------------------------------------------------------------
    def augment(self, x, dy, dx, flip):
        n, c, h, w = x.shape
        dy, dx, flip = (np.asarray(a, dtype=np.int64) for a in (dy, dx, flip))
        # output pixel (i, j) of image k reads row i + dy[k] and column s = j + dx[k] ...
        rows = np.arange(h)[None, :] + dy[:, None]                    # (N, H)
        cols = np.arange(w)[None, :] + dx[:, None]                    # (N, W)
        inside = (((rows >= 0) & (rows < h))[:, :, None]
                  & ((cols >= 0) & (cols < w))[:, None, :])           # (N, H, W)
        # ... of the mirrored image when flipped: column s of the mirror is column W-1-s
        cols = np.where(flip[:, None] != 0, w - 1 - cols, cols)
        # gather (clipped indices keep the reads in bounds; outside pixels become 0 below)
        k = np.arange(n)[:, None, None, None]
        ch = np.arange(c)[None, :, None, None]
        y = x[k, ch, rows.clip(0, h - 1)[:, None, :, None], cols.clip(0, w - 1)[:, None, None, :]]
        return np.where(inside[:, None], y, 0).astype(x.dtype)

    # ---- batch normalisation --------------------------------------------------------------
    def batchnorm2d_forward_train(self, x, gamma, beta, running_mean, running_var, momentum, eps):
        axes = (0, 2, 3)                                   # statistics per channel
        m = x.shape[0] * x.shape[2] * x.shape[3]           # values per channel
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)                             # biased: used to normalise
        inv_std = 1 / np.sqrt(var + eps)
        x_hat = (x - mean[None, :, None, None]) * inv_std[None, :, None, None]
        y = gamma[None, :, None, None] * x_hat + beta[None, :, None, None]
        # running statistics use the unbiased variance, as PyTorch does
        unbiased = var * (m / max(m - 1, 1))
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * unbiased
        return y.astype(x.dtype), (x_hat, inv_std)

    def batchnorm2d_forward_eval(self, x, gamma, beta, running_mean, running_var, eps):
        inv_std = 1 / np.sqrt(running_var + eps)
        scale = (gamma * inv_std)[None, :, None, None]
        return ((x - running_mean[None, :, None, None]) * scale
                + beta[None, :, None, None]).astype(x.dtype)

    def batchnorm2d_backward(self, dy, state, gamma):
        x_hat, inv_std = state
        axes = (0, 2, 3)
        m = dy.shape[0] * dy.shape[2] * dy.shape[3]
        dbeta = dy.sum(axis=axes)
        dgamma = (dy * x_hat).sum(axis=axes)
        # the batch mean and variance depend on every x, hence the two correction terms
        dx = (gamma * inv_std)[None, :, None, None] / m * (
            m * dy - dbeta[None, :, None, None] - x_hat * dgamma[None, :, None, None])
        return dx.astype(dy.dtype), dgamma.astype(dy.dtype), dbeta.astype(dy.dtype)

    # ---- optimizer steps ------------------------------------------------------------------
    def sgd_step(self, param, grad, velocity, lr, momentum, nesterov, weight_decay):
        g = grad + weight_decay * param if weight_decay else grad
        if velocity is None:
            param -= lr * g
            return
        velocity *= momentum
        velocity += g
        param -= lr * (g + momentum * velocity if nesterov else velocity)

    def adam_step(self, param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
        if weight_decay and decoupled:
            param *= 1 - lr * weight_decay
            g = grad
        else:
            g = grad + weight_decay * param if weight_decay else grad
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** step)                    # bias correction, counted in steps
        v_hat = v / (1 - beta2 ** step)
        param -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(param.dtype)

    def rmsprop_step(self, param, grad, square_avg, buf, lr, alpha, eps, momentum, weight_decay):
        g = grad + weight_decay * param if weight_decay else grad
        square_avg *= alpha
        square_avg += (1 - alpha) * g * g
        update = g / (np.sqrt(square_avg) + eps)
        if momentum:
            buf *= momentum
            buf += update
            update = buf
        param -= (lr * update).astype(param.dtype)

    def adagrad_step(self, param, grad, state_sum, lr, lr_decay, eps, step, weight_decay):
        g = grad + weight_decay * param if weight_decay else grad
        clr = lr / (1 + (step - 1) * lr_decay)             # the decayed learning rate
        state_sum += g * g                                 # every squared gradient so far
        param -= (clr * g / (np.sqrt(state_sum) + eps)).astype(param.dtype)

    def adadelta_step(self, param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
        g = grad + weight_decay * param if weight_decay else grad
        square_avg *= rho                                  # running mean of g^2
        square_avg += (1 - rho) * g * g
        # the step: g scaled by RMS(past steps) / RMS(gradients)
        delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
        acc_delta *= rho                                   # running mean of step^2
        acc_delta += (1 - rho) * delta * delta
        param -= (lr * delta).astype(param.dtype)

    # ---- gradient clipping ----------------------------------------------------------------
    def sum_of_squares(self, arrays):
        # summed in float64, so the total does not depend on the order of the arrays
        return float(sum(np.square(a, dtype=np.float64).sum() for a in arrays))

    def scale_(self, a, factor):
        a *= a.dtype.type(factor)
