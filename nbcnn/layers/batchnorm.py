"""BatchNorm2D: normalise each channel with the batch's statistics, then scale and shift."""

from __future__ import annotations

import numpy as np

from .base import Layer
from .geometry import expect_rank


class BatchNorm2D(Layer):
    """Per-channel batch normalisation (Ioffe & Szegedy, 2015), PyTorch's names and conventions.

    **Arguments:** ``momentum``: weight of the new batch in the running statistics (in
    [0, 1]); ``eps``: added to the variance (> 0).

    **Parameters:** ``weight`` (gamma, C) and ``bias`` (beta, C), learned; buffers
    ``running_mean`` and ``running_var`` (C), saved but not trained.

    **Shapes:** x (N, C, H, W) -> y like x; dy like y -> dx like x. Statistics are over the
    M = N*H*W values of each channel.

    **Forward**, in training (per channel c)::

        mu = mean(x[:, c]),  var = mean((x[:, c] - mu)^2)          (biased)
        xhat = (x[:, c] - mu) / sqrt(var + eps),  y[:, c] = gamma[c] * xhat + beta[c]
        running_mean = (1 - momentum) * running_mean + momentum * mu
        running_var  = (1 - momentum) * running_var + momentum * var * M / (M - 1)  (unbiased)

    at evaluation: y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta.

    **Backward** (training statistics, per channel)::

        dbeta = sum dy,  dgamma = sum dy * xhat
        dx = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))

    **Reference:** ``NumpyBackend.batchnorm2d_forward_train``, ``batchnorm2d_forward_eval``
    and ``batchnorm2d_backward`` in ``nbcnn/backends/numpy_ref.py``.
    """

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= float(momentum) <= 1:
            raise ValueError(f"BatchNorm2D: momentum must be in [0, 1], got {momentum!r}")
        if not float(eps) > 0:
            raise ValueError(f"BatchNorm2D: eps must be > 0, got {eps!r}")
        self.momentum = float(momentum)
        self.eps = float(eps)

    def output_shape(self, input_shape):
        expect_rank(self.describe(), input_shape, 3, "C, H, W")
        return tuple(input_shape)

    def _initial_params(self, input_shape, rng):
        c = input_shape[0]
        return {"weight": np.ones(c, np.float32), "bias": np.zeros(c, np.float32)}

    def _initial_buffers(self, input_shape):
        c = input_shape[0]
        return {"running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32)}

    def _forward(self, x, training):
        p, b = self.params, self.buffers
        if training:
            y, self._cache = self.backend.batchnorm2d_forward_train(
                x, p["weight"], p["bias"], b["running_mean"], b["running_var"],
                self.momentum, self.eps)
            return y
        self._cache = None
        return self.backend.batchnorm2d_forward_eval(x, p["weight"], p["bias"], b["running_mean"],
                                                     b["running_var"], self.eps)

    def _backward(self, dy):
        dx, dgamma, dbeta = self.backend.batchnorm2d_backward(dy, self._cache, self.params["weight"])
        self.grads = {"weight": dgamma, "bias": dbeta}
        return dx

    def config(self):
        return {"momentum": self.momentum, "eps": self.eps}

    def spec(self):
        if (self.momentum, self.eps) == (0.1, 1e-5):
            return "batchnorm"
        return f"batchnorm({self.momentum!r},{self.eps!r})"
