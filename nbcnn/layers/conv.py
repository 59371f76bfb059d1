"""Conv2D: a bank of learned filters slid over the image."""

from __future__ import annotations

import numpy as np

from ..init import initial_weight
from .base import Layer
from .geometry import expect_rank, pair, resolve_padding, windowed_output


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    ``weight`` has shape (filters, in_channels, kh, kw) and ``bias`` (filters,), as in PyTorch.
    ``padding`` is an int, a pair, ``"same"`` or ``"valid"``. ``init`` is 'he', 'glorot' or 'auto'
    (a Sequential picks He when a ReLU-family activation follows, Glorot otherwise).
    """

    def __init__(self, filters: int, kernel_size=3, stride=1, padding=0, bias: bool = True,
                 init: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"Conv2D: filters must be a positive int, got {filters!r}")
        self.filters = filters
        self.kernel_size = pair(kernel_size, "Conv2D kernel_size")
        self.stride = pair(stride, "Conv2D stride")
        resolve_padding(padding, (1, 1), self.kernel_size, self.stride)   # validate early
        self.padding = padding
        self.use_bias = bool(bias)
        self.init = init
        self.negative_slope = 0.0        # set by Sequential when a LeakyReLU follows
        self.pads = None

    def output_shape(self, input_shape):
        expect_rank(self.describe(), input_shape, 3, "C, H, W")
        self.pads = resolve_padding(self.padding, input_shape[1:], self.kernel_size, self.stride)
        oh, ow = windowed_output(self.describe(), input_shape[1:], self.kernel_size, self.stride,
                                 self.pads)
        return (self.filters, oh, ow)

    def _initial_params(self, input_shape, rng):
        c, (kh, kw) = input_shape[0], self.kernel_size
        scheme = "glorot" if self.init == "auto" else self.init
        w = initial_weight(scheme, (self.filters, c, kh, kw), c * kh * kw,
                           self.filters * kh * kw, rng, self.negative_slope)
        params = {"weight": w}
        if self.use_bias:
            params["bias"] = np.zeros(self.filters, dtype=np.float32)
        return params

    def _forward(self, x, training):
        self._cache = x
        return self.backend.conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                           self.stride, self.pads)

    def _backward(self, dy):
        dx, dw, db = self.backend.conv2d_backward(self._cache, self.params["weight"], dy,
                                                  self.stride, self.pads, self.use_bias,
                                                  self.need_input_grad)
        self.grads = {"weight": dw, **({"bias": db} if self.use_bias else {})}
        return dx

    def config(self):
        return {"filters": self.filters, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, (int, str)) else list(self.padding),
                "bias": self.use_bias, "init": self.init}

    def spec(self):
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        s = self.stride[0] if self.stride[0] == self.stride[1] else self.stride
        args = [str(self.filters), _fmt(k)]
        if self.padding not in (0, "valid"):
            args.append(_fmt(self.padding))
        if s != 1:
            args.append(f"stride={_fmt(s)}")
        if not self.use_bias:
            args.append("bias=false")
        return f"conv({','.join(args)})"

    def describe(self):
        return f"Conv2D({self.filters}, {self.kernel_size[0]}x{self.kernel_size[1]})"


def _fmt(v) -> str:
    """A value as written in an architecture string: 3, same, (3:5)."""
    if isinstance(v, (tuple, list)):
        return "(" + ":".join(str(i) for i in v) + ")"
    return str(v)
