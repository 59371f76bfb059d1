"""Flatten: (N, C, H, W) -> (N, C*H*W), the bridge from feature maps to Dense layers."""

from __future__ import annotations

import math

from .base import Layer


class Flatten(Layer):
    """Reshapes each example to one vector, in C order (as PyTorch's flatten). No arguments,
    no parameters.

    **Shapes:** x (N, C, H, W) (any per-example shape) -> y (N, C*H*W); dy (N, C*H*W) -> dx
    like x.

    **Forward:** y[n, (c*H + h)*W + w] = x[n, c, h, w]. **Backward:** dx = dy reshaped back.

    **Reference:** the backend's ``reshape`` (``numpy.reshape`` in
    ``nbcnn/backends/numpy_ref.py``; no arithmetic).
    """

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def _forward(self, x, training):
        self._cache = tuple(x.shape)
        return self.backend.reshape(x, (x.shape[0], -1))

    def _backward(self, dy):
        return self.backend.reshape(dy, self._cache)

    def spec(self):
        return "flatten"
