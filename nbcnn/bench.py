"""Speed benchmark: training and inference images per second for presets x batch sizes x backends,
with PyTorch (CPU, same thread count) as the peer when it is installed; a per-layer profile
(``profile_layers``) against the machine's peak measured in the same run (``measure_peak``);
and several trainings at once against one alone (``run_contention``). Every table carries the
CPU model, its vector width and the measured peak (``machine``).

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


def layer_multiply_adds(layer, shape) -> int:
    """Multiply-adds of one image's forward pass through ``layer`` (input shape ``shape``, no
    batch axis): conv and dense layers; 0 for the others (no FLOP count is defined for them).
    The input gradient and the weight gradient each take as many. A grouped convolution's output
    sees only its group's ``C // groups`` input channels; dilation spreads a window, it does not
    add to it."""
    if isinstance(layer, L.Conv2D):
        out = layer.output_shape(shape)
        return (int(np.prod(out)) * (shape[0] // layer.groups)
                * layer.kernel_size[0] * layer.kernel_size[1])
    if isinstance(layer, L.Dense):
        return shape[0] * layer.units
    return 0


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
        else:
            counts.append(layer_multiply_adds(layer, shape))
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
    """The same network in PyTorch, with the same weights, as the peer to beat: on the CPU with
    ``threads`` threads, or on a CUDA GPU (``device="cuda"``) in float32 without TF32, as
    nbcnn computes (each step waits for the GPU)."""

    def __init__(self, arch, batch, threads, seed=0, device="cpu"):
        import torch
        torch.set_num_threads(threads)
        self.torch = torch
        self.cuda = device.startswith("cuda")
        if self.cuda:
            if not torch.cuda.is_available():
                raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        model = build(arch, input_shape(arch), backend="numpy", seed=seed)
        self.net = to_torch(model).to(device)
        rng = np.random.default_rng(seed)
        self.x = torch.tensor(rng.random((batch, *input_shape(arch)), dtype=np.float32)).to(device)
        self.y = torch.tensor(rng.integers(0, 10, batch)).to(device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)
        self.device = (f"torch {torch.__version__} {torch.cuda.get_device_name()} (float32)"
                       if self.cuda else f"torch {torch.__version__} cpu ({threads} threads)")

    def _wait(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def train(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.net(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self._wait()

    def infer(self):
        with self.torch.inference_mode():
            self.net(self.x)
        self._wait()


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
                  warmup=3, repeats=5, min_seconds=0.3, progress=True,
                  torch_device="cpu") -> pd.DataFrame:
    """Measure every (arch, batch size, backend, mode) and return the table; PyTorch (the
    "torch" peer) runs on ``torch_device``, "cpu" or "cuda"."""
    from tqdm.auto import tqdm
    backends = backends or available_backends()
    threads = nbcnn.get_num_threads()
    peers = list(backends) + (["torch"] if torch_peer and _has_torch() else [])
    rows = []
    jobs = [(a, b) for a in archs for b in batch_sizes]
    for arch, batch in tqdm(jobs, desc="bench", unit="config", disable=not progress):
        runners = {peer: (TorchRunner(arch, batch, threads, device=torch_device)
                          if peer == "torch" else NbcnnRunner(arch, peer, batch))
                   for peer in peers}
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


# ---- the machine: CPU, vector width, measured peak ----------------------------------------------
_SGEMM = """
import json, os, time
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
n, threads, repeats = {n}, {threads}, {repeats}
rng = np.random.default_rng(0)
a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
c = np.empty((n, n), np.float32)
with threadpool_limits(limits=threads, user_api="blas"):
    np.matmul(a, b, out=c)                                    # warm-up
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        seconds.append(time.perf_counter() - t0)
    blas = [f"{{i.get('internal_api')}} {{i.get('version')}} kernel {{i.get('architecture')}}, "
            f"{{i.get('num_threads')}} threads" for i in threadpool_info() if i.get("user_api") == "blas"]
