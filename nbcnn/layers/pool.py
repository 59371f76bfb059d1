"""Max and average pooling: shrink each feature map by summarising small windows."""

from __future__ import annotations

from .base import Layer
from .geometry import expect_rank, pair, windowed_output


class _Pool2D(Layer):
    kind = ""

    def __init__(self, pool_size=2, stride=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pair(pool_size, f"{type(self).__name__} pool_size")
        self.stride = self.pool_size if stride is None else pair(stride, f"{type(self).__name__} stride")

    def output_shape(self, input_shape):
        expect_rank(self.describe(), input_shape, 3, "C, H, W")
        oh, ow = windowed_output(self.describe(), input_shape[1:], self.pool_size, self.stride)
        return (input_shape[0], oh, ow)

    def config(self):
        return {"pool_size": list(self.pool_size), "stride": list(self.stride)}

    def spec(self):
        k = self.pool_size[0] if self.pool_size[0] == self.pool_size[1] else self.pool_size
        s = self.stride[0] if self.stride[0] == self.stride[1] else self.stride
        fmt = lambda v: f"({v[0]}:{v[1]})" if isinstance(v, tuple) else str(v)   # noqa: E731
        return f"{self.kind}({fmt(k)})" if s == k else f"{self.kind}({fmt(k)},{fmt(s)})"

    def describe(self):
        return f"{type(self).__name__}({self.pool_size[0]}x{self.pool_size[1]})"


class MaxPool2D(_Pool2D):
    """Keeps the largest value of each window; the gradient flows only to that value."""

    kind = "maxpool"

    def _forward(self, x, training):
        y, self._cache = self.backend.maxpool2d_forward(x, self.pool_size, self.stride)
        return y

    def _backward(self, dy):
        return self.backend.maxpool2d_backward(dy, self._cache)


class AvgPool2D(_Pool2D):
    """Averages each window; the gradient is shared equally by the window's inputs."""

    kind = "avgpool"

    def _forward(self, x, training):
        self._cache = tuple(x.shape)
        return self.backend.avgpool2d_forward(x, self.pool_size, self.stride)

    def _backward(self, dy):
        return self.backend.avgpool2d_backward(dy, self._cache, self.pool_size, self.stride)


class GlobalAvgPool2D(Layer):
    """Averages each feature map to one number: (N, C, H, W) -> (N, C). The gradient is shared
    equally by the map's H*W pixels. Ends a network of convolutions without Flatten (ResNets:
    the last stage's maps, averaged, go straight into Dense)."""

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
