"""The one decorator every kernel in this package uses.

``parallel=True`` lets ``prange`` loops run on Numba's thread pool (its size is
``numba.set_num_threads``); ``cache=True`` keeps compiled machine code on disk so a second process
starts fast; ``fastmath`` lets LLVM reorder float32 sums so it can vectorise reductions (it is
left off where it would change results that must match bit for bit, e.g. dropout, or need
IEEE semantics such as exp/log in the loss). The fast-math flags are LLVM's all but ``nnan`` and
``ninf``: LLVM may not assume that no value is NaN or infinite, so a NaN propagates as in the
numpy reference (with them, ``v > 0 ? v : 0`` and ``v != v`` may be folded so NaN vanishes).
"""

import threading

import numba
from numba import njit

from ...threads import sharing as _sharing

#: LLVM fast-math flags of the fast kernels: reassociation and friends, but NaN and infinity kept
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}
#: parallel, cached, fast-math kernel
kernel = njit(parallel=True, cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
#: parallel, cached kernel with strict IEEE float semantics
strict_kernel = njit(parallel=True, cache=True, fastmath=False, nogil=True, error_model="numpy")
#: serial, cached helper (LLVM inlines it into its callers)
helper = njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
#: a helper Numba inlines into every caller before LLVM sees the code (for micro-kernels whose
#: loop must be optimised together with the caller's)
inlined_helper = njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy",
                      inline="always")


#: below this much work an op runs on the calling thread alone: waking the thread pool would
#: cost more than it saves, and on a busy machine a parallel region can wait a whole scheduler
#: time slice for its second core. Work is counted in elements touched by element-wise ops,
#: multiply-adds / 8 for the direct convolution and multiply-adds / 16 for the blocked kernels
#: (roughly: nanoseconds of one core).
SERIAL_WORK = 1 << 16

_thread_fns = None


def _get_thread_fns():
    """(get, set) of Numba's per-thread thread count. Numba's public functions take a lock on
    every call; once the pool is up, its ctypes entry points do the same without it."""
    global _thread_fns
    if _thread_fns is None:
        numba.get_num_threads()                       # starts the pool, binds the entry points
        from numba.np.ufunc import parallel
        get = getattr(parallel, "_get_num_threads", None)
        put = getattr(parallel, "_set_num_threads", None)
        _thread_fns = (get, put) if callable(get) and callable(put) else (
            numba.get_num_threads, numba.set_num_threads)
    return _thread_fns


class _Recording(threading.local):
    """While a dry run records a training step's kernels (``precompile.recording``), ``calls``
    is the list that receives (kernel, argument types) for each call made on that thread,
    which then does not run. Per thread: another thread's real training must not be recorded."""
    calls = None


recording = _Recording()


def call(fn, work, *args):
    """fn(*args), on one thread when ``work`` is small (the thread count is restored after).
    Every ``CoreShare.interval`` seconds it first re-counts the nbcnn processes running on this
    machine and shares the cores with them (``nbcnn.threads``)."""
    calls = recording.calls
    if calls is not None:
        calls.append((fn, tuple(numba.typeof(a) for a in args)))
        return None
    if _sharing.due():
        _sharing.update()
    if work < SERIAL_WORK:
        get, put = _thread_fns or _get_thread_fns()
        threads = get()
        if threads > 1:
            put(1)
            try:
                return fn(*args)
            finally:
                put(threads)
    return fn(*args)