pins = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
print(json.dumps({{"seconds": seconds, "blas": "; ".join(blas), "pins": pins}}))
"""

#: variables that pin OpenBLAS to a kernel or cache size other than the one it would detect
_BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def measure_peak(n: int = 4096, threads: int | None = None, repeats: int = 3) -> dict:
    """The machine's practical float32 peak: numpy's sgemm of two n x n matrices (2 n^3 FLOPs),
    the best of ``repeats`` after one warm-up, in a fresh subprocess that runs ``threads`` BLAS
    threads (default: this process's thread count) with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE
    removed from its environment alone, so OpenBLAS picks the kernel it detects for this CPU.
    Returns GFLOP/s, the spread, and which BLAS kernel threadpoolctl says ran."""
    threads = threads or nbcnn.get_num_threads()
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_PINS}
    done = subprocess.run([sys.executable, "-c", _SGEMM.format(n=n, threads=threads,
                                                               repeats=repeats)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the sgemm peak subprocess failed: {done.stderr.strip()[-500:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["pins"]:
        raise RuntimeError(f"the sgemm peak subprocess still saw {out['pins']}")
    gflops = sorted(2.0 * n ** 3 / s / 1e9 for s in out["seconds"])
    return {"sgemm_n": n, "sgemm_threads": threads, "peak_gflops": gflops[-1],
            "peak_gflops_min": gflops[0], "peak_blas": out["blas"]}


def machine(peak: dict | None = None) -> dict:
    """This machine for the bench tables: CPU model, vector width, cores and threads, the
    vector width of nbcnn's Numba kernels, the measured peak (``measure_peak``) when given and a
    theoretical peak ESTIMATE from the CPU's flags and reported clock (``cpu.CPU``)."""
    from .backends import numba_env
    from .cpu import this_cpu
    from .threads import available_cores
    cpu, threads = this_cpu(), nbcnn.get_num_threads()
    estimate = cpu.peak_estimate_gflops(threads)
    return {"cpu": cpu.model, "vector_isa": cpu.vector_isa, "vector_bits": cpu.vector_bits,
            "cores": available_cores(), "threads": threads, "cpu_mhz": cpu.mhz,
            "numba_vector_width": numba_env.width(),
            "peak_estimate_gflops": estimate,
            "peak_estimate_note": ("estimate, not measured: threads x reported clock x FMA "
                                   "lanes per cycle x 2 (cpu.CPU.fma_lanes_per_cycle)")
            if estimate else "no estimate (clock or FMA width unknown)",
            **(peak or {})}


#: the machine columns every bench table carries (the details are in machine.json)
MACHINE_COLUMNS = ("cpu", "vector_isa", "peak_gflops")


def with_machine(table: pd.DataFrame, info: dict) -> pd.DataFrame:
    """``table`` with the MACHINE_COLUMNS of ``info`` added (NaN for a peak not measured)."""
    table = table.copy()
    for col in MACHINE_COLUMNS:
        table[col] = info.get(col, np.nan)
    return table


def machine_header(info: dict) -> str:
    """One line naming the CPU, its vector width and the peak, for printed tables."""
    peak = (f"measured peak {info['peak_gflops']:.0f} GFLOP/s (numpy sgemm {info['sgemm_n']}, "
            f"{info['peak_blas']})" if info.get("peak_gflops") else "peak not measured")
    est = (f"; estimate {info['peak_estimate_gflops']:.0f} GFLOP/s"
           if info.get("peak_estimate_gflops") else "")
    return (f"{info['cpu']} ({info['vector_isa'] or 'vector width unknown'}), "
            f"{info['threads']} of {info['cores']} cores, Numba vectors "
            f"{info['numba_vector_width']} bits; {peak}{est}")


# ---- per-layer profile ------------------------------------------------------------------------
PROFILE_COLUMNS = ["arch", "backend", "batch_size", "layer_index", "path", "layer", "pass", "ms",
                   "ms_min", "ms_max", "gflops", "fraction_of_peak", "derived", "repeats"]


def _timed(fn, backend):
    def run():
        fn()
        backend.synchronize()       # OpenCL returns with the work still queued
    return run


def _median_ms(fn, warmup, repeats, min_seconds) -> list[float]:
    calls = calibrate(fn, warmup, min_seconds)
    return sorted(1e3 * sample(fn, calls) for _ in range(repeats))


def profile_layers(arch: str, backend: str, batch: int, peak_gflops: float | None = None,
                   warmup=2, repeats=5, min_seconds=0.1, seed=0) -> pd.DataFrame:
    """Every layer of ``arch`` on ``backend`` at batch ``batch``, through the layer's own API
    (``forward`` / ``backward`` on backend arrays, the inputs a training step gives it):

    - ``forward``: forward in training mode;
    - ``backward``: backward as training runs it (every gradient the model needs);
    - for conv and dense layers, ``weight_grad``: backward with the input gradient switched
      off (``need_input_grad = False``), and ``input_grad``: backward minus weight_grad,
      ``derived`` from the two medians (the op contract computes the input gradient only
      together with the weights'); the model's first layer has no input gradient.

    The layers inside a residual block are profiled one by one (``path`` "3.body.1": layer 1
    of block 3's body), followed by a row for the block's own work, the add of its two paths
    (``derived``: the whole block's time minus its layers'). ``layer_index`` numbers the rows'
    layers in order. ms is the median of ``repeats`` samples (min / max as spread), GFLOP/s
    counts 2 FLOPs per multiply-add (conv, dense; NaN for the others), as a fraction of
    ``peak_gflops``."""
    model = build(arch, input_shape(arch), backend=backend, seed=seed)
    rng = np.random.default_rng(seed)
    x = model.backend.from_numpy(rng.random((batch, *input_shape(arch)), dtype=np.float32))
    rows = []
    _profile_path(model.layers, x, model.input_shape, "", rng, (warmup, repeats, min_seconds),
                  rows)
    for row in rows:
        row.update(arch=arch, backend=backend, batch_size=batch,
                   fraction_of_peak=row["gflops"] / peak_gflops if peak_gflops else np.nan)
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def _profile_path(layers, x, shape, prefix, rng, timing, rows) -> dict:
    """Profile rows for ``layers`` run in order from input ``x`` (appended to ``rows``); returns
    the summed median ms of each pass over them."""
    total = {"forward": 0.0, "backward": 0.0}
    for i, layer in enumerate(layers):
        path = f"{prefix}{i}"
        if isinstance(layer, L.Residual):
            whole = _layer_times(layer, x, rng, timing)[0]
            parts = {"forward": 0.0, "backward": 0.0}
            for name, sub in (("body", layer.body), ("shortcut", layer.shortcut)):
                for k, v in _profile_path(sub, x, shape, f"{path}.{name}.", rng, timing,
                                          rows).items():
                    parts[k] += v
            index = rows[-1]["layer_index"] + 1 if rows else 0
            for p in ("forward", "backward"):
                ms = [t - parts[p] for t in whole[p]]
                rows.append(_profile_row(index, path, "Residual add", p, ms, np.nan, True))
                total[p] += statistics.median(whole[p])
            y = layer.forward(x, training=True)      # the layers' runs above reused its buffers
        else:
            macs = layer_multiply_adds(layer, shape)
            times, flops, y = _layer_times(layer, x, rng, timing, macs)
            index = rows[-1]["layer_index"] + 1 if rows else 0
            for p, ms in times.items():
                gflops = flops[p] / (statistics.median(ms) * 1e6) if flops else np.nan
                rows.append(_profile_row(index, path, layer.describe(), p, ms, gflops,
                                         p == "input_grad"))
            for p in total:
                total[p] += statistics.median(times[p])
        x, shape = y, layer.output_shape(shape)
    return total


def _layer_times(layer, x, rng, timing, macs=0):
    """({pass: sorted ms samples}, {pass: FLOPs} (empty without multiply-adds), output) of one
    layer on input ``x``, a random output gradient standing in for the loss's."""
    be = layer.backend
    batch = x.shape[0]
    y = layer.forward(x, training=True)
    dy = be.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32))
    times = {"forward": _median_ms(_timed(lambda: layer.forward(x, training=True), be), *timing)}
    layer.forward(x, training=True)
    times["backward"] = _median_ms(_timed(lambda: layer.backward(dy), be), *timing)
    if not macs:
        return times, {}, y
    macs *= batch
    flops = {"forward": 2.0 * macs, "backward": 2.0 * macs * (2 if layer.need_input_grad else 1)}
    needed = layer.need_input_grad                      # conv, dense: split the gradients
    layer.need_input_grad = False
    try:
        times["weight_grad"] = _median_ms(_timed(lambda: layer.backward(dy), be), *timing)
    finally:
        layer.need_input_grad = needed
    flops["weight_grad"] = 2.0 * macs
    if needed:
        w_ms = statistics.median(times["weight_grad"])
        times["input_grad"] = [t - w_ms for t in times["backward"]]
        flops["input_grad"] = 2.0 * macs
    return times, flops, y


