"""Speed benchmark: training and inference images per second for presets x batch sizes x backends,
with PyTorch (CPU, same thread count) as the peer when it is installed.

Every row is measured in one process, after warm-up, as the median of several repeats (with the
min and max as spread); the peers of one configuration take their repeats in turns, so a drift
in the machine's speed (a shared VM's neighbours) hits them alike. GFLOP/s counts the multiply-adds of conv and dense layers (2 FLOPs each):
inference does the forward pass once; training does it three times (forward, input gradient,
weight gradient), except that the first layer needs no input gradient.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pandas as pd

import nbcnn
from . import layers as L
from .arch import build

ARCHS = ["mnist-simple", "mnist-complex", "cifar-small", "cifar-resnet20"]
BATCH_SIZES = [10, 64, 256]
INPUT_SHAPES = {"cifar-small": (3, 32, 32), "cifar-resnet20": (3, 32, 32)}
DEFAULT_SHAPE = (1, 28, 28)


def input_shape(arch: str) -> tuple:
    return INPUT_SHAPES.get(arch, DEFAULT_SHAPE)


def multiply_adds(model) -> tuple[int, int]:
    """(multiply-adds of one image's forward pass, those of the first layer with weights); the
    layers inside residual blocks count as the model's own."""
    counts = _multiply_adds(model.layers, model.input_shape)
    return sum(counts), next((macs for macs in counts if macs), 0)


def _multiply_adds(layers, shape) -> list[int]:
    """Multiply-adds of each conv and dense layer in ``layers`` (0 for the others), in order."""
    counts = []
    for layer in layers:
        out = layer.output_shape(shape)
        if isinstance(layer, L.Residual):
            counts += _multiply_adds(layer.body, shape) + _multiply_adds(layer.shortcut, shape)
        elif isinstance(layer, L.Conv2D):
            counts.append(int(np.prod(out)) * shape[0] * layer.kernel_size[0] * layer.kernel_size[1])
        elif isinstance(layer, L.Dense):
            counts.append(shape[0] * layer.units)
        else:
            counts.append(0)
        shape = out
    return counts


def flops_per_image(model, mode: str) -> float:
    total, first = multiply_adds(model)
    passes = total if mode == "inference" else 3 * total - first
    return 2.0 * passes


# ---- the runners: one per kind of peer -------------------------------------------------------
class NbcnnRunner:
    """Times nbcnn's own train_step / forward on one backend."""

    def __init__(self, arch, backend, batch, seed=0):
        self.model = build(arch, input_shape(arch), backend=backend, seed=seed)
        self.backend = self.model.backend
        rng = np.random.default_rng(seed)
        self.x = self.backend.from_numpy(rng.random((batch, *input_shape(arch)), dtype=np.float32))
        self.y = self.backend.labels_from_numpy(rng.integers(0, 10, batch))
        self.optimizer = nbcnn.optim.SGD(lr=0.01, momentum=0.9)
        self.device = self.backend.device_name()

    def train(self):
        self.model.train_step(self.x, self.y, self.optimizer)
        self.backend.synchronize()      # OpenCL returns with the update still queued

    def infer(self):
        self.model.forward(self.x, training=False)
        self.backend.synchronize()


class TorchRunner:
    """The same network in PyTorch, with the same weights, as the peer to beat."""

    def __init__(self, arch, batch, threads, seed=0):
        import torch
        torch.set_num_threads(threads)
        self.torch = torch
        model = build(arch, input_shape(arch), backend="numpy", seed=seed)
        self.net = to_torch(model)
        rng = np.random.default_rng(seed)
        self.x = torch.tensor(rng.random((batch, *input_shape(arch)), dtype=np.float32))
        self.y = torch.tensor(rng.integers(0, 10, batch))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)
        self.device = f"torch {torch.__version__} cpu ({threads} threads)"

    def train(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.net(self.x), self.y)
        loss.backward()
        self.optimizer.step()

    def infer(self):
        with self.torch.inference_mode():
            self.net(self.x)


def to_torch(model):
    """A torch.nn.Sequential equivalent to an nbcnn model, with its weights."""
    return _torch_sequential(model.layers)


