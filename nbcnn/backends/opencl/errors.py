"""Errors of the OpenCL backend: each says what went wrong and how to get a working driver."""

from __future__ import annotations

INSTALL_HINT = (
    "To run the OpenCL backend you need an OpenCL driver (an ICD). On Debian/Ubuntu the portable "
    "CPU driver installs with `apt-get install pocl-opencl-icd`; elsewhere install your GPU "
    "vendor's OpenCL driver (ICD) or PoCL (https://portablecl.org; also `pip install "
    "pyopencl[pocl]` or conda's `pocl`). `nbcnn info` lists the platforms and devices it can see."
)


class OpenCLUnavailableError(RuntimeError):
    """No usable OpenCL platform or device (driver missing, or none matches the request)."""


class DeviceSelectionError(OpenCLUnavailableError):
    """A device was asked for ("P:D" or $NBCNN_OPENCL_DEVICE) that does not exist or is malformed."""


class KernelBuildError(RuntimeError):
    """A kernel source failed to compile; the message carries the compiler's build log."""

    def __init__(self, message: str, build_log: str = ""):
        super().__init__(message)
        self.build_log = build_log
