"""One run of one cell: load data, build, warm up, fit, evaluate on test; return plain rows.

``run_cell`` never raises for a failing run (an exception while loading, building or training,
``TrainingDiverged``): it returns status ``failed`` with the error, so a grid goes on. It returns
only plain data (dicts, bytes, numpy arrays), so it can run in a Dask worker on another machine;
the caller (the client) writes every file.

What is measured (all wall clock, ``time.perf_counter``):

- ``data_seconds``: loading (and subsetting / splitting) the data (``settings.load_data``).
- ``compile_seconds``: before the real ``fit``, a scratch copy of the model (same architecture,
  backend, seed, optimizer) is fitted twice for one step on the first batch, with a validation
  pass on it (so every kernel ``fit`` and ``evaluate`` use runs once);
  ``compile_seconds = first - second``: the
  one-off cost of JIT compiling (Numba, or loading its on-disk cache) and building OpenCL programs
  in this process. A later cell in the same process that uses the same kernels sees about 0.
  Because of this warm-up, the epoch times below do not include compilation.
- ``fit_seconds``: ``fit`` as a whole (training, plus the validation pass after each epoch);
  ``seconds_per_epoch``: mean of the epochs' training loops (``fit``'s ``seconds``, no validation);
  ``images_per_second``: training images processed / training-loop seconds, over all epochs.
- ``test_seconds``: the test pass; ``wall_seconds``: the whole run, from start to the end of the test.

With a ``checkpoint`` path the cell's ``fit`` checkpoints after every epoch and, when a killed run
left the file, continues from it (``resumed_epochs`` says after which epoch); the times above then
cover this process's part only. A checkpoint ``fit`` refuses (of another run, unreadable, of a
newer format: ``nbcnn.checkpoint``) fails the cell with an error that names the file and says to
delete it to restart the cell, and ``checkpoint_refused`` (its path) in the metrics; it is never
deleted here, so a retry meets the same refusal until someone decides. ``stopped_epoch`` / ``kept_epoch`` come from early stopping,
``warning`` from an exploding loss (see ``nbcnn.callbacks``).
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import socket
import subprocess
import tempfile
import time
import traceback

import numpy as np

from ..checkpoint import CheckpointError, CheckpointMismatch
from ..settings import load_data, make_early_stopping, make_optimizer

#: models up to this many parameters are saved when the grid does not say
SAVE_MODEL_MAX_PARAMS = 1_000_000
#: test images kept with the predictions, to draw feature maps without the data set
SAMPLE_IMAGES = 8


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """Versions, host (its CPU model and vector width, and how many cores it has) and git commit
    of this process (computed once)."""
    from importlib import metadata

    import nbcnn

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return ""

    commit = ""
    here = os.path.dirname(os.path.dirname(os.path.abspath(nbcnn.__file__)))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from ..cpu import this_cpu
    return {"hostname": socket.gethostname(), "cpu": this_cpu().describe(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "nbcnn_version": nbcnn.__version__, "numpy_version": np.__version__,
            "numba_version": version("numba"), "pyopencl_version": version("pyopencl"),
            "git_commit": commit}


def _threads(settings, hint, hint_explicit=False):
    """Set the cell's threads: its own ``threads`` setting, or the executor's ``hint`` when
    the user gave it (``--threads``), exactly; else the executor's plan (or every core) as a
    ceiling that core sharing lowers while other nbcnn processes run beside it."""
    import nbcnn
    own = settings.get("threads")
    if own or (hint and hint_explicit):
        nbcnn.set_num_threads(int(own or hint))
    else:
        nbcnn.threads.plan_threads(int(hint or nbcnn.threads.max_threads()))
    return nbcnn.get_num_threads()


def _warm_up(arch, input_shape, backend, seed, settings, x, y) -> dict:
    """Fit a scratch copy of the model twice on one batch (with a validation pass): the first
    call pays for compilation, the second is steady. A scratch fit that diverges only ends its
    timing: the run's own fit meets (and reports, with its own epoch and batch) any divergence
    of the run."""
    import nbcnn
    scratch = nbcnn.build(arch, input_shape=input_shape, backend=backend, seed=seed)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        try:
            scratch.fit((x, y), epochs=1, batch_size=len(x), optimizer=make_optimizer(settings),
                        validation=(x, y), verbose=False, augment=settings.get("augment"))
        except nbcnn.TrainingDiverged:
            pass
        scratch.backend.synchronize()
        times.append(time.perf_counter() - t0)
    return {"compile_seconds": max(times[0] - times[1], 0.0), "warmup_seconds": sum(times)}


def run_cell(settings: dict, key: str, study: str = "", data_root=None, verbose: bool = False,
             threads_hint: int | None = None, save_model: bool | None = None,
             save_predictions: bool = True, checkpoint: str | None = None,
             threads_explicit: bool = False) -> dict:
    """Run one cell. Returns ``{"key", "study", "settings", "status", "error", "traceback",
    "metrics", "epochs", "model", "predictions"}``: ``metrics`` one flat dict (a runs.csv row
    without the settings), ``epochs`` the history's rows, ``model`` the saved ``.npz`` as bytes
    (or None), ``predictions`` test labels, predictions and a few sample images (or None).
    ``checkpoint``: a path ``fit`` checkpoints to after every epoch (and continues from, if a
    killed run left it there); the caller deletes it once the result is recorded.
    ``threads_hint``: the executor's thread count for the cell, a plan that core sharing may
    lower, or kept exactly with ``threads_explicit`` (the user's ``--threads``)."""
    import nbcnn
    from ..losses import softmax_cross_entropy

    started = _now()
    t_start = time.perf_counter()
    metrics = {"started": started, **environment(), "pid": os.getpid()}
    out = {"key": key, "study": study, "settings": dict(settings), "status": "failed",
           "error": "", "traceback": "", "metrics": metrics, "epochs": [], "model": None,
           "predictions": None}
    try:
        metrics["num_threads"] = _threads(settings, threads_hint, threads_explicit)
        t0 = time.perf_counter()
        train, val, test = load_data(settings, data_root)
        metrics["data_seconds"] = time.perf_counter() - t0
        metrics.update(n_train=len(train), n_val=len(val) if val is not None else 0,
                       n_test=len(test), classes=len(train.classes))

        arch, seed = settings["arch"], settings["seed"]
        model = nbcnn.build(arch, input_shape=train.input_shape, backend=settings["backend"],
                            seed=seed)
        metrics.update(arch_spec=model.spec(), params=model.count_params(),
                       device=model.backend.device_name())
        bs = min(settings["batch_size"], len(train))
        metrics.update(_warm_up(arch, train.input_shape, settings["backend"], seed, settings,
                                train.x[:bs], train.y[:bs]))

        t0 = time.perf_counter()
        history = model.fit(train, epochs=settings["epochs"], batch_size=settings["batch_size"],
                            optimizer=make_optimizer(settings), validation=val, verbose=verbose,
                            label_smoothing=settings.get("label_smoothing", 0.0),
                            augment=settings.get("augment"), checkpoint=checkpoint,
                            early_stopping=make_early_stopping(settings))
        metrics["fit_seconds"] = time.perf_counter() - t0
        warnings = [w for w in history["warning"] if w]
        metrics.update(resumed_epochs=history.attrs["resumed_epochs"],
                       stopped_epoch=history.attrs["stopped_epoch"],
                       kept_epoch=history.attrs["kept_epoch"],
                       warning=(f"{warnings[0]} (and {len(warnings) - 1} more epochs)"
                                if len(warnings) > 1 else "".join(warnings)))
        history = history.copy()
        history["elapsed_seconds"] = history["seconds"].cumsum()
        history["kept"] = history["epoch"] == history.attrs["kept_epoch"]
        out["epochs"] = history.to_dict("records")
        last = history.iloc[-1]
        loop = float(history["seconds"].sum())
        metrics.update(train_loss=float(last["train_loss"]),
                       train_accuracy=float(last["train_accuracy"]),
                       val_loss=float(last["val_loss"]), val_accuracy=float(last["val_accuracy"]),
                       seconds_per_epoch=loop / len(history),
                       images_per_second=len(train) * len(history) / loop if loop > 0 else np.nan)
        if val is not None:
            best = int(history["val_accuracy"].idxmax())
            metrics.update(best_val_accuracy=float(history["val_accuracy"].iloc[best]),
                           best_epoch=int(history["epoch"].iloc[best]))

        t0 = time.perf_counter()
        logits = model.predict(test.x, batch_size=max(settings["batch_size"], 256))
        metrics["test_seconds"] = time.perf_counter() - t0
        pred = logits.argmax(axis=1)
        test_loss, _ = softmax_cross_entropy(logits, test.y, backend="numpy")
        metrics.update(test_loss=float(test_loss), test_accuracy=float((pred == test.y).mean()))
        if save_predictions:
            small = np.int16 if len(test.classes) < 32000 else np.int64
            out["predictions"] = {"y_true": test.y.astype(small), "y_pred": pred.astype(small),
                                  "classes": np.array(test.classes, dtype=str),
                                  "sample_x": test.x[:SAMPLE_IMAGES],
                                  "sample_y": test.y[:SAMPLE_IMAGES]}
        if save_model or (save_model is None and metrics["params"] <= SAVE_MODEL_MAX_PARAMS):
            out["model"] = _model_bytes(model)
        out["status"] = "ok"
    except KeyboardInterrupt:
        raise
    except (CheckpointError, CheckpointMismatch) as exc:     # the retry would meet it again
        reason = str(exc).removeprefix(f"{checkpoint}: ")
        out["error"] = (f"{type(exc).__name__}: checkpoint {checkpoint} refused; delete that file "
                        f"to restart this cell from its first epoch: {reason}")[:1000]
        out["traceback"] = traceback.format_exc()
        metrics["checkpoint_refused"] = checkpoint
    except Exception as exc:          # recorded, and the grid goes on
        text = f"{type(exc).__name__}: {exc}".strip()
        out["error"] = text.splitlines()[0][:500] if text else type(exc).__name__
        out["traceback"] = traceback.format_exc()
    metrics["wall_seconds"] = time.perf_counter() - t_start
    metrics["finished"] = _now()
    return out


def _model_bytes(model) -> bytes:
    fd, tmp = tempfile.mkstemp(prefix="nbcnn-model-", suffix=".npz")
    os.close(fd)
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp)
