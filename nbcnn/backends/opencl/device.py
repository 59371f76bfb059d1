"""OpenCL platform and device discovery and selection.

Every platform is considered, not only the first. A device is named "P:D": platform index P in
``pyopencl.get_platforms()`` order and device index D inside that platform. Without a request the
first GPU wins, else the first CPU, else any device; ``$NBCNN_OPENCL_DEVICE`` (or an explicit
"P:D") overrides the choice.
"""

from __future__ import annotations

import os

from .errors import INSTALL_HINT, DeviceSelectionError, OpenCLUnavailableError

ENV_DEVICE = "NBCNN_OPENCL_DEVICE"


def _cl():
    try:
        import pyopencl as cl
    except ImportError as exc:                       # pragma: no cover - pyopencl is a dependency
        raise OpenCLUnavailableError(f"pyopencl cannot be imported ({exc}). "
                                     "Install it with `pip install pyopencl`. " + INSTALL_HINT) from exc
    return cl


def _platforms():
    cl = _cl()
    try:
        return cl.get_platforms()
    except cl.Error as exc:                          # e.g. PLATFORM_NOT_FOUND_KHR: no ICD installed
        raise OpenCLUnavailableError(f"no OpenCL platform found ({exc}). " + INSTALL_HINT) from exc


def _devices(platform):
    cl = _cl()
    try:
        return platform.get_devices()
    except cl.Error:                                 # a platform with no device of any type
        return []


def _type_name(dev) -> str:
    cl = _cl()
    t = dev.type
    for flag, name in ((cl.device_type.GPU, "GPU"), (cl.device_type.CPU, "CPU"),
                       (cl.device_type.ACCELERATOR, "accelerator")):
        if t & flag:
            return name
    return "other"


def list_devices() -> list[dict]:
    """One row per OpenCL device on every platform, for ``nbcnn info``.

    Keys: id ("P:D"), platform_index, device_index, platform, platform_version, device, type
    (GPU/CPU/accelerator/other), opencl_version, driver_version, compute_units, max_clock_mhz,
    global_mem_mb, local_mem_kb, max_work_group_size. An empty list when there is no platform
    (it never raises for that; ``OpenCLBackend()`` does).
    """
    try:
        platforms = _platforms()
    except OpenCLUnavailableError:
        return []
    rows = []
    for p_i, plat in enumerate(platforms):
        for d_i, dev in enumerate(_devices(plat)):
            rows.append({
                "id": f"{p_i}:{d_i}",
                "platform_index": p_i,
                "device_index": d_i,
                "platform": plat.name.strip(),
                "platform_version": plat.version.strip(),
                "device": dev.name.strip(),
                "type": _type_name(dev),
                "opencl_version": dev.version.strip(),
                "driver_version": dev.driver_version.strip(),
                "compute_units": int(dev.max_compute_units),
                "max_clock_mhz": int(dev.max_clock_frequency),
                "global_mem_mb": int(dev.global_mem_size // (1 << 20)),
                "local_mem_kb": int(dev.local_mem_size // 1024),
                "max_work_group_size": int(dev.max_work_group_size),
            })
    return rows


def parse_device_spec(spec: str) -> tuple[int, int]:
    """"P:D" -> (P, D); raises DeviceSelectionError for anything else."""
    parts = str(spec).strip().split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise DeviceSelectionError(
            f"bad OpenCL device {spec!r}: expected 'PLATFORM:DEVICE' indices such as '0:0' "
            "(see `nbcnn info` for the list)")
    return int(parts[0]), int(parts[1])


def _describe_all(platforms) -> str:
    lines = []
    for p_i, plat in enumerate(platforms):
        for d_i, dev in enumerate(_devices(plat)):
            lines.append(f"  {p_i}:{d_i}  {plat.name.strip()} / {dev.name.strip()} ({_type_name(dev)})")
    return "\n".join(lines) if lines else "  (none)"


def select_device(spec: str | None = None):
    """The pyopencl Device for ``spec`` ("P:D"), else ``$NBCNN_OPENCL_DEVICE``, else the first GPU,
    else the first CPU, else the first device."""
    platforms = _platforms()
    if not platforms:
        raise OpenCLUnavailableError("no OpenCL platform found. " + INSTALL_HINT)
    source = "requested"
    if spec is None or str(spec).strip() == "":
        env = os.environ.get(ENV_DEVICE, "").strip()
        if env:
            spec, source = env, f"${ENV_DEVICE}"
    if spec is not None and str(spec).strip() != "":
        p_i, d_i = parse_device_spec(spec)
        if p_i >= len(platforms):
            raise DeviceSelectionError(
                f"{source} OpenCL device {spec!r}: there is no platform {p_i} "
                f"({len(platforms)} platform(s)). Devices:\n{_describe_all(platforms)}")
        devs = _devices(platforms[p_i])
        if d_i >= len(devs):
            raise DeviceSelectionError(
                f"{source} OpenCL device {spec!r}: platform {p_i} ({platforms[p_i].name.strip()}) "
                f"has {len(devs)} device(s). Devices:\n{_describe_all(platforms)}")
        return devs[d_i]
    cl = _cl()
    everything = [d for plat in platforms for d in _devices(plat)]
    if not everything:
        raise OpenCLUnavailableError("OpenCL platforms exist but none has a device. " + INSTALL_HINT)
    for wanted in (cl.device_type.GPU, cl.device_type.CPU):
        for dev in everything:
            if dev.type & wanted:
                return dev
    return everything[0]


def device_id(device) -> str:
    """The "P:D" id of a pyopencl Device."""
    for p_i, plat in enumerate(_platforms()):
        for d_i, dev in enumerate(_devices(plat)):
            if dev == device:
                return f"{p_i}:{d_i}"
    return "?:?"
