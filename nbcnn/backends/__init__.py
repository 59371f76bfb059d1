"""Backends behind one op contract (see ``base.py``), chosen by name.

``numpy`` is the readable reference, ``numba`` the JIT-compiled parallel CPU kernels (the
default), ``opencl`` the kernel set in ``kernels/`` run through pyopencl; ``opencl:P:D`` picks
platform P, device D.
"""

from __future__ import annotations

import importlib
import os
import threading

import numpy as np

from .base import Backend

#: backend name -> (module, factory attribute)
_FACTORIES = {
    "numpy": ("nbcnn.backends.numpy_ref", "NumpyBackend"),
    "numba": ("nbcnn.backends.numba", "NumbaBackend"),
    "opencl": ("nbcnn.backends.opencl", "OpenCLBackend"),
}

_instances: dict[str, Backend] = {}
_lock = threading.Lock()
_default: str | None = None


def names() -> list[str]:
    """Names accepted by ``get_backend`` (``opencl`` also takes ``opencl:P:D``)."""
    return list(_FACTORIES)


def get_backend(name: str | Backend | None = None) -> Backend:
    """The backend called ``name`` (one shared instance per name); None gives the default."""
    if isinstance(name, Backend):
        return name
    if name is None:
        name = default_backend_name()
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name such as 'numba', got {type(name).__name__}")
    key = name.strip().lower()
    family, _, device = key.partition(":")
    if family not in _FACTORIES:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(names())} "
                         "(opencl also as 'opencl:PLATFORM:DEVICE')")
    if device and family != "opencl":
        raise ValueError(f"backend {name!r}: only opencl takes a device suffix")
    with _lock:
        if key not in _instances:
            module, attr = _FACTORIES[family]
            factory = getattr(importlib.import_module(module), attr)
            _instances[key] = factory(device) if device else factory()
        return _instances[key]


def default_backend_name() -> str:
    """``set_backend``'s choice, else ``$NBCNN_BACKEND``, else ``numba``."""
    return _default or os.environ.get("NBCNN_BACKEND", "").strip() or "numba"


def set_backend(name: str) -> None:
    """Make ``name`` the backend of layers and models created without ``backend=``."""
    get_backend(name)                    # fail now, not at the first layer
    global _default
    _default = name


def to_numpy(a) -> np.ndarray:
    """Any backend's array as a numpy array."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and hasattr(a, "shape"):      # pyopencl.array.Array
        return a.get()
    return np.asarray(a)


def available() -> dict[str, str]:
    """Each backend name -> 'ok' or the reason it cannot be used here."""
    status = {}
    for name in names():
        try:
            backend = get_backend(name)
            status[name] = f"ok ({backend.device_name()})"
        except Exception as exc:          # report, never crash `nbcnn info`
            status[name] = f"unavailable: {exc}".splitlines()[0]
    return status
