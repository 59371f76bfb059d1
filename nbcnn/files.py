"""File permissions of what nbcnn writes.

Files are written to a temporary name (``tempfile.mkstemp``, always mode 0600) and renamed over
the target, so they would stay private to the user; ``honour_umask`` gives them the mode a plain
``open(path, "w")`` would have (0666 less the umask, e.g. 0644 under umask 022), so others on a
shared machine can read results and models when the user's umask lets them.
"""

from __future__ import annotations

import os
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
