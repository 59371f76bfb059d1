"""The op contract: what every backend provides, and nothing more.

Layers, losses and optimizers never look at which backend they run on: they call these ops on
the backend's own array type (numpy arrays for ``numpy_ref`` and ``numba``, device buffers for
``opencl``). Arrays are NCHW and floating point (float32 except for the float64 reference used by
gradient checks); labels are integer class indices.

Geometry is resolved by the layers before it reaches a backend, so every op gets plain tuples:

* ``kernel`` = (kh, kw), ``stride`` = (sh, sw)
* ``padding`` = (top, bottom, left, right), zero padding; the output size is
  ``(H + top + bottom - kh) // sh + 1`` (and the same for the width).
* convolutions also take ``dilation`` = (dh, dw), the spacing of the kernel taps (a tap (p, q)
  reads the input at offset (p*dh, q*dw), so the window spans (kh-1)*dh+1 rows), and ``groups``:
  the channels split into ``groups`` equal groups, output channel o seeing only the input
  channels of its group (weights (O, C // groups, kh, kw), as in PyTorch).

Pooling also takes ``output_size`` = (OH, OW), resolved by the layer too: ``None`` is the size
above; PyTorch's ``ceil_mode`` gives one more window where the input leaves a partial one
(``pool_output_size``). Window (i, j) covers input rows ``i*sh - top .. i*sh - top + kh - 1``
and columns ``j*sw - left .. j*sw - left + kw - 1``; its part outside the input is padding (for
the max: -inf, so it never wins; for the average see ``avgpool2d_forward``), and a window that
runs past the bottom/right padding (the last one in ceil mode) is cut there. Every window must
overlap the input (``pool_geometry`` checks it).

Ops that need to remember something between forward and backward return an opaque ``state``
that only the same backend's backward understands.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from .geometry import conv_output_size


def pool_output_size(size: int, k: int, stride: int, pad_before: int, pad_after: int,
                     ceil_mode: bool = False) -> int:
    """Output length of a pooling along one axis, PyTorch's rule: floor((size + pads - k) /
    stride) + 1, or with ``ceil_mode`` the ceiling, less the last window if it would start past
    the input and its leading padding (``(out - 1) * stride >= size + pad_before``). It can be
    < 1 (input too small)."""
    span = size + pad_before + pad_after - k
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad_before:
        out -= 1
    return out


def pool_geometry(x_shape, kernel, stride, padding, output_size) -> tuple[int, int]:
    """(OH, OW) of a pooling of ``x_shape`` (N, C, H, W): ``output_size``, or the floor-mode size
    when it is None. ValueError unless every window overlaps the input (a window of padding
    alone has no maximum and nothing to average)."""
    if len(x_shape) != 4:
        raise ValueError(f"pooling expects x (N, C, H, W), got shape {tuple(x_shape)}")
    h, w = x_shape[2], x_shape[3]
    (kh, kw), (sh, sw), (top, bottom, left, right) = kernel, stride, padding
    if output_size is None:
        output_size = (conv_output_size(h, kh, sh, top, bottom),
                       conv_output_size(w, kw, sw, left, right))
    oh, ow = output_size
    if oh < 1 or ow < 1:
        raise ValueError(f"pooling: the window {kh}x{kw} does not fit the input {h}x{w} with "
                         f"padding {tuple(padding)} (output {oh}x{ow})")
    if (min(padding) < 0 or top >= kh or left >= kw or (oh - 1) * sh - top >= h
            or (ow - 1) * sw - left >= w):
        raise ValueError(f"pooling: {oh}x{ow} windows {kh}x{kw} with stride {sh}x{sw} and padding "
                         f"{tuple(padding)} do not all overlap the input {h}x{w}")
    return oh, ow


def pool_is_plain(x_shape, kernel, stride, padding, output_size) -> bool:
    """True when a pooling has no padding and every window lies inside the input (the
    floor-mode size), so the backends' unpadded fast kernels apply."""
    (kh, kw), (sh, sw) = kernel, stride
    return not any(padding) and tuple(output_size) == (
        conv_output_size(x_shape[2], kh, sh, 0, 0), conv_output_size(x_shape[3], kw, sw, 0, 0))


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
    def conv2d_forward(self, x, w, b, stride, padding, dilation=(1, 1), groups=1):
        """y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] * xpad[n, g*Cg + c, i*sh + p*dh, j*sw + q*dw]

        with x (N, C, H, W), w (O, Cg, kh, kw), Cg = C // groups, g = o // (O // groups) the
        group of filter o, and c running over the Cg channels of that group; ``b`` may be None.
        The output is (N, O, OH, OW) with OH = (H + top + bottom - ((kh-1)*dh + 1)) // sh + 1
        (the same for OW). groups == C is a depthwise convolution."""

    @abc.abstractmethod
    def conv2d_backward(self, x, w, dy, stride, padding, with_bias: bool, need_dx: bool,
                        dilation=(1, 1), groups=1):
        """Gradients of ``conv2d_forward``: returns (dx or None, dw, db or None)."""

    # ---- pooling --------------------------------------------------------------------------
    @abc.abstractmethod
    def maxpool2d_forward(self, x, kernel, stride, padding=(0, 0, 0, 0), output_size=None):
        """y[n, c, i, j] = max of window (i, j) (module docstring) over its input elements, the
        padding being -inf; returns (y, state). Ties go to the first maximum in row-major window
        order."""

    @abc.abstractmethod
    def maxpool2d_backward(self, dy, state):
        """Routes each dy to the input element that won its window; returns dx."""

    @abc.abstractmethod
    def avgpool2d_forward(self, x, kernel, stride, padding=(0, 0, 0, 0), output_size=None,
                          count_include_pad=True):
        """y[n, c, i, j] = sum of window (i, j) over its input elements / divisor, PyTorch's
        avg_pool2d: with ``count_include_pad`` the divisor counts the window cut to the input and
        its declared padding, rows ``r0 .. min(r0 + kh, H + bottom) - 1`` for r0 = i*sh - top
        (times the same count for the columns; a ceil-mode overhang past the padding is never
        counted); without it only the input elements, rows ``max(r0, 0) .. min(r0 + kh, H) - 1``.
        With no padding and no overhang both are kh*kw."""

    @abc.abstractmethod
    def avgpool2d_backward(self, dy, x_shape, kernel, stride, padding=(0, 0, 0, 0),
                           count_include_pad=True):
        """Each input element of window (i, j) gets dy[..., i, j] / that window's divisor; returns
        dx. The output size is dy's."""

    @abc.abstractmethod
    def global_avgpool2d_forward(self, x):
        """y[n, c] = mean of x[n, c, :, :] over all H*W pixels: (N, C, H, W) -> (N, C)."""

    @abc.abstractmethod
    def global_avgpool2d_backward(self, dy, x_shape):
        """dx[n, c, h, w] = dy[n, c] / (H*W) for the input shape ``x_shape`` (N, C, H, W)."""

    # ---- dense ----------------------------------------------------------------------------
    @abc.abstractmethod
    def dense_forward(self, x, w, b):
        """y = x @ w.T + b, with x (N, in), w (out, in); ``b`` may be None."""

    @abc.abstractmethod
    def dense_backward(self, x, w, dy, with_bias: bool, need_dx: bool):
        """Returns (dx or None, dw, db or None)."""

    # ---- element-wise sum (residual connections) ------------------------------------------
    @abc.abstractmethod
    def add(self, a, b, out=None):
        """a + b for two arrays of the same shape. With ``out`` (an array of this backend of that
        shape, which may be ``a`` or ``b`` itself) the sum is written there and ``out`` is
        returned, so a residual block can accumulate into an array it owns instead of
        allocating one."""

    # ---- activations ----------------------------------------------------------------------
    @abc.abstractmethod
    def activation_forward(self, kind: str, x, alpha: float):
        """kind in relu, leaky_relu (slope ``alpha`` below zero), sigmoid, tanh."""

    @abc.abstractmethod
    def activation_backward(self, kind: str, x, y, dy, alpha: float):
        """dx from the forward's input ``x``, output ``y`` and upstream ``dy``."""

    # ---- loss -----------------------------------------------------------------------------
    @abc.abstractmethod
    def softmax_cross_entropy(self, logits, labels, label_smoothing: float = 0.0):
        """Mean softmax cross-entropy over the batch, against the targets
        q = (1 - label_smoothing) * onehot(label) + label_smoothing / K (PyTorch's definition;
        K classes): loss_n = -sum_k q_k log softmax(logits_n)_k, dlogits = (softmax - q) / N.

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

    # ---- augmentation ---------------------------------------------------------------------
    @abc.abstractmethod
    def augment(self, x, dy, dx, flip):
        """Each image moved and mirrored, zeros shifted in: with int32 host arrays dy, dx, flip
        of length N, y[n,c,i,j] = x[n,c,i+dy[n], s if not flip[n] else W-1-s] where s = j+dx[n],
        and 0 where i+dy[n] or s falls outside the image. (A crop after zero padding by p at
        offset (oy, ox) is dy = oy-p, dx = ox-p.) Returns a new array."""

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

    @abc.abstractmethod
    def adagrad_step(self, param, grad, state_sum, lr: float, lr_decay: float, eps: float,
                     step: int, weight_decay: float) -> None:
        """PyTorch's Adagrad: g = grad + wd*param; clr = lr / (1 + (step-1)*lr_decay) with
        ``step`` 1-based; sum += g^2; param -= clr * g / (sqrt(sum) + eps)."""

    @abc.abstractmethod
    def adadelta_step(self, param, grad, square_avg, acc_delta, lr: float, rho: float,
                      eps: float, weight_decay: float) -> None:
        """PyTorch's Adadelta: g = grad + wd*param; s = rho*s + (1-rho)*g^2;
        d = sqrt(acc + eps) / sqrt(s + eps) * g; acc = rho*acc + (1-rho)*d^2; param -= lr*d."""

    # ---- gradient clipping ----------------------------------------------------------------
    @abc.abstractmethod
    def sum_of_squares(self, arrays) -> float:
        """The sum of x^2 over every element of every array in ``arrays``, as a Python float
        (the only number that comes back to the host)."""

    @abc.abstractmethod
    def scale_(self, a, factor: float) -> None:
        """a *= factor, in place."""


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
