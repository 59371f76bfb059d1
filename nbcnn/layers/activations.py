"""Element-wise non-linearities."""

from __future__ import annotations

from .base import Layer


class Activation(Layer):
    """Applies ``kind`` (relu, leaky_relu, sigmoid, tanh) element by element. No parameters.

    **Shapes:** x (any) -> y like x; dy like y -> dx like x.

    **Forward:** y = f(x). **Backward:** dx = f'(x) * dy. Each subclass gives f and f' (f'
    written with y where that is cheaper). NaN in x stays NaN in y, as in PyTorch.

    **Reference:** ``NumpyBackend.activation_forward`` and ``activation_backward`` in
    ``nbcnn/backends/numpy_ref.py``.
    """

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
    """Rectified linear unit: y = max(x, 0); dx = dy where x > 0, else 0."""
    kind = "relu"


class LeakyReLU(Activation):
    """Leaky ReLU: y = x where x > 0, else alpha * x; dx = dy where x > 0, else alpha * dy.

    **Arguments:** ``alpha``: the slope for x <= 0, in [0, 1) (default 0.01, as PyTorch)."""
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
    """Logistic sigmoid: y = 1 / (1 + exp(-x)); dx = dy * y * (1 - y)."""
    kind = "sigmoid"


class Tanh(Activation):
    """Hyperbolic tangent: y = tanh(x); dx = dy * (1 - y^2)."""
    kind = "tanh"
