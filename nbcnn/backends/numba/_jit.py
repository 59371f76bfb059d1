"""The one decorator every kernel in this package uses.

``parallel=True`` lets ``prange`` loops run on Numba's thread pool (its size is
``numba.set_num_threads``); ``cache=True`` keeps compiled machine code on disk so a second process
starts fast; ``fastmath`` lets LLVM reorder float32 sums so it can vectorise reductions (it is
left off where it would change results that must match bit for bit, e.g. dropout, or need
IEEE semantics such as exp/log in the loss).
"""

import numba
from numba import njit

#: parallel, cached, fast-math kernel
kernel = njit(parallel=True, cache=True, fastmath=True, nogil=True)
#: parallel, cached kernel with strict IEEE float semantics
strict_kernel = njit(parallel=True, cache=True, fastmath=False, nogil=True)
#: serial, cached helper (LLVM inlines it into its callers)
helper = njit(cache=True, fastmath=True, nogil=True)


#: below this much work (elements touched, or multiply-adds) an op runs on the calling thread
#: alone: waking the thread pool would cost more than it saves, and on a busy machine a parallel
#: region can wait a whole scheduler time slice for a second core.
SERIAL_WORK = 1 << 16


def call(fn, work, *args):
    """fn(*args), on one thread when ``work`` is small (the thread count is restored after)."""
    if work < SERIAL_WORK:
        threads = numba.get_num_threads()
        if threads > 1:
            numba.set_num_threads(1)
            try:
                return fn(*args)
            finally:
                numba.set_num_threads(threads)
    return fn(*args)


