"""Shared fixtures: the reference backend, backends under test, and random arrays (the
backend-against-reference check itself is in helpers.py)."""

from __future__ import annotations

import numpy as np
import pytest

from nbcnn.backends import get_backend
from nbcnn.backends.numpy_ref import NumpyBackend

from helpers import close as assert_close, randn  # noqa: F401 - re-exported for the tests

#: backends checked against the numpy reference
FAST_BACKENDS = ["numba", "opencl"]
#: every backend the op tests check against the float64 reference: numba with every op on the
#: thread pool and every op on the calling thread, and numpy itself in float32
OP_BACKENDS = ["numpy32", "numba-parallel", "numba-serial", "opencl"]


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


@pytest.fixture(params=OP_BACKENDS)
def backend(request, monkeypatch):
    """Each backend in turn, numba on both its parallel and its single-thread path."""
    if request.param == "numpy32":
        return NumpyBackend(np.float32)
    if request.param.startswith("numba-"):
        numba = backend_or_skip("numba")
        from nbcnn.backends.numba import _jit
        monkeypatch.setattr(_jit, "SERIAL_WORK",
                            0 if request.param == "numba-parallel" else 1 << 62)
        return numba
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

