"""How many threads the CPU kernels use, and how processes share the cores.

``nbcnn.set_num_threads(n)`` sets both Numba's parallel loops and the BLAS library behind numpy,
so a benchmark against another library can match thread counts. BLAS serves the numpy reference
backend and the Numba backend's optional ``conv_variant = "gemm"``; the Numba dense layers and
default convolutions deliberately do not use it (see ``backends/numba/dense.py``). At import,
``$NBCNN_NUM_THREADS`` (else Numba's own ``$NUMBA_NUM_THREADS``, else all cores) applies.

**Sharing the cores** (``NBCNN_SHARE_CORES``, on unless 0/off). Two processes that each run a
thread per core on the same cores collapse: a parallel loop ends only when its slowest thread
does, and with twice as many threads as cores some thread of every loop waits a whole scheduler
time slice for a core (two trainings together got 0.11x-0.43x of one alone). A process that
left its thread count at the default (no ``set_num_threads``, ``NBCNN_NUM_THREADS`` or
``NUMBA_NUM_THREADS``) therefore shares: each such process that is running kernels announces it
in a folder of the temporary directory (a file it holds an ``flock`` on and touches while it
computes), and every ``interval`` seconds each one takes cores // (running processes) threads,
at least 1. A lone run keeps every core and pays one clock read per kernel call; when the other
run ends, the cores come back within ``interval`` seconds. An explicit thread count is never
changed. Results do not depend on the thread count (every output element is summed in the
same order whatever the number of threads), so sharing changes speed only."""

from __future__ import annotations

import atexit
import os
import tempfile
import time

from threadpoolctl import threadpool_limits

_blas_limit = None
#: a thread count the user gave in the environment
_explicit_env = bool(os.environ.get("NBCNN_NUM_THREADS", "").strip()
                     or os.environ.get("NUMBA_NUM_THREADS", "").strip())
#: True once the user chose a thread count (then the cores are not shared automatically)
_explicit = _explicit_env
#: the most threads core sharing gives this process (None: every core); see plan_threads
_ceiling = None


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
    global _explicit
    _explicit = True


def plan_threads(n: int) -> None:
    """Use at most ``n`` threads as a plan that core sharing lowers while other nbcnn processes
    run beside this one (a grid's choice for its cells), unlike ``set_num_threads``, whose
    count is kept whatever else runs (a kept count of 2 beside other work waits, in each
    parallel loop, for whichever of its threads the OS has just put aside)."""
    global _ceiling, _explicit
    set_num_threads(n)
    _ceiling = n
    _explicit = _explicit_env
    sharing.next_check = 0.0                        # count the others at the next kernel call


def apply_environment() -> None:
    """Apply ``$NBCNN_NUM_THREADS`` if set (called when the Numba backend starts)."""
    value = os.environ.get("NBCNN_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"NBCNN_NUM_THREADS must be an integer, got {value!r}") from None
        set_num_threads(min(n, max_threads()))


class CoreShare:
    """The running nbcnn processes of this machine, counted through a folder of lock files
    (see the module docstring). ``due()`` is the cheap test the kernel caller makes on every
    call; ``update()`` looks at the folder and sets this thread's Numba thread count."""

    #: seconds between two looks at the folder
    interval = 0.5
    #: a process counts as running while its file was touched this recently (seconds)
    active_for = 2.0

    def __init__(self, folder=None):
        self.folder = folder or os.path.join(tempfile.gettempdir(), "nbcnn-running")
        self.next_check = 0.0
        self.peers = 1
        self._file = None

    def due(self) -> bool:
        return time.monotonic() >= self.next_check

    def enabled(self) -> bool:
        from .backends.switches import switched_on
        return not _explicit and switched_on("NBCNN_SHARE_CORES")

    def _announce(self) -> None:
        """Hold (and touch) this process's lock file; off for good where that is impossible."""
        if self._file is None:
            import fcntl
            os.makedirs(self.folder, exist_ok=True)
            try:
                os.chmod(self.folder, 0o1777)          # every user's runs share one folder
            except OSError:                            # made by another user: already shared
                pass
            f = open(os.path.join(self.folder, str(os.getpid())), "a+")
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.chmod(f.name, 0o644)
            self._file = f
            atexit.register(self._withdraw)
        os.utime(self._file.name)

    def running(self) -> int:
        """Running nbcnn processes, this one included: files touched lately whose lock is held
        (a file whose lock is free belongs to a process that has ended: it is removed)."""
        import fcntl
        now, count = time.time(), 0
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            try:
                recent = now - os.stat(path).st_mtime <= self.active_for
                if name == str(os.getpid()):
                    count += recent
                    continue
                with open(path) as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    except OSError:
                        count += recent                # held: its process is alive
                        continue
                os.remove(path)
            except OSError:                            # vanished meanwhile, or not ours to remove
                continue
        return max(count, 1)

    def _withdraw(self) -> None:
        if self._file is not None:
            try:
                os.remove(self._file.name)
            except OSError:
                pass
            self._file.close()
            self._file = None

    def update(self) -> None:
        self.next_check = time.monotonic() + self.interval
        if not self.enabled():
            return
        try:
            self._announce()
            self.peers = self.running()
        except (OSError, ImportError):                 # no shared temp folder, no flock: alone
            self.next_check = float("inf")
            return
        import numba
        wanted = share_threads(_ceiling or max_threads(), self.peers)
        if numba.get_num_threads() != wanted:
            numba.set_num_threads(wanted)


    def _forget(self) -> None:
        """In a forked child: the inherited file (and its lock) stay the parent's."""
        if self._file is not None:
            self._file.close()                         # the parent's copy keeps the lock
            self._file = None
        self.next_check = 0.0


#: the one CoreShare of this process
sharing = CoreShare()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=sharing._forget)


def share_threads(cores: int, running: int) -> int:
    """Threads for one of ``running`` processes sharing ``cores`` cores."""
    return max(1, cores // max(1, running))


def policy_description() -> str:
    """One line for ``nbcnn info``."""
    if _explicit:
        return "thread count chosen explicitly: cores are not shared automatically"
    if not sharing.enabled():
        return "core sharing off (NBCNN_SHARE_CORES=0)"
    return "cores shared with the other running nbcnn processes (NBCNN_SHARE_CORES)"
