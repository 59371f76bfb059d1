"""Environment switches of the backends that are on unless set to 0, false, no or off
(``NBCNN_PARALLEL_COMPILE``, ``NBCNN_OPENCL_AUTOTUNE``)."""

import os


def switched_on(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")
