"""Conv2D: a bank of learned filters slid over the image."""

from __future__ import annotations

import numpy as np

from ..init import check_init, initial_weight
from .base import Layer
from .geometry import expect_rank, pair, resolve_padding, windowed_output


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    **Arguments:**

    - ``filters``: F, the number of output channels.
    - ``kernel_size``: (kh, kw), an int or a pair.
    - ``stride``: (sh, sw), an int or a pair.
    - ``padding``: zeros around the input: an int, a pair (rows, columns), a 4-tuple (top,
      bottom, left, right), ``"same"`` (output size ceil(H / sh), the pad split as TensorFlow
      does) or ``"valid"`` (none).
    - ``dilation``: (dh, dw), an int or a pair; tap (p, q) reads the input at offset
      (p*dh, q*dw), so a 3x3 kernel with dilation 2 spans 5x5 ("same" counts that span).
    - ``groups``: G; the input channels and the filters are split into G groups, each filter
      seeing only its group's C/G channels; G must divide C and F (``groups == C`` is a
      depthwise convolution).
    - ``bias``: whether to add a learned ``bias``.
    - ``init``: 'he', 'glorot' or 'auto' (resolved when the layer is built, into
      ``resolved_init``: He when the first activation after it is in the ReLU family, Glorot
      otherwise, so Glorot for a layer on its own; ``nbcnn.init.resolve_init``).

    **Parameters:** ``weight`` (F, C/G, kh, kw) and ``bias`` (F,), PyTorch's names and shapes.

    **Shapes:** x (N, C, H, W) -> y (N, F, OH, OW), with padded size Hp = H + top + bottom and
    OH = floor((Hp - (dh*(kh - 1) + 1)) / sh) + 1 (the same for the width); dy like y, dx like x.

    **Forward** (xp: x with its padding; channel c = g*C/G + c' for filter f of group
    g = f // (F/G))::

        y[n, f, i, j] = bias[f] + sum_{c', p, q} weight[f, c', p, q]
                                   * xp[n, c, i*sh + p*dh, j*sw + q*dw]

    **Backward**, given dy = dL/dy::

        dweight[f, c', p, q] = sum_{n, i, j} dy[n, f, i, j] * xp[n, c, i*sh + p*dh, j*sw + q*dw]
        dbias[f]             = sum_{n, i, j} dy[n, f, i, j]
        dxp[n, c, i*sh + p*dh, j*sw + q*dw] += weight[f, c', p, q] * dy[n, f, i, j]

    and dx is dxp without its padding (not computed when ``need_input_grad`` is False).

    **Reference:** ``NumpyBackend.conv2d_forward`` and ``conv2d_backward`` in
    ``nbcnn/backends/numpy_ref.py`` (the windows of ``_conv_windows``, scattered back by
    ``_scatter_windows``).
    """

    weighted = True

    def __init__(self, filters: int, kernel_size=3, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, init: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"Conv2D: filters must be a positive int, got {filters!r}")
        self.filters = filters
        self.kernel_size = pair(kernel_size, "Conv2D kernel_size")
        self.stride = pair(stride, "Conv2D stride")
        self.dilation = pair(dilation, "Conv2D dilation")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"Conv2D: groups must be a positive int, got {groups!r}")
        if filters % groups:
            raise ValueError(f"Conv2D: groups={groups} must divide filters={filters}")
        self.groups = groups
        resolve_padding(padding, (1, 1), self.kernel_size, self.stride, self.dilation)  # validate
        self.padding = tuple(padding) if isinstance(padding, list) else padding
        self.use_bias = bool(bias)
        self.init = check_init(init, "Conv2D")   # as written; build resolves it: resolved_init
        self.resolved_init, self.resolved_slope = None, 0.0
        self.pads = None

    def output_shape(self, input_shape):
        expect_rank(self.describe(), input_shape, 3, "C, H, W")
        if input_shape[0] % self.groups:
            raise ValueError(f"{self.describe()}: groups={self.groups} must divide both "
                             f"in_channels={input_shape[0]} and filters={self.filters}")
        self.pads = resolve_padding(self.padding, input_shape[1:], self.kernel_size, self.stride,
                                    self.dilation)
        oh, ow = windowed_output(self.describe(), input_shape[1:], self._span(), self.stride,
                                 self.pads)
        return (self.filters, oh, ow)

    def _span(self):
        """Rows and columns one (dilated) window covers: (k - 1)*d + 1."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation))

    def _initial_params(self, input_shape, rng):
        cg, (kh, kw) = input_shape[0] // self.groups, self.kernel_size
        # fans as PyTorch counts them: a filter sees cg channels; fan-out spans every filter
        w = initial_weight(self.resolved_init, (self.filters, cg, kh, kw), cg * kh * kw,
                           self.filters * kh * kw, rng, self.resolved_slope)
        params = {"weight": w}
        if self.use_bias:
            params["bias"] = np.zeros(self.filters, dtype=np.float32)
        return params

    def _forward(self, x, training):
        self._cache = x
        return self.backend.conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                           self.stride, self.pads, **self._options())

    def _options(self):
        """dilation and groups for the backend, left out when they are the defaults."""
        opts = {}
        if self.dilation != (1, 1):
            opts["dilation"] = self.dilation
        if self.groups != 1:
            opts["groups"] = self.groups
        return opts

    def _backward(self, dy):
        dx, dw, db = self.backend.conv2d_backward(self._cache, self.params["weight"], dy,
                                                  self.stride, self.pads, self.use_bias,
                                                  self.need_input_grad, **self._options())
        self.grads = {"weight": dw, **({"bias": db} if self.use_bias else {})}
        return dx

    def config(self):
        return {"filters": self.filters, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, (int, str)) else list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups,
                "bias": self.use_bias, "init": self.init}

    def spec(self):
        k = _short(self.kernel_size)
        args = [str(self.filters), _fmt(k)]
        if self.padding not in (0, "valid"):
            args.append(_fmt(self.padding))
        if self.stride != (1, 1):
            args.append(f"stride={_fmt(_short(self.stride))}")
        if self.dilation != (1, 1):
            args.append(f"dilation={_fmt(_short(self.dilation))}")
        if self.groups != 1:
            args.append(f"groups={self.groups}")
        if not self.use_bias:
            args.append("bias=false")
        if self.init != "auto":
            args.append(f"init={self.init}")
        return f"conv({','.join(args)})"

    def describe(self):
        extra = "".join([f", dilation={_short(self.dilation)}" if self.dilation != (1, 1)
                         else "", f", groups={self.groups}" if self.groups != 1 else ""])
        return f"Conv2D({self.filters}, {self.kernel_size[0]}x{self.kernel_size[1]}{extra})"


def _short(v):
    """(3, 3) -> 3; (3, 5) stays a pair."""
    return v[0] if v[0] == v[1] else v


def _fmt(v) -> str:
    """A value as written in an architecture string: 3, same, (3:5)."""
    if isinstance(v, (tuple, list)):
        return "(" + ":".join(str(i) for i in v) + ")"
    return str(v)
