"""What CPU this is: its model, its widest vector instructions, and an estimate of its peak.

Read from ``/proc/cpuinfo`` on Linux (``platform`` elsewhere, without flags). Nothing here imports
Numba, so it can run before Numba is configured (``backends/numba_env.py``).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

#: vector instruction sets, widest first: (name, CPU flag, vector bits)
VECTOR_ISAS = (("AVX-512", "avx512f", 512), ("AVX2", "avx2", 256), ("AVX", "avx", 256),
               ("SSE2", "sse2", 128))


@dataclass(frozen=True)
class CPU:
    """One machine's processor, as far as the operating system tells."""
    model: str
    vendor: str = ""
    family: int | None = None
    mhz: float | None = None            # the clock /proc/cpuinfo reports (often the base clock)
    flags: frozenset = field(default_factory=frozenset)

    @property
    def vector_isa(self) -> str:
        """The widest vector instruction set: 'AVX-512', 'AVX2', 'AVX', 'SSE2', or '' if unknown."""
        return next((name for name, flag, _ in VECTOR_ISAS if flag in self.flags), "")

    @property
    def vector_bits(self) -> int | None:
        return next((bits for _, flag, bits in VECTOR_ISAS if flag in self.flags), None)

    @property
    def has_fma(self) -> bool:
        return "fma" in self.flags

    def fma_lanes_per_cycle(self) -> int | None:
        """float32 lanes of fused multiply-add one core issues per cycle, by an assumption (not
        a measurement): two FMA pipes of the widest vector width (Intel since Haswell, AMD Zen
        2/3), except AMD family 25 (Zen 4) whose AVX-512 runs on two 256-bit pipes. None without
        FMA or vector flags."""
        if not self.has_fma or not self.vector_bits:
            return None
        pipe_bits = 256 if (self.vendor == "AuthenticAMD" and self.family == 25) else self.vector_bits
        return 2 * pipe_bits // 32

    def peak_estimate_gflops(self, cores: int) -> float | None:
        """An ESTIMATE of float32 peak GFLOP/s on ``cores`` cores: cores x clock x FMA lanes per
        cycle x 2 FLOPs, at the clock /proc/cpuinfo reports (turbo and AVX-512 clock offsets
        are not known here). None when the clock or the FMA width is unknown."""
        lanes = self.fma_lanes_per_cycle()
        if lanes is None or not self.mhz:
            return None
        return cores * self.mhz * 1e-3 * lanes * 2

    def describe(self) -> str:
        """'AMD EPYC (AVX-512)', for table headers."""
        return f"{self.model} ({self.vector_isa or 'vector width unknown'})"


def parse_cpuinfo(text: str) -> CPU:
    """The first processor of a ``/proc/cpuinfo`` text (x86 keys; 'Processor'/'Features' on ARM)."""
    first = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip().lower(), value.strip())
    model = first.get("model name") or first.get("processor") or platform.processor() or "unknown CPU"
    family = first.get("cpu family", "")
    mhz = first.get("cpu mhz", "")
    try:
        mhz = float(mhz) or None
    except ValueError:
        mhz = None
    flags = frozenset((first.get("flags") or first.get("features") or "").split())
    return CPU(model=model, vendor=first.get("vendor_id", ""),
               family=int(family) if family.isdigit() else None, mhz=mhz, flags=flags)


def this_cpu(path: str = "/proc/cpuinfo") -> CPU:
    """This machine's CPU (model from ``platform`` and no flags where ``path`` is unreadable)."""
    try:
        with open(path) as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return CPU(model=platform.processor() or platform.machine() or "unknown CPU")


def has_avx512() -> bool:
    return "avx512f" in this_cpu().flags

