"""Blocking factors for the kernels: defaults per device type, and a small auto-tuner.

For a convolution or matrix multiply big enough for the choice to matter (at least
``MIN_TUNE_FLOP``), the tuner times a few variants of the kernel once per device and shape and
keeps the fastest in ``~/.cache/nbcnn/opencl/autotune.json`` (``$XDG_CACHE_HOME`` respected), so
later runs reuse the choice without timing; the cache is keyed by platform, device name and
driver version, so a new driver re-tunes, and each choice names the candidates it beat, so a
version of nbcnn with other kernels re-tunes too. Smaller ops, and every op when tuning is off
(``NBCNN_OPENCL_AUTOTUNE=0`` or ``OpenCLBackend(autotune=False)``), use the defaults below.

Variants:
* conv forward (also the stride-1 input gradient): OB output channels x PX columns per work-item,
  on a zero-padded copy of the input (PAD) or testing the image's edges, or for stride 1 OB
  channels x PR vectors of PX outputs on the flattened padded plane (conv2d_fwd_plane);
* conv weight gradient: VO filters (one vector) x TB taps per work-item on channels-last dy
  (conv2d_bwd_dw_vec), DOB filters x QB taps x DPX-wide vectors of columns (conv2d_bwd_dw), or
  for stride 1 DOB filters x TB taps along dy's rows in RX-wide vectors (conv2d_bwd_dw_rows);
* matrix multiply: TM x TN tile per work-group, TK deep, RM x RN per work-item (GPUs), or the
  CPU forms without local memory (CPU_GEMM_CANDIDATES).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

from ..switches import switched_on

ENV_AUTOTUNE = "NBCNN_OPENCL_AUTOTUNE"
#: ops smaller than this many floating-point operations are not worth timing
MIN_TUNE_FLOP = 1e8

#: conv forward: OB filters x PX columns per work-item, PAD: on a zero-padded copy of x
#: (conv2d_fwd_padded, no bounds tests; the CPU default) or testing the edges (conv2d_fwd)
FWD_CANDIDATES = [{"OB": 16, "PX": 8, "PAD": 1}, {"OB": 16, "PX": 16, "PAD": 1},
                  {"OB": 8, "PX": 16, "PAD": 1}, {"OB": 8, "PX": 8, "PAD": 1}, {"OB": 8, "PX": 4, "PAD": 0},
                  {"OB": 8, "PX": 8, "PAD": 0}, {"OB": 16, "PX": 8, "PAD": 0}]
#: stride 1 only: conv2d_fwd_plane, OB filters x PR vectors of PX consecutive outputs of the
#: flattened padded plane (no row edge splits a vector: the CPU default for planes of at most
#: half a vector's width, where a row block would compute as many dropped columns as real ones)
FWD_PLANE_CANDIDATES = [{"OB": 8, "PX": 16, "PR": 1}, {"OB": 4, "PX": 16, "PR": 3},
                        {"OB": 8, "PX": 8, "PR": 2}]
#: conv weight gradient: conv2d_bwd_dw_vec (VO filters x TB taps, the CPU default) or
#: conv2d_bwd_dw (DOB filters x QB taps x DPX columns, the GPU default)
DW_CANDIDATES = [{"VO": 16, "TB": 9}, {"VO": 8, "TB": 9}, {"VO": 16, "TB": 3},
                 {"DOB": 8, "QB": 1, "DPX": 4}, {"DOB": 8, "QB": 3, "DPX": 4},
                 {"DOB": 4, "QB": 3, "DPX": 8}]
#: stride 1 only: conv2d_bwd_dw_rows (DOB filters x TB taps, RX-wide vectors along dy's rows;
#: the CPU default for layers of few input channels, where conv2d_bwd_dw_vec's channels-last
#: copy of dy costs more than its products)
DW_ROWS_CANDIDATES = [{"DOB": 2, "TB": 9, "RX": 16}, {"DOB": 4, "TB": 3, "RX": 16},
                      {"DOB": 4, "TB": 6, "RX": 16}, {"DOB": 2, "TB": 9, "RX": 8}]
#: input channels x taps up to which a stride-1 weight gradient defaults to the rows kernel
DW_ROWS_MAX_TAPS = 36
GEMM_CANDIDATES = [
    {"TM": 32, "TN": 32, "TK": 16, "RM": 4, "RN": 4},
    {"TM": 64, "TN": 64, "TK": 16, "RM": 8, "RN": 8},
    {"TM": 64, "TN": 64, "TK": 32, "RM": 4, "RN": 8},
    {"TM": 32, "TN": 64, "TK": 16, "RM": 4, "RN": 8},
]
#: CPU forms (no local memory): dot products along k when A and B are contiguous along k,
#: else rows of B-vectors when B is contiguous along n; "simple" (one output per work-item)
#: for other strides
CPU_GEMM_CANDIDATES = {
    "dot": [{"KIND": "dot", "RM": 4, "RN": 4, "VK": 16}, {"KIND": "dot", "RM": 2, "RN": 4, "VK": 16},
            {"KIND": "dot", "RM": 4, "RN": 4, "VK": 8}],
    "rows": [{"KIND": "rows", "RM": 8, "VN": 16}, {"KIND": "rows", "RM": 4, "VN": 16},
             {"KIND": "rows", "RM": 8, "VN": 8}],
    "any": [{"KIND": "simple"}],
}
#: on CPU devices, products of other strides of at most this many multiply-adds run on
#: gemm_simple (a tiled work-group with local memory and barriers costs far more there)
SIMPLE_GEMM_MAX = 1 << 24
#: safe choice for any device (64 work-items, 4 KiB of local memory)
GEMM_SAFE = {"TM": 16, "TN": 16, "TK": 16, "RM": 2, "RN": 2}
#: the defines the grouped / depthwise gather kernels are built with (they use no blocking)
GROUPED_DEFINES = {"OB": 8}


def fwd_candidates(g) -> list[dict]:
    """The forward blockings that apply to the plain convolution ``g``."""
    return FWD_CANDIDATES + (FWD_PLANE_CANDIDATES if g.sh == g.sw == 1 else [])


def dw_candidates(g) -> list[dict]:
    """The weight-gradient kernels and blockings that apply to the plain convolution ``g``."""
    return DW_CANDIDATES + (DW_ROWS_CANDIDATES if g.sh == g.sw == 1 else [])


#: the field of a cached choice naming the candidates it was chosen among (``_digest``)
AMONG = "among"


def _digest(candidates) -> str:
    """A short name for a list of candidates: a cached choice counts only for the same list."""
    text = json.dumps(candidates, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _choice(entry: dict) -> dict:
    """A cached entry without its AMONG field: the blocking itself."""
    return {k: v for k, v in entry.items() if k != AMONG}


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nbcnn" / "opencl" / "autotune.json"


class Tuner:
    """Chooses blocking factors for one backend (one device)."""

    def __init__(self, backend, enabled: bool | None = None):
        self.backend = backend
        self.enabled = switched_on(ENV_AUTOTUNE) if enabled is None else bool(enabled)
        dev = backend.device
        self.device_key = f"{dev.platform.name.strip()} | {dev.name.strip()} | {dev.driver_version.strip()}"
        self._lock = threading.RLock()
        self._choices: dict[str, dict] = {}
        self._loaded = False
        max_wg = int(dev.max_work_group_size)
        local = int(dev.local_mem_size)
        self.gemm_ok = [c for c in GEMM_CANDIDATES if self._gemm_fits(c, max_wg, local)] or [GEMM_SAFE]
        #: the device's preferred float vector width (16 on AVX-512 CPUs, 1 to 4 on most GPUs)
        self.vector_width = int(dev.preferred_vector_width_float) or 1

    # ---- defaults -------------------------------------------------------------------------
    @staticmethod
    def _gemm_fits(c, max_wg, local):
        return ((c["TN"] // c["RN"]) * (c["TM"] // c["RM"]) <= max_wg
                and 4 * c["TK"] * (c["TM"] + c["TN"]) <= local)

    def _default_fwd(self, g):
        if self.backend.is_gpu:
            return {"OB": 8, "PX": 4, "PAD": 0}
        px = 16 if self.vector_width >= 16 else 8
        if g.sh == g.sw == 1 and 2 * g.ow <= px:
            return {"OB": 8, "PX": px, "PR": 1 if px == 16 else 2}
        return {"OB": 16 if g.o >= 16 else 8, "PX": px, "PAD": 1}

    def _default_dw(self, g):
        if self.backend.is_gpu:
            return {"DOB": 8, "QB": 1, "DPX": 4}
        wide = self.vector_width >= 16
        if g.sh == g.sw == 1 and g.c * g.kh * g.kw <= DW_ROWS_MAX_TAPS:
            return {"DOB": 2, "TB": 9, "RX": 16 if wide else 8}
        return {"VO": 16 if g.o > 8 and wide else 8, "TB": 9}

    def _default_gemm(self, shape, layout):
        if not self.backend.is_gpu:
            m, n, k = shape
            if layout != "any":
                cand = dict(CPU_GEMM_CANDIDATES[layout][0])
                width = "VK" if layout == "dot" else "VN"
                cand[width] = 16 if self.vector_width >= 16 else 8
                return cand
            if m * n * k <= SIMPLE_GEMM_MAX:
                return {"KIND": "simple"}
        pref = GEMM_CANDIDATES[0] if self.backend.is_gpu else GEMM_CANDIDATES[2]
        return dict(pref if pref in self.gemm_ok else self.gemm_ok[0])

    # ---- choices --------------------------------------------------------------------------
    # Each takes the op's geometry and ``run``, a callable that enqueues the op with a given
    # candidate (on the op's own arrays): the tuner times it, and never calls the backend.
    def conv_fwd(self, g, run) -> dict:
        """OB x PX of conv2d_fwd for the plain convolution ``g``."""
        return self._choose("conv_fwd", g.key(), 2.0 * g.multiply_adds, self._default_fwd(g),
                            fwd_candidates(g), run)

    def conv_dw(self, g, run) -> dict:
        """The weight gradient's kernel and blocking for the plain convolution ``g``."""
        return self._choose("conv_dw", g.key(), 2.0 * g.multiply_adds, self._default_dw(g),
                            dw_candidates(g), run)

    def gemm_tiles(self, shape: tuple, layout: str, run) -> dict:
        """The matrix multiply's kernel and blocking for (m, n, k) and the strides' ``layout``
        (dot, rows or any: see CPU_GEMM_CANDIDATES)."""
        m, n, k = shape
        candidates = self.gemm_ok + CPU_GEMM_CANDIDATES[layout]
        return self._choose("gemm", ",".join(map(str, (*shape, layout))), 2.0 * m * n * k,
                            self._default_gemm(shape, layout), candidates, run)

    def chosen(self) -> dict:
        """Every choice made or loaded for this device so far, by op and shape."""
        with self._lock:
            self._load()
            return {k: _choice(v) for k, v in sorted(self._choices.items()) if isinstance(v, dict)}

    def describe(self) -> list[str]:
        """What ``nbcnn info`` shows: the device's limits, the defaults for a typical layer
        (64 filters of 3x3 on 32 channels of 28x28, batch 64; dense 64 x 128 x 1024) and every
        choice the tuner made or loaded for this device."""
        from ..geometry import ConvGeometry

        dev = self.backend.device
        g = ConvGeometry(64, 32, 28, 28, 64, 3, 3, 1, 1, 1, 1, 1, 1)
        fmt = lambda t: " ".join(f"{k}={v}" for k, v in t.items())       # noqa: E731
        chosen = self.chosen()
        lines = [
            f"device key: {self.device_key} (a new driver version re-tunes)",
            f"limits: float vector width {self.vector_width}, work-group <= "
            f"{int(dev.max_work_group_size)}, local memory {int(dev.local_mem_size) // 1024} KiB",
            f"auto-tuning: {'on' if self.enabled else 'off'} ({ENV_AUTOTUNE}), ops of "
            f">= {MIN_TUNE_FLOP:.0e} FLOP; cache {cache_path()} ({len(chosen)} tuned here)",
            f"defaults: conv forward {fmt(self._default_fwd(g))}; conv weight gradient "
            f"{fmt(self._default_dw(g))}; dense forward "
            f"{fmt(self._default_gemm((64, 128, 1024), 'dot'))}; dense gradients "
            f"{fmt(self._default_gemm((128, 1024, 64), 'rows'))}",
        ]
        lines += [f"tuned {key}: {fmt(t)}" for key, t in chosen.items()]
        return lines

    def _choose(self, op, shape_key, flop, default, candidates, run):
        if not self.enabled or flop < MIN_TUNE_FLOP or len(candidates) < 2:
            return default
        key = f"{op}:{shape_key}"
        among = _digest(candidates)
        with self._lock:
            self._load()
            hit = self._choices.get(key)
            # a choice made among other candidates (another nbcnn version) re-tunes
            if isinstance(hit, dict) and hit.get(AMONG) == among:
                return _choice(hit)
            try:
                times = [(self._best_of(lambda: run(dict(cand))), i)
                         for i, cand in enumerate(candidates)]
                best = dict(candidates[min(times)[1]])
            except Exception:                         # noqa: BLE001 - never fail an op for tuning
                best = default
            self._choices[key] = dict(best, **{AMONG: among})
            self._save()
            return dict(best)

    # ---- timing ---------------------------------------------------------------------------
    def _best_of(self, fn, reps=3) -> float:
        fn()
        self.backend.synchronize()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            self.backend.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best

    # ---- persistence ----------------------------------------------------------------------
    def _load(self):
        if self._loaded:
            return
        self._loaded = True
        try:
            data = json.loads(cache_path().read_text(encoding="utf-8"))
            self._choices.update(data.get(self.device_key, {}))
        except (OSError, ValueError, AttributeError):
            pass

    def _save(self):
        path = cache_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    data = {}
            except (OSError, ValueError):
                data = {}
            data.setdefault(self.device_key, {}).update(self._choices)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass                                       # a read-only home only costs re-tuning
