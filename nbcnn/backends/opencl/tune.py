"""Blocking factors for the kernels: defaults per device type, plus a small auto-tuner.

Placeholder defaults; the auto-tuner (timing a few variants once per device and shape, cached
in a JSON file in the user cache dir) fills in below.
"""

from __future__ import annotations

DEFAULT_GEMM = {"TM": 32, "TN": 32, "TK": 16, "RM": 4, "RN": 4}


class Tuner:
    def __init__(self, backend, enabled=None):
        self.backend = backend
        self.enabled = bool(enabled)

    def conv_ob(self, which: str, shape: tuple) -> int:
        return 8

    def gemm_tiles(self, shape: tuple) -> dict:
        return dict(DEFAULT_GEMM)
