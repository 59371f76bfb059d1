"""Killing a training process half-way, for the tests of continuing from a checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from nbcnn import checkpoint as ckpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kill_once_checkpointed(cmd, checkpoint, epochs=2, timeout=180) -> int:
    """Start ``cmd`` (in the repository root), SIGKILL it as soon as ``checkpoint`` holds
    ``epochs`` epochs, and return how many epochs the checkpoint holds after the kill. Fails if
    the process ended on its own first: then nothing was interrupted."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoint.exists() and len(ckpt.load(checkpoint)[0]["history"]) >= epochs:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, \
        f"the run finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.stderr.close()
    return len(ckpt.load(checkpoint)[0]["history"])
