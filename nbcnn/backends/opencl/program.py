"""Loading and building the kernel sources in ``kernels/*.cl``.

Each source file is built at most once per context and set of options (an in-process cache);
pyopencl and PoCL also keep compiled binaries on disk, so a second Python process skips most of
the compile. Kernels are looked up once per program and kept.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .errors import KernelBuildError

_PACKAGE_DIR = Path(__file__).resolve().parents[2]          # .../nbcnn


def kernel_dir() -> Path:
    """Where the ``*.cl`` sources are: ``nbcnn/kernels`` in an installed wheel, else the
    repository's top-level ``kernels/`` next to the package in a source checkout."""
    for cand in (_PACKAGE_DIR / "kernels", _PACKAGE_DIR.parent / "kernels"):
        if (cand / "conv.cl").is_file():
            return cand
    raise FileNotFoundError(
        f"OpenCL kernel sources not found in {_PACKAGE_DIR / 'kernels'} or "
        f"{_PACKAGE_DIR.parent / 'kernels'}; reinstall nbcnn (the wheel ships them as nbcnn/kernels)")


def load_source(name: str) -> str:
    """The text of ``kernels/<name>.cl``."""
    return (kernel_dir() / f"{name}.cl").read_text(encoding="utf-8")


def defines_to_options(defines: dict | None, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    opts = [f"-D{k}={v}" for k, v in sorted((defines or {}).items())]
    return tuple(opts) + tuple(extra)


class Program:
    """A built program plus its kernels, fetched by name and kept."""

    def __init__(self, cl_program, name: str):
        self.cl_program = cl_program
        self.name = name
        self._kernels = {}
        self._lock = threading.Lock()

    def kernel(self, name: str):
        k = self._kernels.get(name)
        if k is None:
            with self._lock:
                k = self._kernels.get(name)
                if k is None:
                    k = getattr(self.cl_program, name)
                    self._kernels[name] = k
        return k


def build_source(context, source: str, name: str = "<source>", options=()) -> Program:
    """Compile ``source`` for every device of ``context``; raise KernelBuildError (with the build
    log) when it does not compile."""
    import pyopencl as cl

    prg = cl.Program(context, source)
    try:
        prg = prg.build(options=list(options))
    except cl.Error as exc:
        log = _build_log(prg, context) or str(exc)
        raise KernelBuildError(
            f"OpenCL kernel {name} failed to build with options {' '.join(options) or '(none)'} "
            f"on {', '.join(d.name.strip() for d in context.devices)}.\n--- build log ---\n{log}\n"
            "--- end of build log ---\nIf the driver itself is broken, reinstall it "
            "(Debian/Ubuntu: `apt-get install --reinstall pocl-opencl-icd`; otherwise the GPU "
            "vendor's OpenCL ICD or PoCL).", build_log=log) from exc
    return Program(prg, name)


def _build_log(prg, context) -> str:
    import pyopencl as cl

    logs = []
    for dev in context.devices:
        try:
            text = prg.get_build_info(dev, cl.program_build_info.LOG)
        except Exception:                            # noqa: BLE001 - the log is best effort
            continue
        if text and text.strip():
            logs.append(text.strip())
    return "\n".join(logs)


class ProgramCache:
    """Programs of one context, built on first use and kept: key (file name, options)."""

    def __init__(self, context):
        self.context = context
        self._programs: dict[tuple, Program] = {}
        self._lock = threading.Lock()

    def get(self, name: str, defines: dict | None = None, options: tuple[str, ...] = ()) -> Program:
        opts = defines_to_options(defines, options)
        key = (name, opts)
        prg = self._programs.get(key)
        if prg is None:
            with self._lock:
                prg = self._programs.get(key)
                if prg is None:
                    prg = build_source(self.context, load_source(name), f"{name}.cl", opts)
                    self._programs[key] = prg
        return prg
