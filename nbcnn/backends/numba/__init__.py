"""The Numba backend: JIT-compiled, parallel CPU kernels on numpy float32 arrays.

Kernels live in one module per op family (``conv``, ``blocked`` (the register-blocked dot-product
kernel behind convolution and dense layers), ``pool``, ``dense``, ``activations``, ``loss``,
``dropout``, ``batchnorm``, ``optim``); this class is the thin host layer that checks
and converts inputs, allocates outputs and calls them. Every kernel is ``@njit(parallel=True,
cache=True)``: it compiles on its first call (lazily, so only the ops a model uses are
compiled) and the machine code is cached on disk for the next process. Threads: Numba's pool,
sized by ``numba.set_num_threads``; ops with little work run on the calling thread alone
(``_jit.call``). No op uses BLAS unless ``conv_variant = "gemm"`` is chosen.

Arrays are float32, C-contiguous numpy arrays, NCHW. Inputs of another dtype or layout are
converted at the op boundary; every output is a fresh float32 C-contiguous array (scratch buffers
that never leave an op are reused per shape, per calling thread).
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from ..base import Backend, _lowbias32, conv_output_size
from . import activations as _act
from ._jit import call as _call
from . import batchnorm as _bn
from . import blocked as _blk
from . import conv as _conv
from . import dense as _dense
from . import dropout as _drop
from . import loss as _loss
from . import optim as _optim
from . import pool as _pool

_F32 = np.float32


def _f32(a) -> np.ndarray:
    """``a`` as a C-contiguous float32 array (no copy when it already is one)."""
    return np.ascontiguousarray(a, dtype=_F32)


def _inplace(a, name: str) -> np.ndarray:
    """Arrays updated in place must already be float32 and C-contiguous."""
    if not (isinstance(a, np.ndarray) and a.dtype == _F32 and a.flags.c_contiguous):
        raise TypeError(f"{name} must be a C-contiguous float32 numpy array to be updated in "
                        f"place, got {type(a).__name__} "
                        f"{getattr(a, 'dtype', '')}")
    return a


class _Workspaces(threading.local):
    """Scratch arrays keyed by (purpose, shape), one set per calling thread. A scratch array
    never leaves the op that uses it, so reusing it across calls is safe."""

    def __init__(self):
        self.arrays: dict = {}

    def get(self, key, shape, dtype=_F32, zero=False):
        k = (key, shape, np.dtype(dtype).str)
        a = self.arrays.get(k)
        if a is None:
            if len(self.arrays) > 64:           # many shapes seen: start over
                self.arrays.clear()
            a = (np.zeros if zero else np.empty)(shape, dtype)
            self.arrays[k] = a
        return a


class NumbaBackend(Backend):
    """Parallel CPU kernels compiled by Numba."""

    name = "numba"
    dtype = np.dtype(np.float32)
    #: convolution algorithm: "auto" (register-blocked dot products, ``blocked.py``, except the
    #: forward pass of layers whose window has < ``direct_window`` values, which runs
    #: "direct"), "direct" (plain loops, ``conv.py``) or "gemm" (im2col + BLAS, ``conv.py``)
    conv_variant = "auto"
    #: windows (C*KH*KW values) shorter than this go "direct" in the "auto" forward pass
    direct_window = 24
    #: target size of one im2col chunk, in bytes
    cols_bytes = 8 << 20

    def __init__(self):
        self._ws = _Workspaces()
        # nbcnn.threads owns the thread count ($NBCNN_NUM_THREADS is applied when we start)
        from ... import threads
        threads.apply_environment()

    # ---- arrays ---------------------------------------------------------------------------
    def from_numpy(self, a):
        return np.array(a, dtype=_F32, order="C", copy=True)

    def labels_from_numpy(self, y):
        return np.ascontiguousarray(y, dtype=np.int64)

    def to_numpy(self, a):
        return np.asarray(a)

    def zeros(self, shape):
        return np.zeros(shape, dtype=_F32)

    def copy_into(self, dst, src):
        np.copyto(dst, src)

    def all_finite(self, a):
        return bool(np.isfinite(a).all())

    def device_name(self):
        return f"cpu ({numba.get_num_threads()} threads)"

    def prepare_training(self, dry_step):
        """Compile the kernels of ``dry_step`` on every core at once (``precompile.py``)."""
        from . import precompile
        precompile.compile_step(dry_step)

    # ---- convolution ----------------------------------------------------------------------
    def _padded(self, x, padding, key="xp"):
        """x zero-padded by (top, bottom, left, right): a reused scratch array whose border is
        zero from its creation and whose interior is overwritten here (x itself if no padding)."""
        top, bottom, left, right = padding
        if not (top or bottom or left or right):
            return x
        n, c, h, w = x.shape
        # the padding is part of the key: a buffer's zero border must stay where it was made
        xp = self._ws.get((key, padding), (n, c, h + top + bottom, w + left + right), zero=True)
        xp[:, :, top:top + h, left:left + w] = x
        return xp

    @staticmethod
    def _conv_geometry(x, w, stride, padding):
        if x.ndim != 4 or w.ndim != 4:
            raise ValueError(f"conv2d expects x (N, C, H, W) and w (O, C, KH, KW), got "
                             f"{x.shape} and {w.shape}")
        if x.shape[1] != w.shape[1]:
            raise ValueError(f"conv2d: x has {x.shape[1]} channels but w expects {w.shape[1]}")
        top, bottom, left, right = padding
        oh = conv_output_size(x.shape[2], w.shape[2], stride[0], top, bottom)
        ow = conv_output_size(x.shape[3], w.shape[3], stride[1], left, right)
        if oh < 1 or ow < 1:
            raise ValueError(f"conv2d: input {x.shape[2:]} with padding {padding} is smaller "
                             f"than the kernel {w.shape[2:]}")
        return oh, ow

    def _chunks(self, n, rows, pix):
        """Split the batch so that one chunk's im2col matrix (rows x images*pix float32) stays
        near ``cols_bytes``: it is then still in cache when BLAS reads it."""
        per = max(1, min(n, self.cols_bytes // max(1, 4 * rows * pix)))
        return [(i, min(n, i + per)) for i in range(0, n, per)]

    def conv2d_forward(self, x, w, b, stride, padding):
        x, w = _f32(x), _f32(w)
        oh, ow = self._conv_geometry(x, w, stride, padding)
        b = np.zeros(w.shape[0], _F32) if b is None else _f32(b)
        y = np.empty((x.shape[0], w.shape[0], oh, ow), _F32)
        variant = self.conv_variant
        if variant == "auto" and w[0].size < self.direct_window:
            variant = "direct"        # a short window (first layers): too short to
            #                           vectorise as a dot product; vectorise over pixels instead
        if variant == "gemm":
            self._conv_forward_gemm(self._padded(x, padding), w, b, stride, y)
        elif variant == "direct":
            _call(_conv.conv_forward_direct, y.size * w[0].size // 8, self._padded(x, padding),
                  w, b, stride[0], stride[1], y)
        else:                                                    # register-blocked
            self._blocked_forward(x, _blk.forward_filters(w), b, w.shape[2], w.shape[3],
                                  stride, padding, y)
        return y

    def _blocked_forward(self, x, w2, b, kh, kw, stride, padding, y, key="xpn"):
        """``blocked.conv_forward`` on x moved into a reused, zero-bordered channels-last buffer."""
        n, c, h, wd = x.shape
        top, bottom, left, right = padding
        xpn = self._ws.get((key, padding), (n, h + top + bottom, wd + left + right, c), zero=True)
        _call(_blk.to_padded_nhwc, x.size, x, top, left, xpn)
        _call(_blk.conv_forward, y.size * w2.shape[1] // 16, xpn, w2, b, kh, kw, stride[0],
              stride[1], y)

    def _conv_forward_gemm(self, xp, w, b, stride, y):
        n, o, oh, ow = y.shape
        kh, kw = w.shape[2], w.shape[3]
        rows = w.shape[1] * kh * kw
        w2 = w.reshape(o, rows)
        pix = oh * ow
        for n0, n1 in self._chunks(n, rows, pix):
            m = (n1 - n0) * pix
            cols = self._ws.get("cols", (rows, m))
            ymat = self._ws.get("ymat", (o, m))
            _call(_conv.im2col, cols.size, xp[n0:n1], kh, kw, stride[0], stride[1], oh, ow, cols)
            np.matmul(w2, cols, out=ymat)                       # BLAS sgemm
            _call(_conv.cols_to_nchw, ymat.size, ymat, b, y[n0:n1])

    def conv2d_backward(self, x, w, dy, stride, padding, with_bias, need_dx):
        x, w, dy = _f32(x), _f32(w), _f32(dy)
        oh, ow = self._conv_geometry(x, w, stride, padding)
        if dy.shape != (x.shape[0], w.shape[0], oh, ow):
            raise ValueError(f"conv2d_backward: dy has shape {dy.shape}, expected "
                             f"{(x.shape[0], w.shape[0], oh, ow)}")
        xp = self._padded(x, padding)
        dw = np.empty(w.shape, _F32)
        db = np.empty(w.shape[0], _F32)
        dx = np.empty(x.shape, _F32) if need_dx else None
        variant = self.conv_variant
        if variant == "gemm":
            self._conv_backward_gemm(xp, w, dy, stride, padding, dw, db, dx)
            return dx, dw, (db if with_bias else None)
        if variant == "direct":
            _call(_conv.conv_backward_weights_direct, dy.size * w[0].size // 8, xp, dy,
                  stride[0], stride[1], bool(with_bias), dw, db)
        else:
            n, o = dy.shape[:2]
            partial = self._ws.get("dw_partial", (n, o, w[0].size))
            work = dy.size * w[0].size // 16
            if stride == (1, 1):
                _call(_blk.conv_backward_weights_stride1, work, xp, dy, w.shape[2], w.shape[3],
                      partial)
            else:
                _call(_blk.conv_backward_weights, work, xp, dy, w.shape[2], w.shape[3],
                      stride[0], stride[1], partial)
            np.sum(partial, axis=0, out=dw.reshape(o, -1))
            if with_bias:
                np.sum(dy, axis=(0, 2, 3), dtype=_F32, out=db)
            if np.isnan(dw).any():
                # the stride-1 kernel multiplies the zero gap columns by input values, so a NaN
                # input can reach more of dw than in the reference: redo it the direct way
                _call(_conv.conv_backward_weights_direct, dy.size * w[0].size // 8, xp, dy,
                      stride[0], stride[1], bool(with_bias), dw, db)
        if need_dx:
            kh, kw = w.shape[2:]
            top, bottom, left, right = padding
            flip_pad = (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)
            # (a NaN weight would meet the zero border of the padded dy in the flipped
            # convolution, NaN where the reference's dx is not: then the direct kernel)
            if (variant == "auto" and stride == (1, 1) and min(flip_pad) >= 0
                    and not np.isnan(w).any()):
                # dx = dy (padded by k-1-pad) convolved with the flipped, transposed filters
                self._blocked_forward(dy, _blk.input_grad_filters(w), np.zeros(w.shape[1], _F32),
                                      kh, kw, (1, 1), flip_pad, dx, key="dypn")
            else:
                dxp = self._ws.get("dxp", xp.shape)
                _call(_conv.conv_backward_input_direct, dy.size * w[0].size // 8, dy, w,
                      stride[0], stride[1], top, left, dxp, dx)
        return dx, dw, (db if with_bias else None)

    def _conv_backward_gemm(self, xp, w, dy, stride, padding, dw, db, dx):
        n, o, oh, ow = dy.shape
        kh, kw = w.shape[2], w.shape[3]
        rows = w.shape[1] * kh * kw
        w2 = w.reshape(o, rows)
        dw2 = dw.reshape(o, rows)
        pix = oh * ow
        chunks = self._chunks(n, rows, pix)
        for ci, (n0, n1) in enumerate(chunks):
            m = (n1 - n0) * pix
            cols = self._ws.get("cols", (rows, m))
            dymat = self._ws.get("ymat", (o, m))
            db_part = db if ci == 0 else self._ws.get("db_part", db.shape)
            _call(_conv.nchw_to_cols, dymat.size, dy[n0:n1], dymat, db_part)
            _call(_conv.im2col, cols.size, xp[n0:n1], kh, kw, stride[0], stride[1], oh, ow, cols)
            if ci == 0:
                np.matmul(dymat, cols.T, out=dw2)               # dw = dY @ cols.T
            else:
                dw2 += dymat @ cols.T
                db += db_part
            if dx is not None:
                dcols = self._ws.get("dcols", (rows, m))
                np.matmul(w2.T, dymat, out=dcols)               # dcols = W2.T @ dY
                dxp = self._ws.get("dxp", (n1 - n0,) + xp.shape[1:])
                _call(_conv.col2im, dcols.size, dcols, kh, kw, stride[0], stride[1], oh, ow,
                      padding[0], padding[2], dxp, dx[n0:n1])

    # ---- pooling --------------------------------------------------------------------------
    @staticmethod
    def _pool_geometry(x, kernel, stride):
        if x.ndim != 4:
            raise ValueError(f"pooling expects x (N, C, H, W), got shape {x.shape}")
        oh = conv_output_size(x.shape[2], kernel[0], stride[0], 0, 0)
        ow = conv_output_size(x.shape[3], kernel[1], stride[1], 0, 0)
        if oh < 1 or ow < 1:
            raise ValueError(f"pooling: input {x.shape[2:]} is smaller than the window {kernel}")
        return oh, ow

    def maxpool2d_forward(self, x, kernel, stride):
        x = _f32(x)
        oh, ow = self._pool_geometry(x, kernel, stride)
        y = np.empty(x.shape[:2] + (oh, ow), _F32)
        arg = np.empty(y.shape, np.int32)
        if tuple(kernel) == (2, 2) and tuple(stride) == (2, 2):
            _call(_pool.maxpool_forward_2x2, x.size // 4, x, y, arg)
        else:
            _call(_pool.maxpool_forward, x.size, x, kernel[0], kernel[1], stride[0], stride[1],
                  y, arg)
        return y, (arg, x.shape)

    def maxpool2d_backward(self, dy, state):
        arg, x_shape = state
        dx = np.empty(x_shape, _F32)
        _call(_pool.maxpool_backward, dx.size, _f32(dy), arg, dx)
        return dx

    def avgpool2d_forward(self, x, kernel, stride):
        x = _f32(x)
        oh, ow = self._pool_geometry(x, kernel, stride)
        y = np.empty(x.shape[:2] + (oh, ow), _F32)
        _call(_pool.avgpool_forward, x.size, x, kernel[0], kernel[1], stride[0], stride[1], y)
        return y

    def avgpool2d_backward(self, dy, x_shape, kernel, stride):
        dx = np.empty(tuple(x_shape), _F32)
        _call(_pool.avgpool_backward, dx.size, _f32(dy), kernel[0], kernel[1], stride[0],
              stride[1], dx)
        return dx

    # ---- dense ----------------------------------------------------------------------------
    def dense_forward(self, x, w, b):
        return _dense.forward(_f32(x), _f32(w), None if b is None else _f32(b))

    def dense_backward(self, x, w, dy, with_bias, need_dx):
        return _dense.backward(_f32(x), _f32(w), _f32(dy), with_bias, need_dx)

    # ---- activations ----------------------------------------------------------------------
    def activation_forward(self, kind, x, alpha):
        x = _f32(x)
        y = np.empty_like(x)
        xf, yf = x.reshape(-1), y.reshape(-1)
        if kind == "relu":
            _call(_act.relu_forward, x.size, xf, yf)
        elif kind == "leaky_relu":
            _call(_act.leaky_relu_forward, x.size, xf, _F32(alpha), yf)
        elif kind == "sigmoid":
            _call(_act.sigmoid_forward, x.size, xf, yf)
        elif kind == "tanh":
            _call(_act.tanh_forward, x.size, xf, yf)
        else:
            raise ValueError(f"unknown activation {kind!r}")
        return y

    def activation_backward(self, kind, x, y, dy, alpha):
        dy = _f32(dy)
        dx = np.empty_like(dy)
        dyf, dxf = dy.reshape(-1), dx.reshape(-1)
        if kind == "relu":
            _call(_act.relu_backward, dy.size, _f32(x).reshape(-1), dyf, dxf)
        elif kind == "leaky_relu":
            _call(_act.leaky_relu_backward, dy.size, _f32(x).reshape(-1), dyf, _F32(alpha), dxf)
        elif kind == "sigmoid":
            _call(_act.sigmoid_backward, dy.size, _f32(y).reshape(-1), dyf, dxf)
        elif kind == "tanh":
            _call(_act.tanh_backward, dy.size, _f32(y).reshape(-1), dyf, dxf)
        else:
            raise ValueError(f"unknown activation {kind!r}")
        return dx

    # ---- loss -----------------------------------------------------------------------------
    def softmax_cross_entropy(self, logits, labels):
        logits = _f32(logits)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if logits.ndim != 2 or labels.shape != (logits.shape[0],):
            raise ValueError(f"softmax_cross_entropy: logits {logits.shape} and labels "
                             f"{labels.shape} do not match (expected (N, K) and (N,))")
        n, k = logits.shape
        if n and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"softmax_cross_entropy: labels must lie in [0, {k}), got "
                             f"[{labels.min()}, {labels.max()}]")
        dlogits = np.empty_like(logits)
        row_loss = np.empty(n, _F32)
        row_correct = np.empty(n, np.int32)
        _call(_loss.softmax_xent, logits.size * 4, logits, labels, dlogits, row_loss, row_correct)
        return float(row_loss.sum(dtype=np.float64) / n), dlogits, int(row_correct.sum())

    # ---- dropout --------------------------------------------------------------------------
    def dropout_forward(self, x, p, seed):
        x = _f32(x)
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        seed_hash = np.uint64(_lowbias32(np.asarray([int(seed) & 0xFFFFFFFF], np.uint32))[0])
        y = np.empty_like(x)
        mask = np.empty_like(x)
        _call(_drop.dropout_forward, x.size, x.reshape(-1), _F32(p), _F32(1 / (1 - p)),
              seed_hash,
                              y.reshape(-1), mask.reshape(-1))
        return y, mask

    def dropout_backward(self, dy, mask):
        dy = _f32(dy)
        dx = np.empty_like(dy)
        _call(_drop.multiply, dy.size, dy.reshape(-1), _f32(mask).reshape(-1), dx.reshape(-1))
        return dx

    # ---- batch normalisation --------------------------------------------------------------
    def batchnorm2d_forward_train(self, x, gamma, beta, running_mean, running_var, momentum, eps):
        x = _f32(x)
        y = np.empty_like(x)
        x_hat = np.empty_like(x)
        inv_std = np.empty(x.shape[1], _F32)
        _call(_bn.bn_forward_train, x.size * 3, x, _f32(gamma), _f32(beta),
              _inplace(running_mean, "running_mean"), _inplace(running_var, "running_var"),
              _F32(momentum), _F32(eps), y, x_hat, inv_std)
        return y, (x_hat, inv_std)

    def batchnorm2d_forward_eval(self, x, gamma, beta, running_mean, running_var, eps):
        x = _f32(x)
        y = np.empty_like(x)
        _call(_bn.bn_forward_eval, x.size, x, _f32(gamma), _f32(beta), _f32(running_mean),
              _f32(running_var), _F32(eps), y)
        return y

    def batchnorm2d_backward(self, dy, state, gamma):
        x_hat, inv_std = state
        dy = _f32(dy)
        dx = np.empty_like(dy)
        dgamma = np.empty(dy.shape[1], _F32)
        dbeta = np.empty(dy.shape[1], _F32)
        _call(_bn.bn_backward, dy.size * 2, dy, x_hat, inv_std, _f32(gamma), dx, dgamma, dbeta)
        return dx, dgamma, dbeta

    # ---- optimizer steps (in place) -------------------------------------------------------
    def sgd_step(self, param, grad, velocity, lr, momentum, nesterov, weight_decay):
        p = _inplace(param, "param").reshape(-1)
        g = _f32(grad).reshape(-1)
        if velocity is None:
            _call(_optim.sgd_plain, p.size, p, g, _F32(lr), _F32(weight_decay))
        else:
            _call(_optim.sgd_momentum, p.size * 2, p, g,
                  _inplace(velocity, "velocity").reshape(-1), _F32(lr), _F32(momentum),
                  bool(nesterov), _F32(weight_decay))

    def adam_step(self, param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
        _call(_optim.adam, param.size * 4, _inplace(param, "param").reshape(-1),
              _f32(grad).reshape(-1), _inplace(m, "m").reshape(-1), _inplace(v, "v").reshape(-1),
              _F32(lr), _F32(beta1), _F32(beta2), _F32(eps), _F32(1 - beta1 ** step),
              _F32(1 - beta2 ** step), _F32(weight_decay), bool(decoupled))

    def rmsprop_step(self, param, grad, square_avg, buf, lr, alpha, eps, momentum, weight_decay):
        p = _inplace(param, "param").reshape(-1)
        use_momentum = bool(momentum)
        b = _inplace(buf, "buf").reshape(-1) if use_momentum else p      # unused if no momentum
        _call(_optim.rmsprop, p.size * 3, p, _f32(grad).reshape(-1),
              _inplace(square_avg, "square_avg").reshape(-1), b, _F32(lr), _F32(alpha), _F32(eps),
              _F32(momentum), _F32(weight_decay), use_momentum)
