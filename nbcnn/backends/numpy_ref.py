"""The numpy reference backend: plain, commented, and the oracle for every other backend.

Clarity wins over speed here. Convolution and pooling are written with *windows*: a strided view
that, for every output pixel, shows the patch of input it looks at. With those windows a
convolution is a single ``einsum``, and its gradients are ``einsum`` too. No Python loop runs over
pixels; the only loops run over the few kernel offsets when gradients are scattered back.

It keeps the dtype it is given (float32 by default, float64 for finite-difference checks).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .base import Backend, dropout_uniform


def _pad(x, padding):
    """Zero-pad the two spatial axes of an NCHW array by (top, bottom, left, right)."""
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def _windows(xp, kernel, stride):
    """View of shape (N, C, OH, OW, kh, kw): window [n, c, i, j] is the kh x kw patch of
    ``xp[n, c]`` that output pixel (i, j) sees. No data is copied."""
    kh, kw = kernel
    sh, sw = stride
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def _scatter_windows(dwin, x_shape, kernel, stride):
    """The adjoint of ``_windows``: add every window's values back onto the input positions it
    was read from (windows overlap when stride < kernel, so positions accumulate)."""
    n, c, oh, ow, kh, kw = dwin.shape
    sh, sw = stride
    dx = np.zeros(x_shape, dtype=dwin.dtype)
    for p in range(kh):                 # loop over kernel offsets, not pixels
        for q in range(kw):
            dx[:, :, p:p + sh * oh:sh, q:q + sw * ow:sw] += dwin[:, :, :, :, p, q]
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
    def conv2d_forward(self, x, w, b, stride, padding):
        win = _windows(_pad(x, padding), w.shape[2:], stride)          # (N, C, OH, OW, kh, kw)
        # every output pixel is the dot product of its window with each filter
        y = np.einsum("ncijpq,ocpq->noij", win, w, optimize=True)
        if b is not None:
            y += b[None, :, None, None]
        return np.ascontiguousarray(y, dtype=x.dtype)

    def conv2d_backward(self, x, w, dy, stride, padding, with_bias, need_dx):
        top, bottom, left, right = padding
        xp = _pad(x, padding)
        win = _windows(xp, w.shape[2:], stride)
        # dL/dw[o,c,p,q]: each filter weight met every window position it multiplied
        dw = np.einsum("ncijpq,noij->ocpq", win, dy, optimize=True).astype(x.dtype)
        db = dy.sum(axis=(0, 2, 3)).astype(x.dtype) if with_bias else None
        dx = None
        if need_dx:
            # each window's gradient is sum over filters of dy * filter; add the windows back
            dwin = np.einsum("noij,ocpq->ncijpq", dy, w, optimize=True)
            dxp = _scatter_windows(dwin, xp.shape, w.shape[2:], stride)
            dx = np.ascontiguousarray(dxp[:, :, top:top + x.shape[2], left:left + x.shape[3]])
        return dx, dw, db

    # ---- pooling --------------------------------------------------------------------------
    def maxpool2d_forward(self, x, kernel, stride):
        win = _windows(x, kernel, stride)
        n, c, oh, ow, kh, kw = win.shape
        # position of the maximum inside each flattened window (argmax keeps the first of ties)
        arg = win.reshape(n, c, oh, ow, kh * kw).argmax(axis=-1)
        y = np.take_along_axis(win.reshape(n, c, oh, ow, kh * kw), arg[..., None], axis=-1)[..., 0]
        return np.ascontiguousarray(y), (arg, x.shape, kernel, stride)

    def maxpool2d_backward(self, dy, state):
        arg, x_shape, kernel, stride = state
        kh, kw = kernel
        # a window's gradient is dy at its winning position and zero elsewhere
        dwin = np.zeros(dy.shape + (kh * kw,), dtype=dy.dtype)
        np.put_along_axis(dwin, arg[..., None], dy[..., None], axis=-1)
        return _scatter_windows(dwin.reshape(dy.shape + (kh, kw)), x_shape, kernel, stride)

    def avgpool2d_forward(self, x, kernel, stride):
        return np.ascontiguousarray(_windows(x, kernel, stride).mean(axis=(-2, -1), dtype=x.dtype))

    def avgpool2d_backward(self, dy, x_shape, kernel, stride):
        kh, kw = kernel
        # every input in a window gets an equal 1/(kh*kw) share of that window's gradient
        share = (dy / (kh * kw)).astype(dy.dtype)
        dwin = np.broadcast_to(share[..., None, None], dy.shape + (kh, kw))
        return _scatter_windows(dwin, x_shape, kernel, stride)

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
    def softmax_cross_entropy(self, logits, labels):
        n = logits.shape[0]
        rows = np.arange(n)
        # subtract each row's max so exp never overflows; log-sum-exp gives log of the denominator
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_sum_exp = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_sum_exp
        loss = -log_probs[rows, labels].mean()
        # d(mean loss)/d logits = (softmax - one_hot) / N
        dlogits = np.exp(log_probs)
        dlogits[rows, labels] -= 1
        dlogits /= n
        correct = int((logits.argmax(axis=1) == labels).sum())
        return float(loss), dlogits.astype(logits.dtype), correct

    # ---- dropout --------------------------------------------------------------------------
    def dropout_forward(self, x, p, seed):
        u = dropout_uniform(seed, np.arange(x.size)).reshape(x.shape)
        mask = np.where(u >= p, 1 / (1 - p), 0).astype(x.dtype)
        return x * mask, mask

    def dropout_backward(self, dy, mask):
        return dy * mask

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
