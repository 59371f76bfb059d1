"""Max and average pooling: shrink each feature map by summarising small windows."""

from __future__ import annotations

from ..backends.base import pool_output_size
from .base import Layer
from .geometry import expect_rank, pair


class _Pool2D(Layer):
    """Shared by MaxPool2D and AvgPool2D: PyTorch's keywords and output sizes.

    **Arguments:**

    - ``pool_size``: (kh, kw), an int or a pair.
    - ``stride``: (sh, sw); default the pool size (windows side by side).
    - ``padding``: (ph, pw), an int or a pair: ph rows above and below, pw columns on each
      side; PyTorch allows at most half the window (``padding <= pool_size // 2``).
    - ``ceil_mode``: round the output size up instead of down (the last window is kept only if
      it starts inside the input or its top / left padding).

    **Shapes:** x (N, C, H, W) -> y (N, C, OH, OW), OH = floor((H + 2*ph - kh) / sh) + 1 (ceil
    with ``ceil_mode``; the same for the width); dy like y, dx like x. Window (i, j) covers the
    padded rows i*sh .. i*sh + kh - 1 and columns j*sw .. j*sw + kw - 1.
    """

    kind = ""

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode: bool = False, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.pool_size = pair(pool_size, f"{name} pool_size")
        self.stride = self.pool_size if stride is None else pair(stride, f"{name} stride")
        self.padding = _padding_pair(padding, name)
        for pad, k in zip(self.padding, self.pool_size):
            if pad > k // 2:
                raise ValueError(f"{name}: padding {_plain(self.padding)} must be at most half "
                                 f"the pool size {_plain(self.pool_size)} (PyTorch's rule: pad "
                                 "should be at most half of effective kernel size)")
        if not isinstance(ceil_mode, bool):
            raise TypeError(f"{name}: ceil_mode must be true or false, got {ceil_mode!r}")
        self.ceil_mode = ceil_mode
        ph, pw = self.padding
        #: (top, bottom, left, right), as the backends take it
        self.pads = (ph, ph, pw, pw)
        self.out_size = None

    def output_shape(self, input_shape):
        expect_rank(self.describe(), input_shape, 3, "C, H, W")
        size = input_shape[1:]
        out = tuple(pool_output_size(n, k, s, p, p, self.ceil_mode)
                    for n, k, s, p in zip(size, self.pool_size, self.stride, self.padding))
        if min(out) < 1:
            (kh, kw), (ph, pw) = self.pool_size, self.padding
            raise ValueError(f"{self.describe()}: kernel {kh}x{kw} is larger than the padded "
                             f"input {size[0] + 2 * ph}x{size[1] + 2 * pw} (input "
                             f"{size[0]}x{size[1]})")
        self.out_size = out
        return (input_shape[0],) + out

    def config(self):
        return {"pool_size": list(self.pool_size), "stride": list(self.stride),
                "padding": list(self.padding), "ceil_mode": self.ceil_mode}

    def _spec_args(self) -> list[str]:
        k, s = _plain(self.pool_size), _plain(self.stride)
        args = [_fmt(k)] if s == k else [_fmt(k), _fmt(s)]
        if self.padding != (0, 0):
            args.append(f"padding={_fmt(_plain(self.padding))}")
        if self.ceil_mode:
            args.append("ceil_mode=true")
        return args

    def spec(self):
        return f"{self.kind}({','.join(self._spec_args())})"

    def describe(self):
        text = f"{self.pool_size[0]}x{self.pool_size[1]}"
        if self.stride != self.pool_size:
            text += f", stride {self.stride[0]}x{self.stride[1]}"
        if self.padding != (0, 0):
            text += f", padding {self.padding[0]}x{self.padding[1]}"
        if self.ceil_mode:
            text += ", ceil"
        return f"{type(self).__name__}({text})"


