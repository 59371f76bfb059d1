"""Dense (fully connected): every output is a weighted sum of every input."""

from __future__ import annotations

import numpy as np

from ..init import initial_weight
from .base import Layer
from .geometry import expect_rank


class Dense(Layer):
    """y = x @ weight.T + bias, with ``weight`` (units, in_features) as in PyTorch's Linear."""

    def __init__(self, units: int, bias: bool = True, init: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = units
        self.use_bias = bool(bias)
        self.init = init
        self.negative_slope = 0.0        # set by Sequential when a LeakyReLU follows

    def output_shape(self, input_shape):
        expect_rank(self.describe(), input_shape, 1, "features")
        return (self.units,)

    def _initial_params(self, input_shape, rng):
        n_in = input_shape[0]
        scheme = "glorot" if self.init == "auto" else self.init
        params = {"weight": initial_weight(scheme, (self.units, n_in), n_in, self.units, rng,
                                           self.negative_slope)}
        if self.use_bias:
            params["bias"] = np.zeros(self.units, dtype=np.float32)
        return params

    def _forward(self, x, training):
        self._cache = x
        return self.backend.dense_forward(x, self.params["weight"], self.params.get("bias"))

    def _backward(self, dy):
        dx, dw, db = self.backend.dense_backward(self._cache, self.params["weight"], dy,
                                                 self.use_bias, self.need_input_grad)
        self.grads = {"weight": dw, **({"bias": db} if self.use_bias else {})}
        return dx

    def config(self):
        return {"units": self.units, "bias": self.use_bias, "init": self.init}

    def spec(self):
        return f"dense({self.units})" if self.use_bias else f"dense({self.units},bias=false)"

    def describe(self):
        return f"Dense({self.units})"
