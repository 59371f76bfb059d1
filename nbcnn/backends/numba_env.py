"""What nbcnn sets in the environment before Numba is imported, and why.

Numba reads both settings below once per process: the CPU features when it is imported (its
code generator for the CPU is made then, so setting them any later has no effect), the thread
pool's wait policy when the pool's OpenMP library starts. ``nbcnn/__init__.py`` therefore calls
``prepare()`` before any module of nbcnn imports Numba. Each setting is left alone when the user
has set the variable it would write, and child processes (the compile workers, the grid's
cells) inherit the same environment, so they compile for the same features and so share the
same on-disk cache entries.

**Vector width** (``NBCNN_VECTOR_WIDTH=auto|256|512``, default ``auto``). LLVM tunes many
AVX-512 CPUs (Intel Ice Lake server, Sapphire Rapids) to prefer 256-bit vectors
(``prefer-256-bit``), so Numba's loops use half the registers' width there. ``auto`` asks for
512-bit vectors where the CPU has AVX-512 and changes nothing elsewhere; ``256`` forces 256-bit
vectors (to compare, or for CPUs whose clock drops under 512-bit code); ``512`` is ``auto`` that
warns where AVX-512 is absent. It is done by writing ``NUMBA_CPU_FEATURES`` = the host's
features (as Numba itself would use them) plus ``-prefer-256-bit`` or ``+prefer-256-bit``. This
is per process, not per kernel: Numba has one code generator per process with one feature
string, and no option of ``@njit`` reaches LLVM's function attributes (an IR attribute
``prefer-vector-width`` would be per function, but Numba's cache key, which holds the feature
string, would not tell such variants apart). So other Numba code in the same process gets the
same width. Nothing is written when the user set ``NUMBA_CPU_FEATURES``, ``NUMBA_CPU_NAME`` or
``NUMBA_ENABLE_AVX``, or when Numba was imported before nbcnn (``width()`` then reports
what Numba actually uses). Numba's cache key includes the feature string: switching adds cache
entries and invalidates none. The explicit-SIMD kernels (``numba/simd.py``) size their vectors
from the same width.

**Waiting threads** (``NBCNN_THREAD_WAIT=auto|spin|passive|N``, default ``auto``). Between two
parallel loops Numba's pool threads spin for a while, then sleep. Numba picks the first of its
threading layers that loads: TBB (its own spin-then-sleep scheduler), OpenMP, then workqueue
(Numba's simple pool, documented as not thread-safe: two threads launching parallel kernels at
once abort the process, so nbcnn does not choose it). GNU OpenMP (libgomp) spins 300,000 times
before it sleeps unless told otherwise (``GOMP_SPINCOUNT``; 0 under ``OMP_WAIT_POLICY=PASSIVE``,
30 billion under ``ACTIVE``), and only 100 when *one process* has more OpenMP threads than
CPUs: two processes of one thread per core each look uncrowded to both, and both spin in full.
Intel's OpenMP spins for ``KMP_BLOCKTIME`` (200 ms by default). A lone run wants the spin (the
next kernel of a training step comes microseconds later); two runs on the same cores want none.
nbcnn's answer to two runs is to give each fewer threads (``nbcnn.threads``: processes left at
their default thread count share the cores), so ``auto`` keeps the runtime's own default, which
a lone run is tuned for.
``passive`` sets ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once), ``spin`` ``OMP_WAIT_POLICY=ACTIVE``,
and a number N spins N times then sleeps (``GOMP_SPINCOUNT=N``, GNU OpenMP; for Intel's set
``KMP_BLOCKTIME`` in milliseconds yourself). Variables the user set win.
"""

from __future__ import annotations

import os
import sys
import warnings

from .switches import choice

VECTOR_WIDTHS = ("auto", "256", "512")
_NUMBA_CPU_VARS = ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME", "NUMBA_ENABLE_AVX")
#: the NUMBA_CPU_FEATURES value nbcnn wrote (children inherit both: they tell nbcnn's own
#: setting, which a child's NBCNN_VECTOR_WIDTH may change, from the user's, which it may not)
_MARK = "NBCNN_SET_NUMBA_CPU_FEATURES"

#: what prepare() decided, for ``nbcnn info``
decisions: dict = {}


