"""The OpenCL backend: host code (pyopencl) for the kernels in ``kernels/*.cl``.

``OpenCLBackend()`` runs the op contract on the best OpenCL device (a GPU if there is one, else a
CPU); ``OpenCLBackend("P:D")`` or ``$NBCNN_OPENCL_DEVICE=P:D`` picks one. ``list_devices()``
describes every platform's devices (for ``nbcnn info``).
"""

from .backend import OpenCLBackend
from .device import list_devices, select_device
from .errors import DeviceSelectionError, KernelBuildError, OpenCLUnavailableError
from .program import build_source, kernel_dir

__all__ = ["OpenCLBackend", "list_devices", "select_device", "OpenCLUnavailableError",
           "DeviceSelectionError", "KernelBuildError", "build_source", "kernel_dir"]
