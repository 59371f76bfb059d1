"""Dropout: zero a random fraction of activations while training."""

from __future__ import annotations

import numpy as np

from .base import Layer


class Dropout(Layer):
    """Inverted dropout.

    **Arguments:** ``p``: the probability in [0, 1) of zeroing a value (in training).

    **Shapes:** x (any) -> y like x; dy like y -> dx like x.

    **Forward**, in training: y = x * mask, with mask = 1/(1-p) where a uniform draw u >= p
    (kept, probability 1-p) and 0 elsewhere, so E[y] = x; at evaluation (and for p = 0) the
    layer is the identity, y = x. **Backward:** dx = dy * mask (dx = dy for the identity).

    Masks come from a counter-based hash (``backends.base.dropout_uniform``) seeded per call
    from the layer's generator, so every backend draws the same mask for the same seed.

    **Reference:** ``NumpyBackend.dropout_forward`` and ``dropout_backward`` in
    ``nbcnn/backends/numpy_ref.py``.
    """

    def __init__(self, p: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= float(p) < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = float(p)
        self._rng = None

    def build(self, input_shape, backend, rng, **kwargs):
        """``Layer.build``; the layer's own mask generator is drawn from ``rng`` first."""
        self._rng = np.random.default_rng(rng.integers(2 ** 63))
        return super().build(input_shape, backend, rng, **kwargs)

    def _forward(self, x, training):
        if not training or self.p == 0:
            self._cache = "identity"
            return x
        seed = int(self._rng.integers(2 ** 32))
        y, self._cache = self.backend.dropout_forward(x, self.p, seed)
        return y

    def _backward(self, dy):
        if isinstance(self._cache, str):
            return dy
        return self.backend.dropout_backward(dy, self._cache)

    def config(self):
        return {"p": self.p}

    def spec(self):
        return f"dropout({self.p!r})"
