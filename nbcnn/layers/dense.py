"""Dense (fully connected): every output is a weighted sum of every input."""

from __future__ import annotations

import numpy as np

from ..init import check_init, initial_weight
from .base import Layer
from .geometry import expect_rank


class Dense(Layer):
    """Fully connected layer, PyTorch's ``Linear``.

    **Arguments:**

    - ``units``: U, the number of outputs.
    - ``bias``: whether to add a learned ``bias``.
    - ``init``: 'he', 'glorot' or 'auto' (as ``Conv2D``'s: resolved at build into
      ``resolved_init``, Glorot for a layer on its own).

    **Parameters:** ``weight`` (U, D) and ``bias`` (U,).

    **Shapes:** x (N, D) -> y (N, U); dy like y, dx like x.

    **Forward:** y = x @ weight.T + bias, that is y[n, u] = bias[u] + sum_d x[n, d] * weight[u, d].

    **Backward:** dweight = dy.T @ x (U, D), dbias = sum over n of dy (U,), dx = dy @ weight
    (N, D; not computed when ``need_input_grad`` is False).

    **Reference:** ``NumpyBackend.dense_forward`` and ``dense_backward`` in
    ``nbcnn/backends/numpy_ref.py``.
    """

    weighted = True

    def __init__(self, units: int, bias: bool = True, init: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = units
        self.use_bias = bool(bias)
        self.init = check_init(init, "Dense")    # as written; build resolves it: resolved_init
        self.resolved_init, self.resolved_slope = None, 0.0

    def output_shape(self, input_shape):
        expect_rank(self.describe(), input_shape, 1, "features")
        return (self.units,)

    def _initial_params(self, input_shape, rng):
        n_in = input_shape[0]
        params = {"weight": initial_weight(self.resolved_init, (self.units, n_in), n_in,
                                           self.units, rng, self.resolved_slope)}
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
        args = [str(self.units)] + ([] if self.use_bias else ["bias=false"]) \
            + ([] if self.init == "auto" else [f"init={self.init}"])
        return f"dense({','.join(args)})"

    def describe(self):
        return f"Dense({self.units})"