def features_for_width(width: str, host_features: str, has_avx512: bool) -> str | None:
    """The NUMBA_CPU_FEATURES value for NBCNN_VECTOR_WIDTH=``width`` (None: leave Numba's own).

    ``host_features`` is LLVM's feature string of the host ('+avx2,+fma,...')."""
    if width == "256":
        return f"{host_features},+prefer-256-bit"
    if has_avx512:                                            # auto or 512
        return f"{host_features},-prefer-256-bit"
    return None


def wait_environment(policy: str) -> dict:
    """The environment variables for NBCNN_THREAD_WAIT=``policy`` (see the module docstring)."""
    if policy == "auto":
        return {}
    if policy == "passive":
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    if policy == "spin":
        return {"OMP_WAIT_POLICY": "ACTIVE"}
    return {"GOMP_SPINCOUNT": str(int(policy))}


def _thread_wait_policy(env) -> str:
    value = env.get("NBCNN_THREAD_WAIT", "auto").strip().lower() or "auto"
    if value in ("auto", "spin", "passive") or value.isdigit():
        return value
    raise ValueError(f"NBCNN_THREAD_WAIT must be auto, spin, passive or a spin count, "
                     f"got {value!r}")


def decide(env, numba_imported: bool, has_avx512: bool, host_features) -> tuple[dict, dict]:
    """(variables to set, what was decided) for the environment ``env``, without changing it.
    ``host_features()`` gives LLVM's feature string of the host (called only when needed)."""
    width = choice("NBCNN_VECTOR_WIDTH", VECTOR_WIDTHS, "auto", env)
    wait = _thread_wait_policy(env)
    updates = {k: v for k, v in wait_environment(wait).items() if k not in env}
    notes = {"vector_width_asked": width, "thread_wait": wait}
    if numba_imported:
        notes["vector_width_note"] = "Numba was imported before nbcnn: its own features are used"
    elif any(v in env for v in _NUMBA_CPU_VARS) and not _inherited_from_nbcnn(env):
        notes["vector_width_note"] = "the user's NUMBA_CPU_* settings are used"
    else:
        features = features_for_width(width, host_features(), has_avx512) \
            if (width == "256" or has_avx512) else None
        if features is not None:
            updates["NUMBA_CPU_FEATURES"] = updates[_MARK] = features
            notes["vector_width_note"] = "set by nbcnn through NUMBA_CPU_FEATURES"
        else:
            notes["vector_width_note"] = "no AVX-512: the CPU's widest vectors"
            if _inherited_from_nbcnn(env):                  # a parent's choice, not this one's
                updates["NUMBA_CPU_FEATURES"] = updates[_MARK] = host_features()
    return updates, notes


def _inherited_from_nbcnn(env) -> bool:
    """NUMBA_CPU_FEATURES came from nbcnn in a parent process (then this process's own
    NBCNN_VECTOR_WIDTH decides again), not from the user."""
    return "NUMBA_CPU_FEATURES" in env and env.get(_MARK) == env["NUMBA_CPU_FEATURES"] and \
        "NUMBA_CPU_NAME" not in env and "NUMBA_ENABLE_AVX" not in env


def _host_features() -> str:
    import llvmlite.binding as ll        # what Numba itself reads the host's features with
    return ll.get_host_cpu_features().flatten()


def prepare() -> dict:
    """Write the vector-width and thread-wait settings into ``os.environ`` (see the module
    docstring); return, and remember in ``decisions``, what was decided."""
    from ..cpu import this_cpu
    has512 = "avx512f" in this_cpu().flags
    updates, notes = decide(os.environ, "numba" in sys.modules, has512, _host_features)
    if notes["vector_width_asked"] == "512" and not has512:
        warnings.warn("NBCNN_VECTOR_WIDTH=512: this CPU has no AVX-512; its widest vectors are "
                      "used", RuntimeWarning, stacklevel=2)
    os.environ.update(updates)
    decisions.clear()
    decisions.update(notes)
    return notes


def width() -> str:
    """The vector width Numba compiles for in this process, read from the features of its code
    generator: '512', '256', '128', or LLVM's default for the CPU model when no width was
    chosen on an AVX-512 CPU."""
    from numba.core import registry
    _, cpu_name, features = registry.cpu_target.target_context.codegen().magic_tuple()
    flags = set(features.split(","))
    if "+avx512f" in flags and "+prefer-256-bit" not in flags:
        return "512" if "-prefer-256-bit" in flags else f"LLVM's default for {cpu_name}"
    return "256" if "+avx" in flags else "128"