def _profile_row(index, path, layer, name, ms, gflops, derived) -> dict:
    ms = sorted(ms)
    return {"layer_index": index, "path": path, "layer": layer, "pass": name,
            "ms": statistics.median(ms), "ms_min": ms[0], "ms_max": ms[-1], "gflops": gflops,
            "derived": derived, "repeats": len(ms)}


def run_profile(archs, batch_sizes, backends, peak_gflops=None, progress=True, **timing):
    """``profile_layers`` for every (arch, batch size, backend), in one table."""
    from tqdm.auto import tqdm
    jobs = [(a, n, b) for a in archs for n in batch_sizes for b in backends]
    return pd.concat([profile_layers(a, b, n, peak_gflops, **timing)
                      for a, n, b in tqdm(jobs, desc="profile", unit="config",
                                          disable=not progress)], ignore_index=True)


def profile_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, backend, batch, layer): forward and backward ms, their share of the step's
    layer time, and GFLOP/s (fraction of peak) of each pass that has one."""
    rows = []
    for key, g in table.groupby(["arch", "backend", "batch_size", "layer_index"], sort=True):
        by = g.set_index("pass")
        row = {"arch": key[0], "backend": key[1], "batch": key[2], "path": by.path.iloc[0],
               "layer": by.layer.iloc[0],
               "fwd_ms": by.ms.get("forward"), "bwd_ms": by.ms.get("backward")}
        for p, short in (("forward", "fwd"), ("input_grad", "dx"), ("weight_grad", "dw")):
            frac = by.fraction_of_peak.get(p, np.nan)
            row[f"{short}_gflops"] = by.gflops.get(p, np.nan)
            row[f"{short}_peak"] = frac
        rows.append(row)
    out = pd.DataFrame(rows)
    total = out.groupby(["arch", "backend", "batch"])[["fwd_ms", "bwd_ms"]].transform("sum").sum(axis=1)
    out.insert(7, "share", (out.fwd_ms + out.bwd_ms) / total)
    return out


# ---- two runs at once -------------------------------------------------------------------------
_TRAIN_LOOP = """
import json, sys, time
import numpy as np, nbcnn
m = nbcnn.build({arch!r}, {shape!r}, backend="numba", seed=0)
rng = np.random.default_rng(0)
x = m.backend.from_numpy(rng.random(({batch},) + {shape!r}, dtype=np.float32))
y = m.backend.labels_from_numpy(rng.integers(0, 10, {batch}))
opt = nbcnn.optim.SGD(lr=0.01, momentum=0.9)
for _ in range(3):
    m.train_step(x, y, opt)                   # compile (or load the cache) and warm up
