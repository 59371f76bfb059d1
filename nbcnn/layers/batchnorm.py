"""BatchNorm2D: normalise each channel with the batch's statistics, then scale and shift."""

from __future__ import annotations

import numpy as np

from .base import Layer


class BatchNorm2D(Layer):
    """Per-channel batch normalisation (Ioffe & Szegedy, 2015), PyTorch's names and conventions.

    **Arguments:** ``momentum``: weight of the new batch in the running statistics (in
    [0, 1]); ``eps``: added to the variance (> 0).

    **Parameters:** ``weight`` (gamma, C) and ``bias`` (beta, C), learned; buffers
    ``running_mean`` and ``running_var`` (C), saved but not trained.

    **Shapes:** x (N, C, H, W) -> y like x, each channel normalised over the batch and the
    positions (PyTorch's ``BatchNorm2d``); or, after a Dense layer, x (N, C) -> y like x, each
    unit normalised over the batch alone (PyTorch's ``BatchNorm1d``: the same op on the batch
    viewed as (N, C, 1, 1)). dy like y -> dx like x. Statistics are over the M = N*H*W values
    of each channel (M = N on vectors).

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
        if len(input_shape) not in (1, 3):
            raise ValueError(f"{self.describe()}: expected input of shape (N, C, H, W) or (N, C), "
                             f"got per-example shape {tuple(input_shape)}")
        return tuple(input_shape)

    def _initial_params(self, input_shape, rng):
        c = input_shape[0]
        return {"weight": np.ones(c, np.float32), "bias": np.zeros(c, np.float32)}

    def _initial_buffers(self, input_shape):
        c = input_shape[0]
        return {"running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32)}

    def _forward(self, x, training):
        p, b = self.params, self.buffers
        vectors = len(x.shape) == 2                  # (N, C): seen as (N, C, 1, 1)
        if vectors:
            x = self.backend.reshape(x, (x.shape[0], x.shape[1], 1, 1))
        if training:
            y, self._cache = self.backend.batchnorm2d_forward_train(
                x, p["weight"], p["bias"], b["running_mean"], b["running_var"],
                self.momentum, self.eps)
        else:
            self._cache = None
            y = self.backend.batchnorm2d_forward_eval(x, p["weight"], p["bias"],
                                                      b["running_mean"], b["running_var"], self.eps)
        return self.backend.reshape(y, (y.shape[0], y.shape[1])) if vectors else y

    def _backward(self, dy):
        vectors = len(dy.shape) == 2
        if vectors:
            dy = self.backend.reshape(dy, (dy.shape[0], dy.shape[1], 1, 1))
        dx, dgamma, dbeta = self.backend.batchnorm2d_backward(dy, self._cache, self.params["weight"])
        self.grads = {"weight": dgamma, "bias": dbeta}
        return self.backend.reshape(dx, (dx.shape[0], dx.shape[1])) if vectors else dx

    def config(self):
        return {"momentum": self.momentum, "eps": self.eps}

    def spec(self):
        if (self.momentum, self.eps) == (0.1, 1e-5):
            return "batchnorm"
        return f"batchnorm({self.momentum!r},{self.eps!r})"
