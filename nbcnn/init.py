"""Weight initialisation: He for layers that feed the ReLU family, Glorot otherwise.

Every draw comes from a ``numpy.random.Generator`` handed down from the model's one ``seed``.
"""

from __future__ import annotations

import math

import numpy as np


def he_normal(shape, fan_in: int, rng: np.random.Generator, negative_slope: float = 0.0):
    """N(0, gain^2 / fan_in) with gain^2 = 2 / (1 + slope^2): keeps the activations' variance
    constant through ReLU (He et al., 2015)."""
    std = math.sqrt(2.0 / (1.0 + negative_slope ** 2) / fan_in)
    return (rng.standard_normal(shape) * std).astype(np.float32)


def glorot_uniform(shape, fan_in: int, fan_out: int, rng: np.random.Generator):
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


SCHEMES = ("auto", "he", "glorot")


def check_init(init, owner: str) -> str:
    """``init`` once it is one of ``SCHEMES``; a ValueError naming ``owner`` otherwise."""
    if init not in SCHEMES:
        raise ValueError(f"{owner}: init must be one of {', '.join(SCHEMES)}, got {init!r}")
    return init


def resolve_init(init: str, followed_by=None) -> tuple[str, float]:
    """The scheme and LeakyReLU slope a weighted layer draws its weights with, from its
    ``init`` and the activation or weighted layer its output meets first (``followed_by``,
    None when nothing follows): 'he' and 'glorot' as written (slope 0); 'auto' is He, with the
    slope of a LeakyReLU, when ``followed_by`` is in the ReLU family, Glorot otherwise. So a
    layer used on its own (nothing follows it) is Glorot, and the same layer in a model before a
    ReLU is He: one rule, applied when the layer is built."""
    if init != "auto":
        return init, 0.0
    if getattr(followed_by, "kind", None) in ("relu", "leaky_relu"):
        return "he", float(followed_by.alpha)
    return "glorot", 0.0


def initial_weight(scheme: str, shape, fan_in: int, fan_out: int, rng, negative_slope=0.0):
    """Draw a weight tensor with ``scheme`` 'he' or 'glorot'."""
    if scheme == "he":
        return he_normal(shape, fan_in, rng, negative_slope)
    if scheme == "glorot":
        return glorot_uniform(shape, fan_in, fan_out, rng)
    raise ValueError(f"unknown init scheme {scheme!r}; expected 'he', 'glorot' or 'auto'")