class MaxPool2D(_Pool2D):
    """Max pooling: the largest value of each window (arguments and shapes: ``_Pool2D``).

    **Forward** (xp: x padded with -inf, so padding never wins a window)::

        y[n, c, i, j] = max_{p < kh, q < kw} xp[n, c, i*sh + p, j*sw + q]

    **Backward:** each dy[n, c, i, j] goes to the one input that won its window (the first in
    row-major order on ties), summed where windows overlap; every other input gets 0.

    **Reference:** ``NumpyBackend.maxpool2d_forward`` (which keeps the winners' positions) and
    ``maxpool2d_backward`` in ``nbcnn/backends/numpy_ref.py``.
    """

    kind = "maxpool"

    def _forward(self, x, training):
        y, self._cache = self.backend.maxpool2d_forward(x, self.pool_size, self.stride, self.pads,
                                                        self.out_size)
        return y

    def _backward(self, dy):
        return self.backend.maxpool2d_backward(dy, self._cache)


class AvgPool2D(_Pool2D):
    """Average pooling: the mean of each window (arguments and shapes: ``_Pool2D``, and
    ``count_include_pad``).

    **Forward** (xp: x padded with zeros)::

        y[n, c, i, j] = (1 / d[i, j]) * sum_{p < kh, q < kw} xp[n, c, i*sh + p, j*sw + q]

    where the divisor d[i, j] is, with ``count_include_pad`` (the default, as PyTorch), the
    window's size within the padded input (the ceil-mode overhang past the padding does not
    count), and without it the number of the window's elements inside the input itself.

    **Backward:** every input of window (i, j) receives dy[n, c, i, j] / d[i, j], summed where
    windows overlap (padding receives nothing).

    **Reference:** ``NumpyBackend.avgpool2d_forward`` and ``avgpool2d_backward`` (divisors from
    ``_window_counts``) in ``nbcnn/backends/numpy_ref.py``.
    """

    kind = "avgpool"

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, **kwargs):
        super().__init__(pool_size, stride, padding, ceil_mode, **kwargs)
        if not isinstance(count_include_pad, bool):
            raise TypeError(f"AvgPool2D: count_include_pad must be true or false, got "
                            f"{count_include_pad!r}")
        self.count_include_pad = count_include_pad

    def _forward(self, x, training):
        self._cache = tuple(x.shape)
        return self.backend.avgpool2d_forward(x, self.pool_size, self.stride, self.pads,
                                              self.out_size, self.count_include_pad)

    def _backward(self, dy):
        return self.backend.avgpool2d_backward(dy, self._cache, self.pool_size, self.stride,
                                               self.pads, self.count_include_pad)

    def config(self):
        return {**super().config(), "count_include_pad": self.count_include_pad}

    def _spec_args(self):
        args = super()._spec_args()
        if not self.count_include_pad:
            args.append("count_include_pad=false")
        return args


def _padding_pair(padding, name) -> tuple[int, int]:
    """Pooling padding as (ph, pw), each >= 0."""
    value = (padding, padding) if isinstance(padding, int) and not isinstance(padding, bool) \
        else padding
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{name}: padding must be an int or a pair of ints, got {padding!r}")
    if min(value) < 0:
        raise ValueError(f"{name}: padding must be >= 0, got {padding!r}")
    return int(value[0]), int(value[1])


def _plain(v):
    """A pair as an int when both halves agree (how it is written in a spec)."""
    return v[0] if v[0] == v[1] else tuple(v)


def _fmt(v) -> str:
    return f"({v[0]}:{v[1]})" if isinstance(v, tuple) else str(v)


class GlobalAvgPool2D(Layer):
    """Global average pooling: each feature map averaged to one number. Ends a network of
    convolutions without Flatten (ResNets: the last stage's maps, averaged, go straight into
    Dense). No arguments.

    **Shapes:** x (N, C, H, W) -> y (N, C); dy (N, C) -> dx (N, C, H, W).

    **Forward:** y[n, c] = (1 / (H*W)) * sum_{h, w} x[n, c, h, w].

    **Backward:** dx[n, c, h, w] = dy[n, c] / (H*W) for every pixel of the map.

    **Reference:** ``NumpyBackend.global_avgpool2d_forward`` and ``global_avgpool2d_backward``
    in ``nbcnn/backends/numpy_ref.py``.
    """

    def output_shape(self, input_shape):
        expect_rank(self.describe(), input_shape, 3, "C, H, W")
        return (input_shape[0],)

    def _forward(self, x, training):
        self._cache = tuple(x.shape)
        return self.backend.global_avgpool2d_forward(x)

    def _backward(self, dy):
        return self.backend.global_avgpool2d_backward(dy, self._cache)

    def spec(self):
        return "globalavgpool"