def _torch_sequential(layers):
    import torch
    nn = torch.nn
    mods = []
    for layer in layers:
        if isinstance(layer, L.Residual):
            mods.append(_TorchResidual.make(_torch_sequential(layer.body),
                                            _torch_sequential(layer.shortcut)))
            continue
        w = {k: torch.tensor(v) for k, v in layer.get_weights().items()}
        if isinstance(layer, L.Conv2D):
            top, bottom, left, right = layer.pads
            if (top, left) != (bottom, right):
                mods.append(nn.ZeroPad2d((left, right, top, bottom)))
                top = left = 0
            m = nn.Conv2d(layer.input_shape[0], layer.filters, layer.kernel_size, layer.stride,
                          (top, left), bias=layer.use_bias)
        elif isinstance(layer, L.Dense):
            m = nn.Linear(layer.input_shape[0], layer.units, bias=layer.use_bias)
        elif isinstance(layer, L.MaxPool2D):
            m = nn.MaxPool2d(layer.pool_size, layer.stride, layer.padding,
                             ceil_mode=layer.ceil_mode)
        elif isinstance(layer, L.AvgPool2D):
            m = nn.AvgPool2d(layer.pool_size, layer.stride, layer.padding,
                             ceil_mode=layer.ceil_mode, count_include_pad=layer.count_include_pad)
        elif isinstance(layer, L.GlobalAvgPool2D):
            m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        elif isinstance(layer, L.BatchNorm2D):
            m = nn.BatchNorm2d(layer.input_shape[0], layer.eps, layer.momentum)
        elif isinstance(layer, L.GlobalAvgPool2D):
            m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            m = {L.ReLU: nn.ReLU, L.Sigmoid: nn.Sigmoid, L.Tanh: nn.Tanh, L.Flatten: nn.Flatten,
                 L.LeakyReLU: lambda: nn.LeakyReLU(layer.alpha),
                 L.Dropout: lambda: nn.Dropout(layer.p)}[type(layer)]()
        with torch.no_grad():
            for name, value in w.items():
                getattr(m, name).copy_(value)
        mods.append(m)
    return nn.Sequential(*mods)


class _TorchResidual:
    """``make(body, shortcut)``: a torch module computing body(x) + shortcut(x) (an empty
    shortcut is the identity); the class is created on first use, so torch is imported only
    by whoever benchmarks against it."""
    _cls = None

    @classmethod
    def make(cls, body, shortcut):
        if cls._cls is None:
            import torch

            class Residual(torch.nn.Module):
                def __init__(self, body, shortcut):
                    super().__init__()
                    self.body, self.shortcut = body, shortcut

                def forward(self, x):
                    return self.body(x) + self.shortcut(x)

            cls._cls = Residual
        return cls._cls(body, shortcut)


# ---- timing -----------------------------------------------------------------------------------
def calibrate(fn, warmup: int, min_seconds: float) -> int:
    """Warm ``fn`` up, then return how many calls make one timed sample last ``min_seconds``."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    return max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))


def sample(fn, calls: int) -> float:
    """Seconds per call of ``fn``, averaged over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def measure_interleaved(runners: dict, mode: str, warmup: int, repeats: int,
                        min_seconds: float) -> dict:
    """Seconds per call for each runner, ``repeats`` samples each, taken in turns (one sample of
    every runner, then the next round) so that a drift of the machine's speed hits every peer
    alike instead of whichever happened to run during it."""
    fns = {peer: (r.train if mode == "train" else r.infer) for peer, r in runners.items()}
    calls = {peer: calibrate(fn, warmup, min_seconds) for peer, fn in fns.items()}
    samples = {peer: [] for peer in fns}
    for _ in range(repeats):
        for peer, fn in fns.items():
            samples[peer].append(sample(fn, calls[peer]))
    return samples


def row_from_samples(samples, runner, arch, backend, batch, mode, flops) -> dict:
    ips = sorted(batch / s for s in samples)
    median = statistics.median(ips)
    return {"arch": arch, "backend": backend, "batch_size": batch, "mode": mode,
            "images_per_second": median, "ips_min": ips[0], "ips_max": ips[-1],
            "ms_per_batch": 1e3 * batch / median, "gflops": flops * median / 1e9,
            "repeats": len(samples), "device": runner.device}


def peak_step_memory_mb(runner) -> float:
    """Peak host memory allocated through Python and numpy during one training step
    (tracemalloc), for the backends whose arrays are numpy arrays; NaN for the others, whose
    memory (an OpenCL device's, torch's allocator) tracemalloc cannot see."""
    if not isinstance(runner, NbcnnRunner) or runner.backend.name not in ("numba", "numpy"):
        return float("nan")
    runner.train()
    tracemalloc.start()
    try:
        runner.train()
        return tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


