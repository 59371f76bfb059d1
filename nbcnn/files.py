"""How nbcnn writes files: atomically, with the permissions the umask gives.

Every file (results, models, checkpoints) is written by ``atomic_write``: to a temporary name
beside the target (``tempfile.mkstemp``, always mode 0600), flushed, fsync'ed and renamed over the
target, so a reader sees the old file or the whole new one. ``honour_umask`` gives the file the
mode a plain ``open(path, "w")`` would have (0666 less the umask, e.g. 0644 under umask 022), so
others on a shared machine can read results and models when the user's umask lets them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading

_lock = threading.Lock()


def umask() -> int:
    """The process's umask (read from /proc where there is one, so it is never changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _lock:                       # set and put back at once: the only way to read it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def honour_umask(fd: int) -> None:
    """Give the open file ``fd`` (made by mkstemp) the mode ``open()`` would: 0666 & ~umask."""
    os.fchmod(fd, 0o666 & ~umask())


def atomic_write(path, data, make_folder: bool = True) -> None:
    """Write ``data`` (bytes, text, or a function that writes into the binary file it is
    given, e.g. ``lambda f: np.savez(f, ...)``) to ``path`` so that readers see the old file or
    the whole new one, with the mode ``open`` would give it under the umask. ``make_folder``:
    create the folder if it is missing (else FileNotFoundError)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if make_folder:
        os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        honour_umask(fd)
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):       # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
