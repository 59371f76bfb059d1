"""``nbcnn info``: versions, backends, OpenCL devices, threads and cache folders."""

from __future__ import annotations

import os
import platform


def add_parser(sub) -> None:
    sub.add_parser("info", help="show versions, backends, devices, threads and caches",
                   description=__doc__)


def numba_cache_dir() -> str:
    """Where Numba keeps compiled kernels (``cache=True``)."""
    custom = os.environ.get("NUMBA_CACHE_DIR")
    if custom:
        return custom
    from .. import backends
    return os.path.join(os.path.dirname(backends.__file__), "numba", "__pycache__")


def run(args) -> int:
    import numba
    import numpy

    import nbcnn
    from nbcnn import backends
    from nbcnn.backends.opencl.device import list_devices
    from nbcnn.data import cache_dir
    from threadpoolctl import threadpool_info

    print(f"nbcnn {nbcnn.__version__} on Python {platform.python_version()} "
          f"({platform.machine()}, {os.cpu_count()} cores)")
    print(f"numpy {numpy.__version__}, numba {numba.__version__}")
    from nbcnn.backends import numba_env
    from nbcnn.cpu import this_cpu
    cpu = this_cpu()
    print(f"CPU: {cpu.describe()}")
    print(f"threads: {nbcnn.get_num_threads()} (max {nbcnn.threads.max_threads()}; "
          "set with nbcnn.set_num_threads or NBCNN_NUM_THREADS); "
          f"{nbcnn.threads.policy_description()}")
    print(f"Numba: {numba.threading_layer()} threading layer "
          f"(NBCNN_THREAD_WAIT={numba_env.decisions.get('thread_wait', 'auto')}); "
          f"vector width {numba_env.width()} bits "
          f"(NBCNN_VECTOR_WIDTH={numba_env.decisions.get('vector_width_asked', 'auto')}: "
          f"{numba_env.decisions.get('vector_width_note', '')})")
    from nbcnn.backends.numba import plane, simd
    print(f"Numba SIMD kernels: {simd.LANES}-float vectors; convolution tiles of 4 filters x "
          f"{plane.TILE_VECTORS} vectors ({plane.TILE_PIXELS} output pixels)")
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            print(f"BLAS: {lib.get('internal_api')} {lib.get('version')} "
                  f"kernel {lib.get('architecture')}, {lib.get('num_threads')} threads")
    print(f"default backend: {backends.default_backend_name()}")
    print("backends:")
    for name, status in backends.available().items():
        print(f"  {name:8s} {status}")
    devices = list_devices()
    print("OpenCL devices:" if devices else
          "OpenCL devices: none (install a driver: apt-get install pocl-opencl-icd for CPUs)")
    for d in devices:
        print(f"  {d['id']}  {d['device']} [{d['type']}] on {d['platform']}: "
              f"{d['opencl_version']}, {d['compute_units']} compute units, {d['global_mem_mb']} MB")
    if devices and backends.available().get("opencl", "").startswith("ok"):
        opencl = backends.get_backend("opencl")
        print(f"OpenCL kernel parameters on {opencl.device_id}:")
        for line in opencl.tuning.describe():
            print(f"  {line}")
    print(f"Numba kernel cache: {numba_cache_dir()}")
    print(f"data cache: {cache_dir()} (NBCNN_DATA: {os.environ.get('NBCNN_DATA', 'not set')})")
    return 0
