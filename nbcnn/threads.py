"""How many threads the CPU kernels use.

``nbcnn.set_num_threads(n)`` sets both Numba's parallel loops and the BLAS library behind numpy,
so a benchmark against another library can match thread counts. BLAS serves the numpy reference
backend and the Numba backend's optional ``conv_variant = "gemm"``; the Numba dense layers and
default convolutions deliberately do not use it (see ``backends/numba/dense.py``). At import,
``$NBCNN_NUM_THREADS`` (else Numba's own ``$NUMBA_NUM_THREADS``, else all cores) applies.
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

_blas_limit = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                          # not on Linux
        return os.cpu_count() or 1


def max_threads() -> int:
    import numba
    return numba.config.NUMBA_NUM_THREADS


def get_num_threads() -> int:
    import numba
    return numba.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1 .. number of cores Numba was started with)."""
    import numba
    global _blas_limit
    top = max_threads()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= top:
        raise ValueError(f"thread count must be an int from 1 to {top}, got {n!r}")
    numba.set_num_threads(n)
    _blas_limit = threadpool_limits(limits=n, user_api="blas")


def apply_environment() -> None:
    """Apply ``$NBCNN_NUM_THREADS`` if set (called when the Numba backend starts)."""
    value = os.environ.get("NBCNN_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"NBCNN_NUM_THREADS must be an integer, got {value!r}") from None
        set_num_threads(min(n, max_threads()))
