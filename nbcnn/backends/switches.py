"""Environment switches of the backends: on/off switches that are on unless set to 0, false, no
or off (``NBCNN_PARALLEL_COMPILE``, ``NBCNN_OPENCL_AUTOTUNE``), and switches that take one of a
few values (``NBCNN_VECTOR_WIDTH``)."""

import os


def switched_on(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def choice(name: str, allowed, default: str, environ=None) -> str:
    """The value of the environment switch ``name``, one of ``allowed`` (``default`` if unset)."""
    value = (os.environ if environ is None else environ).get(name, "").strip().lower() or default
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value