print("ready", flush=True)
sys.stdin.readline()                          # every copy starts together
steps, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < {seconds}:
    m.train_step(x, y, opt)
    steps += 1
seconds = time.perf_counter() - t0
print(json.dumps({{"images_per_second": steps * {batch} / seconds,
                  "threads": nbcnn.get_num_threads()}}), flush=True)
"""


def concurrent_training(arch: str, batch: int, copies: int, seconds: float,
                        env: dict | None = None) -> list[dict]:
    """Training images/s of each of ``copies`` processes training ``arch`` at once, for
    ``seconds`` after every copy has warmed up (they start together), in the environment
    ``env`` (default: this one's). Each also reports its thread count at the end."""
    code = _TRAIN_LOOP.format(arch=arch, shape=input_shape(arch), batch=batch, seconds=seconds)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env or dict(os.environ)) for _ in range(copies)]
    try:
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a training copy failed to start: {p.stderr.read()[-500:]}")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"a training copy failed: {err[-500:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def run_contention(archs, batch_sizes, copies: int = 2, seconds: float = 5.0,
                   threads: int | None = None) -> pd.DataFrame:
    """For each (arch, batch): one training alone, then ``copies`` at once; each copy's and the
    total images/s, and the total against the one alone. ``threads`` fixes every copy's thread
    count (NBCNN_NUM_THREADS, which turns off core sharing); default: each copy's default."""
    if copies < 2:
        raise ValueError(f"contention needs at least 2 copies, got {copies}")
    env = dict(os.environ)
    env.pop("NBCNN_NUM_THREADS", None)
    if threads:
        env["NBCNN_NUM_THREADS"] = str(threads)
    policy = (f"{threads} threads each" if threads else
              f"default threads, NBCNN_SHARE_CORES={env.get('NBCNN_SHARE_CORES', '1')}") + \
        f", NBCNN_THREAD_WAIT={env.get('NBCNN_THREAD_WAIT', 'auto')}"
    rows = []
    for arch in archs:
        for batch in batch_sizes:
            alone = concurrent_training(arch, batch, 1, seconds, env)[0]
            together = concurrent_training(arch, batch, copies, seconds, env)
            for run, group in (("alone", [alone]), ("together", together)):
                total = sum(r["images_per_second"] for r in group)
                for i, r in enumerate(group):
                    rows.append({"arch": arch, "batch_size": batch, "copies": len(group),
                                 "run": run, "copy": i,
                                 "images_per_second": r["images_per_second"],
                                 "threads_at_end": r["threads"],
                                 "total_images_per_second": total,
                                 "ratio_to_alone": total / alone["images_per_second"],
                                 "policy": policy, "seconds": seconds})
    return pd.DataFrame(rows)
