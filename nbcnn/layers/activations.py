"""Element-wise non-linearities."""

from __future__ import annotations

from .base import Layer


class Activation(Layer):
    """Applies ``kind`` (relu, leaky_relu, sigmoid, tanh) element by element."""

    kind = ""
    alpha = 0.0

    def lead(self):
        return self

    def _forward(self, x, training):
        y = self.backend.activation_forward(self.kind, x, self.alpha)
        self._cache = (x, y)
        return y

    def _backward(self, dy):
        x, y = self._cache
        return self.backend.activation_backward(self.kind, x, y, dy, self.alpha)

    def spec(self):
        return self.kind


class ReLU(Activation):
    """max(x, 0)."""
    kind = "relu"


class LeakyReLU(Activation):
    """x for x > 0, alpha * x otherwise."""
    kind = "leaky_relu"

    def __init__(self, alpha: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= float(alpha) < 1:
            raise ValueError(f"LeakyReLU: alpha must be in [0, 1), got {alpha!r}")
        self.alpha = float(alpha)

    def config(self):
        return {"alpha": self.alpha}

    def spec(self):
        return f"leaky_relu({self.alpha!r})"


class Sigmoid(Activation):
    """1 / (1 + exp(-x))."""
    kind = "sigmoid"


class Tanh(Activation):
    """tanh(x)."""
    kind = "tanh"
