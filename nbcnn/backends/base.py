"""The op contract: what every backend provides, and nothing more.

Layers, losses and optimizers never look at which backend they run on: they call these ops on
the backend's own array type (numpy arrays for ``numpy_ref`` and ``numba``, device buffers for
``opencl``). Arrays are NCHW and floating point (float32 except for the float64 reference used by
gradient checks); labels are integer class indices.

Geometry is resolved by the layers before it reaches a backend, so every op gets plain tuples:

* ``kernel`` = (kh, kw), ``stride`` = (sh, sw)
* ``padding`` = (top, bottom, left, right), zero padding; the output size is
  ``(H + top + bottom - kh) // sh + 1`` (and the same for the width).

Ops that need to remember something between forward and backward return an opaque ``state``
that only the same backend's backward understands.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


def conv_output_size(size: int, k: int, stride: int, pad_before: int, pad_after: int) -> int:
    """Output length of a convolution or pooling along one axis."""
    return (size + pad_before + pad_after - k) // stride + 1


class Backend(abc.ABC):
    """Abstract base of all backends. See the module docstring for the conventions."""

    #: short name used in ``backend=...`` and in result tables
    name: str = "abstract"
    #: floating dtype of every array this backend makes
    dtype: np.dtype = np.dtype(np.float32)

    # ---- arrays ---------------------------------------------------------------------------
    @abc.abstractmethod
    def from_numpy(self, a: np.ndarray) -> Any:
        """A backend array holding ``a`` as this backend's float dtype."""

    @abc.abstractmethod
    def labels_from_numpy(self, y: np.ndarray) -> Any:
        """A backend array of integer class labels."""

    @abc.abstractmethod
    def to_numpy(self, a: Any) -> np.ndarray:
        """A numpy copy (or view) of a backend array."""

    @abc.abstractmethod
    def zeros(self, shape: tuple[int, ...]) -> Any:
        """A new zero-filled backend array."""

    @abc.abstractmethod
    def copy_into(self, dst: Any, src: Any) -> None:
        """Copy ``src`` into the existing array ``dst`` (same shape)."""

    @abc.abstractmethod
    def all_finite(self, a: Any) -> bool:
        """True when no element is NaN or infinite."""

    def reshape(self, a: Any, shape: tuple[int, ...]) -> Any:
        """A view of ``a`` with a new shape (same number of elements, C order)."""
        return a.reshape(shape)

    def device_name(self) -> str:
        """Human-readable name of the device the arrays live on."""
        return "cpu"

    def memory_available(self) -> int | None:
        """Bytes the backend's arrays may still take (None if unknown): here the host's
        available memory (``MemAvailable`` of /proc/meminfo)."""
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def synchronize(self) -> None:
        """Wait until all queued work is done (a no-op for synchronous backends)."""

    def prepare_training(self, dry_step) -> None:
        """Called before a model's first training step. ``dry_step()`` performs that step (and
        an inference pass) on a throw-away copy of the model; a backend that compiles kernels
        on first use may run it to learn, and compile up front, every kernel training needs.
        The default does nothing."""

    # ---- convolution ----------------------------------------------------------------------
    @abc.abstractmethod
    def conv2d_forward(self, x, w, b, stride, padding):
        """y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] * xpad[n,c,i*sh+p,j*sw+q]; ``b`` may be None."""

    @abc.abstractmethod
    def conv2d_backward(self, x, w, dy, stride, padding, with_bias: bool, need_dx: bool):
        """Gradients of ``conv2d_forward``: returns (dx or None, dw, db or None)."""

    # ---- pooling --------------------------------------------------------------------------
    @abc.abstractmethod
    def maxpool2d_forward(self, x, kernel, stride):
        """Max over each window (no padding); returns (y, state). Ties go to the first maximum."""

    @abc.abstractmethod
    def maxpool2d_backward(self, dy, state):
        """Routes each dy to the input element that won its window; returns dx."""

    @abc.abstractmethod
    def avgpool2d_forward(self, x, kernel, stride):
        """Mean over each window (no padding); returns y."""

    @abc.abstractmethod
    def avgpool2d_backward(self, dy, x_shape, kernel, stride):
        """Spreads each dy evenly over its window; returns dx."""

    # ---- dense ----------------------------------------------------------------------------
    @abc.abstractmethod
    def dense_forward(self, x, w, b):
        """y = x @ w.T + b, with x (N, in), w (out, in); ``b`` may be None."""

    @abc.abstractmethod
    def dense_backward(self, x, w, dy, with_bias: bool, need_dx: bool):
        """Returns (dx or None, dw, db or None)."""

    # ---- activations ----------------------------------------------------------------------
    @abc.abstractmethod
    def activation_forward(self, kind: str, x, alpha: float):
        """kind in relu, leaky_relu (slope ``alpha`` below zero), sigmoid, tanh."""

    @abc.abstractmethod
    def activation_backward(self, kind: str, x, y, dy, alpha: float):
        """dx from the forward's input ``x``, output ``y`` and upstream ``dy``."""

    # ---- loss -----------------------------------------------------------------------------
    @abc.abstractmethod
    def softmax_cross_entropy(self, logits, labels):
        """Mean softmax cross-entropy over the batch.

        Returns (loss as a Python float, dlogits of the mean loss, number of rows whose arg-max
        equals the label). Only the two numbers come back to the host.
        """

    # ---- dropout --------------------------------------------------------------------------
    @abc.abstractmethod
    def dropout_forward(self, x, p: float, seed: int):
        """Inverted dropout: keeps an element when ``dropout_uniform(seed, index) >= p`` and scales
        it by 1/(1-p). Returns (y, mask) where mask holds 0 or 1/(1-p)."""

    @abc.abstractmethod
    def dropout_backward(self, dy, mask):
        """dx = dy * mask."""

    # ---- batch normalisation --------------------------------------------------------------
    @abc.abstractmethod
    def batchnorm2d_forward_train(self, x, gamma, beta, running_mean, running_var,
                                  momentum: float, eps: float):
        """Normalises with the batch's per-channel statistics and updates the running ones in place
        (PyTorch's convention: running = (1-momentum)*running + momentum*batch, with the unbiased
        variance). Returns (y, state)."""

    @abc.abstractmethod
    def batchnorm2d_forward_eval(self, x, gamma, beta, running_mean, running_var, eps: float):
        """Normalises with the running statistics."""

    @abc.abstractmethod
    def batchnorm2d_backward(self, dy, state, gamma):
        """Returns (dx, dgamma, dbeta)."""

    # ---- optimizer steps (in place) -------------------------------------------------------
    @abc.abstractmethod
    def sgd_step(self, param, grad, velocity, lr: float, momentum: float, nesterov: bool,
                 weight_decay: float) -> None:
        """PyTorch's SGD: g = grad + wd*param; v = momentum*v + g;
        param -= lr * (g + momentum*v if nesterov else v). ``velocity`` is None when momentum is 0."""

    @abc.abstractmethod
    def adam_step(self, param, grad, m, v, lr: float, beta1: float, beta2: float, eps: float,
                  step: int, weight_decay: float, decoupled: bool) -> None:
        """Adam with bias correction for ``step`` (1-based, counted in optimizer steps).
        ``decoupled`` selects AdamW's weight decay (param *= 1 - lr*wd) over L2 (g += wd*param)."""

    @abc.abstractmethod
    def rmsprop_step(self, param, grad, square_avg, buf, lr: float, alpha: float, eps: float,
                     momentum: float, weight_decay: float) -> None:
        """PyTorch's RMSprop: s = alpha*s + (1-alpha)*g^2; u = g/(sqrt(s)+eps);
        with momentum: buf = momentum*buf + u, param -= lr*buf; else param -= lr*u."""


def dropout_uniform(seed: int, index: np.ndarray) -> np.ndarray:
    """The counter-based random numbers every backend uses for dropout masks.

    u = lowbias32(index + lowbias32(seed)) / 2**32, computed in uint32 arithmetic, so a numpy
    array, a Numba loop and an OpenCL work-item all draw the same mask for the same seed.
    (lowbias32 is Chris Wellons' integer hash.)
    """
    s = _lowbias32(np.asarray([seed & 0xFFFFFFFF], dtype=np.uint32))[0]
    h = _lowbias32(index.astype(np.uint32) + s)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _lowbias32(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint32, copy=True)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x
