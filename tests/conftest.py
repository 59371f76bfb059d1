"""Shared fixtures: the reference backend, backends under test, and random arrays."""

from __future__ import annotations

import numpy as np
import pytest

from nbcnn.backends import get_backend
from nbcnn.backends.numpy_ref import NumpyBackend

#: backends checked against the numpy reference
FAST_BACKENDS = ["numba", "opencl"]


def backend_or_skip(name):
    """The backend called ``name``, or a clean skip saying why it cannot run here."""
    try:
        return get_backend(name)
    except (ImportError, RuntimeError, OSError) as exc:
        pytest.skip(f"backend {name!r} unavailable here: {str(exc).splitlines()[0]}")


@pytest.fixture(params=FAST_BACKENDS)
def fast(request):
    """Each non-reference backend in turn."""
    return backend_or_skip(request.param)


@pytest.fixture
def ref():
    return NumpyBackend(np.float32)


@pytest.fixture
def ref64():
    """float64 reference, for finite-difference checks."""
    return NumpyBackend(np.float64)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def assert_close(got, want, rtol=1e-4, atol=1e-5, what=""):
    """float32 tolerance scaled to the magnitude of the reference."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)
