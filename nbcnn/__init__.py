"""nbcnn: convolutional networks written by hand, on Numba and OpenCL backends.

    from nbcnn import Sequential, layers, optim, data
    model = nbcnn.build("mnist-simple", input_shape=(1, 28, 28), backend="numba", seed=0)
"""

__version__ = "0.1.0"

# before anything imports Numba: it reads the CPU features and thread settings only then
from .backends import numba_env as _numba_env  # noqa: E402

_numba_env.prepare()

from . import layers, losses, optim, threads  # noqa: E402
from .arch import PRESETS, build  # noqa: E402
from .backends import get_backend, set_backend, to_numpy  # noqa: E402
from .callbacks import EarlyStopping  # noqa: E402
from .model import Sequential, TrainingDiverged  # noqa: E402
from .threads import get_num_threads, set_num_threads  # noqa: E402


def __getattr__(name):
    # nbcnn.data imports lazily: it is not needed to build or train on user arrays
    if name == "data":
        import importlib
        return importlib.import_module(".data", __name__)
    raise AttributeError(f"module 'nbcnn' has no attribute {name!r}")


__all__ = ["Sequential", "TrainingDiverged", "EarlyStopping", "build", "PRESETS", "layers",
           "losses", "optim", "data", "get_backend", "set_backend", "to_numpy", "set_num_threads",
           "get_num_threads", "__version__"]