def blas_description() -> str:
    """Which BLAS kernel numpy runs with, and the environment that chose it."""
    from threadpoolctl import threadpool_info
    libs = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    core = os.environ.get("OPENBLAS_CORETYPE")
    return ", ".join(libs) + (f"; OPENBLAS_CORETYPE={core}" if core else "")


def run_benchmark(archs=ARCHS, batch_sizes=BATCH_SIZES, backends=None, torch_peer=True,
                  warmup=3, repeats=5, min_seconds=0.3, progress=True) -> pd.DataFrame:
    """Measure every (arch, batch size, backend, mode) and return the table."""
    from tqdm.auto import tqdm
    backends = backends or available_backends()
    threads = nbcnn.get_num_threads()
    peers = list(backends) + (["torch"] if torch_peer and _has_torch() else [])
    rows = []
    jobs = [(a, b) for a in archs for b in batch_sizes]
    for arch, batch in tqdm(jobs, desc="bench", unit="config", disable=not progress):
        runners = {peer: (TorchRunner(arch, batch, threads) if peer == "torch"
                          else NbcnnRunner(arch, peer, batch)) for peer in peers}
        model = build(arch, input_shape(arch), backend="numpy")
        for mode in ("train", "inference"):
            samples = measure_interleaved(runners, mode, warmup, repeats, min_seconds)
            for peer, runner in runners.items():
                row = row_from_samples(samples[peer], runner, arch, peer, batch, mode,
                                       flops_per_image(model, mode))
                row["peak_step_mb"] = peak_step_memory_mb(runner) if mode == "train" else np.nan
                rows.append(row)
    table = pd.DataFrame(rows)
    if "torch" in peers:
        ref = table[table.backend == "torch"].set_index(["arch", "batch_size", "mode"])["images_per_second"]
        table["ratio_to_torch"] = [r.images_per_second / ref.get((r.arch, r.batch_size, r.mode), np.nan)
                                   for r in table.itertuples()]
    else:
        table["ratio_to_torch"] = np.nan
    table["threads"] = threads
    table["blas"] = blas_description()
    table["nbcnn_version"] = nbcnn.__version__
    return table


def available_backends() -> list[str]:
    names = ["numba"]
    try:
        nbcnn.get_backend("opencl")
        names.append("opencl")
    except Exception:                      # no OpenCL platform here: bench what exists
        pass
    return names


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


# ---- start-up time ----------------------------------------------------------------------------
_FIRST_BATCH = """
import time, json
t0 = time.perf_counter()
import numpy as np, nbcnn
m = nbcnn.build({arch!r}, {shape!r}, backend={backend!r})
x = m.backend.from_numpy(np.random.default_rng(0).random(({batch},) + {shape!r}, dtype=np.float32))
y = m.backend.labels_from_numpy(np.zeros({batch}, dtype=np.int64))
m.train_step(x, y, nbcnn.optim.SGD(lr=0.01))
m.backend.synchronize()
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""


def time_to_first_batch(arch="mnist-simple", backend="numba", batch=64, cache_dir=None) -> dict:
    """Seconds from a fresh interpreter to the end of the first trained batch, first with an
    empty Numba cache (cold: everything compiles) and then again with the cache just filled
    (warm). Runs in subprocesses so nothing is already imported or compiled."""
    import tempfile
    code = _FIRST_BATCH.format(arch=arch, shape=input_shape(arch), backend=backend, batch=batch)
    with tempfile.TemporaryDirectory(prefix="nbcnn-numba-cache-") as tmp:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir or tmp}
        out = {}
        for label in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, check=True)
            out[label] = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return {"arch": arch, "backend": backend, "batch_size": batch,
            "cold_seconds": out["cold"], "warm_seconds": out["warm"]}


# ---- figure -----------------------------------------------------------------------------------
def plot(table: pd.DataFrame, path) -> None:
    """Training and inference images/s per arch, backend and batch size (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import seaborn as sns
    grid = sns.catplot(data=table, kind="bar", x="arch", y="images_per_second", hue="backend",
                       col="mode", row="batch_size", height=3, aspect=1.6, sharey=False)
    grid.set(yscale="log")
    grid.set_axis_labels("", "images per second (log)")
    grid.set_titles("{col_name}, batch {row_name}")
    grid.figure.suptitle(f"nbcnn bench ({int(table.threads.iloc[0])} threads)", y=1.01)
    grid.savefig(path, dpi=110, bbox_inches="tight")
