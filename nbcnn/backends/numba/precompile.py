"""Compiling a training step's kernels on every core at once, the first time.

Numba compiles a kernel on its first call, one kernel at a time under a global lock, so with an
empty cache the first training step of a CNN waits 20-25 s while one core compiles a dozen
kernels. ``compile_step(run)`` instead:

1. runs the step once "dry": ``_jit.call`` records each kernel with its argument types instead of
   running it (the step's outputs are garbage and are thrown away, so ``run`` must work on a
   throw-away copy of the model);
2. leaves alone the kernels already compiled here or in Numba's on-disk cache;
3. starts one worker process per core (``python -m nbcnn.backends.numba.precompile``); each takes
   the next kernel nobody has claimed yet (an exclusive file create is the claim), compiles it
   and so writes it into the shared cache;
4. loads them all here from that cache (compiling here whatever a worker failed to do).

With a warm cache no worker is started and the whole thing costs milliseconds. Workers are
plain subprocesses, not ``multiprocessing``: a spawned multiprocessing child would re-import the
user's ``__main__`` script. They get their tasks as JSON (kernel module and name, argument types
spelled out), never as pickles. ``NBCNN_PARALLEL_COMPILE=0`` turns this off (kernels then compile
lazily, one by one, as before).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numba
import numpy as np
from numba.core import types

from ... import threads
from ..switches import switched_on
from . import _jit

#: seconds to wait for the workers before compiling the rest here
WORKER_TIMEOUT = 900


@contextlib.contextmanager
def recording():
    """Within the block, kernel calls made on this thread through ``_jit.call`` are recorded
    into the list it yields, as (kernel, argument types), and not run."""
    calls: list = []
    previous, _jit.recording.calls = _jit.recording.calls, calls
    try:
        yield calls
    finally:
        _jit.recording.calls = previous


def kernels_of(run) -> list:
    """The distinct (kernel, argument types) pairs ``run()`` calls, in first-call order."""
    with recording() as calls, np.errstate(all="ignore"):
        run()
    seen, out = set(), []
    for fn, sig in calls:
        if (fn, sig) not in seen:
            seen.add((fn, sig))
            out.append((fn, sig))
    return out


def is_compiled(fn, sig) -> bool:
    """Whether ``fn`` is compiled for ``sig`` in this process or in Numba's disk cache. The cache
    check reads the kernel's cache index through Numba internals; if they change, the answer is
    "no" and the kernel is merely compiled again."""
    if sig in fn.overloads:
        return True
    try:
        cache = fn._cache
        return cache._index_key(sig, fn.targetctx.codegen()) in cache._cache_file._load_index()
    except Exception:
        return False


def enabled() -> bool:
    return switched_on("NBCNN_PARALLEL_COMPILE")


def compile_step(run, workers: int | None = None) -> int:
    """Compile every kernel ``run()`` calls (see the module docstring); returns how many were
    not compiled yet."""
    todo = [(fn, sig) for fn, sig in kernels_of(run) if not is_compiled(fn, sig)]
    workers = min(len(todo), workers or threads.available_cores())
    if workers >= 2 and enabled():
        _compile_in_workers(todo, workers)
    for fn, sig in todo:
        fn.compile(sig)                             # a cache load if a worker compiled it
    return len(todo)


def encode_types(sig) -> list:
    """Argument types as JSON-able values: arrays as [dtype, ndim, layout, readonly], scalars
    as their dtype name. Raises ValueError for anything else (or anything that would not decode
    to the same types), and such a kernel is compiled in this process."""
    out = []
    for t in sig:
        if isinstance(t, types.Array):
            out.append([str(t.dtype), t.ndim, t.layout, not t.mutable])
        elif isinstance(t, (types.Integer, types.Float, types.Boolean)):
            out.append(np.dtype(str(t)).name)
        else:
            raise ValueError(f"cannot pass {t} to a compile worker")
    if decode_types(out) != tuple(sig):
        raise ValueError(f"{sig} does not survive encoding")
    return out


def decode_types(encoded) -> tuple:
    out = []
    for e in encoded:
        if isinstance(e, list):
            dtype, ndim, layout, readonly = e
            out.append(types.Array(numba.from_dtype(np.dtype(dtype)), ndim, layout,
                                   readonly=readonly))
        else:
            out.append(numba.from_dtype(np.dtype(e)))
    return tuple(out)


def _compile_in_workers(todo, workers: int) -> None:
    tasks = []
    for fn, sig in todo:
        try:
            tasks.append([fn.py_func.__module__, fn.py_func.__name__, encode_types(sig)])
        except ValueError:
            continue                                # compiled in this process afterwards
    claims = tempfile.mkdtemp(prefix="nbcnn-compile-")
    payload = json.dumps({"claims": claims, "tasks": tasks}).encode()
    procs = []
    try:
        for _ in range(workers):
            proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            proc.stdin.write(payload)
            proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=WORKER_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        pass                                        # what is not in the cache compiles here
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(claims, ignore_errors=True)


def _worker() -> None:
    """Compile the tasks (JSON on stdin) that no other worker has claimed."""
    job = json.loads(sys.stdin.buffer.read())
    claims = job["claims"]
    for i, (module, name, encoded) in enumerate(job["tasks"]):
        try:
            os.close(os.open(os.path.join(claims, str(i)), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue                                # another worker has it
        try:
            getattr(importlib.import_module(module), name).compile(decode_types(encoded))
        except Exception:                           # the parent compiles it, and reports
            pass


if __name__ == "__main__":
    _worker()
