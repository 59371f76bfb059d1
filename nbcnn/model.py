"""Sequential: a stack of layers with fit / evaluate / predict / save / load."""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import zipfile
import zlib

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import __version__
from . import checkpoint as ckpt
from . import settings as registry
from . import validation as checks
from .backends import Backend, get_backend
from .callbacks import EarlyStopping, explosion_warning
from .files import atomic_write
from .guard import WeightGuard
from .layers import REGISTRY, Layer, Residual
from .layers.base import followers
from .losses import check_label_smoothing, check_labels
from .optim import SGD, Optimizer

HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "seconds", "images_per_second", "learning_rate", "warning"]
_FORMAT = "nbcnn.Sequential"


class TrainingDiverged(FloatingPointError):
    """The loss or the weights became NaN or infinite; the model keeps its last finite weights
    (see ``nbcnn.guard`` for exactly which)."""


class Sequential:
    """Layers applied one after another, ending in class scores (N, classes).

    All randomness (initial weights, shuffling, dropout, augmentation) comes from ``seed``.
    Every array stays on ``backend`` from the first layer to the loss; only the batch's loss and
    number of correct predictions come back to the host.
    """

    #: ``fit`` checks the weights are finite and snapshots them every this many batches
    #: (``nbcnn.guard``): the most batches an overflowing update can take the model back
    snapshot_every = 16

    def __init__(self, *layers: Layer, input_shape=None, backend: str | Backend | None = None,
                 seed: int = 0):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is {type(layer).__name__}, not a layer")
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        self.layers = list(layers)
        self.backend = get_backend(backend)
        self.seed = int(seed)
        self.input_shape = None
        self.output_shape = None
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        self._init_rng = np.random.default_rng(seeds[0])
        self._shuffle_rng = np.random.default_rng(seeds[1])
        self._epochs_done = 0
        self._prepared = False              # backend.prepare_training done (first train step)
        if input_shape is not None:
            self.build(input_shape)

    # ---- structure ------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        """Create every layer's weights for examples of ``input_shape`` (C, H, W), through
        ``Layer.build``: each layer learns what follows it (``followed_by``: an ``init="auto"``
        is He before a ReLU or LeakyReLU, Glorot otherwise, inside residual blocks too) and the
        first layer that no input gradient is needed (``input_grad=False``). The layers'
        configs are left as written."""
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        shape = tuple(int(s) for s in input_shape)
        self.input_shape = shape
        for i, (layer, after) in enumerate(zip(self.layers, followers(self.layers))):
            shape = layer.build(shape, self.backend, self._init_rng, followed_by=after,
                                input_grad=i > 0)
        if len(shape) != 1:
            raise ValueError(f"the last layer must output class scores (N, classes), but it "
                             f"outputs (N, {', '.join(map(str, shape))}); end with Flatten and "
                             "Dense(classes)")
        self.output_shape = shape

    @property
    def built(self) -> bool:
        return self.output_shape is not None

    @property
    def num_classes(self) -> int:
        return self.output_shape[0]

    def named_layers(self) -> list[tuple[str, Layer]]:
        """(key, layer) for every layer that is not a block, depth first, in execution order:
        key '<i>' for the top-level layer i, '<i>.body.<j>' / '<i>.shortcut.<j>' for the layers
        of a residual block at index i (nested further for a block inside a block). The keys are
        the prefixes of ``get_weights``'s names."""
        return _named_leaves(self.layers, "")

    def parameters(self):
        """(layer, name) for every trainable parameter, in a fixed order (residual blocks'
        inner layers included, in ``named_layers`` order)."""
        return [(layer, name) for _, layer in self.named_layers() for name in layer.params]

    def count_params(self) -> int:
        return sum(int(np.prod(layer.params[name].shape)) for layer, name in self.parameters())

    def spec(self) -> str:
        """The architecture as a string ``nbcnn.build`` understands."""
        return "-".join(layer.spec() for layer in self.layers)

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts. A residual block's row gives
        its output shape and all its parameters; its inner layers follow, indented and named by
        their path in the block (``body.0``, ``shortcut.0``; an identity shortcut is a row of its
        own)."""
        self._require_built()
        rows = _summary_rows(self.layers, self.input_shape)
        w0 = max(len("layer"), *(len(r[0]) for r in rows))
        w1 = max(len("output shape"), *(len(r[1]) for r in rows))
        lines = [f"{'layer':<{w0}}  {'output shape':<{w1}}  {'params':>10}", "-" * (w0 + w1 + 14)]
        lines += [f"{a:<{w0}}  {b:<{w1}}  {c:>10,}" if b else a for a, b, c in rows]
        lines += ["-" * (w0 + w1 + 14),
                  f"input (N, {', '.join(map(str, self.input_shape))}) on {self.backend.name}; "
                  f"{self.count_params():,} trainable parameters"]
        return "\n".join(lines)

    def __repr__(self):
        return f"Sequential({self.spec()!r}, input_shape={self.input_shape}, backend={self.backend.name!r})"

    # ---- forward and backward -------------------------------------------------------------
    def forward(self, x, training: bool = False):
        """Class scores for a batch (backend array in, backend array out)."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dlogits) -> None:
        """Propagate the loss gradient through every layer, filling each layer's ``grads``."""
        dy = dlogits
        for layer in reversed(self.layers):
            dy = layer.backward(dy)

    def train_step(self, x, y, optimizer: Optimizer,
                   label_smoothing: float = 0.0) -> tuple[float, int]:
        """One mini-batch of training on backend arrays: forward, loss (with ``label_smoothing``,
        see ``losses.softmax_cross_entropy``), backward, update. Returns (loss, number correct)."""
        if not self._prepared:
            self._prepared = True
            self._prepare_training(x, y, optimizer)
        logits = self.forward(x, training=True)
        loss, dlogits, correct = self.backend.softmax_cross_entropy(logits, y, label_smoothing)
        if not math.isfinite(loss):
            return loss, correct
        self.backward(dlogits)
        self._update(optimizer)
        return loss, correct

    def _update(self, optimizer: Optimizer) -> None:
        """Apply ``optimizer`` to every parameter with the gradient the last backward left."""
        optimizer.step(self.backend, [(layer.params[name], layer.grads[name])
                                      for layer, name in self.parameters()])

    def _prepare_training(self, x, y, optimizer) -> None:
        """Give the backend a dry run of a training step and of inference on a copy of this
        model (same layers, fresh weights, a copy of the optimizer, two examples), so it can
        compile their kernels all at once; nothing of this model or optimizer is touched."""
        def dry_step():
            twin = Sequential(*_layers_from_config(self.config()), input_shape=self.input_shape,
                              backend=self.backend, seed=self.seed)
            twin._prepared = True
            xs, ys = x[:2], y[:2]
            # train_step's body without its finite-loss check: the dry run's loss is garbage
            _, dlogits, _ = twin.backend.softmax_cross_entropy(twin.forward(xs, True), ys)
            twin.backward(dlogits)
            twin._update(copy.deepcopy(optimizer))
            twin.forward(xs, training=False)

        try:
            self.backend.prepare_training(dry_step)
        except Exception:           # only an optimisation: kernels then compile on first use
            pass

    # ---- training -------------------------------------------------------------------------
    def fit(self, data, epochs: int = registry.default("epochs"),
            batch_size: int = registry.default("batch_size"), optimizer: Optimizer | None = None,
            validation=None, shuffle: bool = True, verbose: bool = True,
            label_smoothing: float = registry.default("label_smoothing"), augment=None,
            checkpoint=None,
            early_stopping: EarlyStopping | None = None) -> pd.DataFrame:
        """Train on ``data`` (a Dataset or an (x, y) tuple of numpy arrays).

        ``optimizer`` defaults to ``optim.SGD()`` (lr 0.001, no momentum: the defaults of
        ``nbcnn.settings``, as a grid file and ``nbcnn train`` have them). Mini-batches are
        shuffled from the model's seed. After each epoch the model is evaluated
        on ``validation`` if given. Returns the history, one row per epoch. A loss or an update
        that turns NaN or infinite raises ``TrainingDiverged`` naming the epoch and batch; the
        model then keeps its last finite weights: those before the batch whose loss broke, or,
        when an update overflowed, a snapshot at most ``snapshot_every`` batches older
        (``nbcnn.guard``). fit never leaves NaN or infinite weights behind. An epoch whose mean
        loss explodes without turning NaN gets a ``warning`` (see ``callbacks.explosion_warning``).

        ``label_smoothing`` (in [0, 1]) smooths the training targets (PyTorch's definition, see
        ``losses.softmax_cross_entropy``): ``train_loss`` is the smoothed loss, ``val_loss`` and
        ``evaluate`` stay the plain cross-entropy. The history's ``learning_rate`` is the
        epoch's learning rate, or with a per-step schedule (``optim.OneCycle``) the mean over the
        epoch's batches.

        ``augment``: a ``data.Augment`` or a string such as ``"crop:4,flip"`` (training batches
        only). ``checkpoint``: a path written after every epoch; when it exists and is of this
        very run, training continues from it (see ``nbcnn.checkpoint``). ``early_stopping``: an
        ``EarlyStopping``; the history's ``attrs`` then hold ``stopped_epoch`` and
        ``kept_epoch``.
        """
        label_smoothing = check_label_smoothing(label_smoothing)
        x, y = self._unpack(data, "data")
        checks.not_empty(len(x), "data", "fit")
        if not self.built:
            checks.check_layout(x.shape, "fit: data x")
            self.build(x.shape[1:])
        self._check_data(x, y, "data")
        val = None
        if validation is not None:
            val = self._unpack(validation, "validation")
            checks.not_empty(len(val[0]), "validation", "fit")
            self._check_data(*val, "validation")
        epochs = checks.count(epochs, "fit: epochs", minimum=0)
        batch_size = checks.count(batch_size, "fit: batch_size")
        checks.check_memory(self, batch_size, len(x), True, "fit")
        if augment is not None:          # nbcnn.data is imported only when it is needed
            from .data.augment import epoch_generator, make_augment
            augment = make_augment(augment)
        if early_stopping is not None:
            if not isinstance(early_stopping, EarlyStopping):
                raise TypeError(f"early_stopping must be an EarlyStopping, got "
                                f"{type(early_stopping).__name__}")
            if early_stopping.needs_validation and val is None:
                raise ValueError(f"early stopping on {early_stopping.monitor!r} needs validation "
                                 "data: give validation=... or monitor='train_loss'")
            early_stopping.reset()
        optimizer = optimizer or SGD()
        n = len(x)
        n_batches = math.ceil(n / batch_size)
        rows = []
        if checkpoint is not None:
            checkpoint = os.fspath(checkpoint)
            run = ckpt.run_identity(self, (x, y), val, {
                "epochs": epochs, "batch_size": batch_size, "shuffle": bool(shuffle),
                "label_smoothing": label_smoothing, "optimizer": optimizer.config(),
                "augment": augment.spec() if augment else "none",
                "early_stopping": early_stopping.config() if early_stopping else None})
            if os.path.exists(checkpoint):
                rows = ckpt.resume(checkpoint, run, self, optimizer, early_stopping)
                if verbose:
                    tqdm.write(f"continuing from checkpoint {checkpoint}: {len(rows)} of {epochs} "
                               "epochs done", file=sys.stderr)
        resumed = len(rows)
        stopped = early_stopping is not None and early_stopping.stopped_epoch is not None
        self._set_training(True)
        guard = WeightGuard(self.backend, [layer.params[name] for layer, name in self.parameters()],
                            self.snapshot_every)

        def diverged(why):
            bar.close()
            return TrainingDiverged(f"{why} (lr {optimizer.current_lr:g}). "
                                    "Try a smaller learning rate.")
        while len(rows) < epochs and not stopped:
            epoch = self._epochs_done
            optimizer.start_epoch(epoch)
            order = self._shuffle_rng.permutation(n) if shuffle else np.arange(n)
            draws = augment.draw(epoch_generator(self.seed, epoch), n) if augment else None
            total_loss, total_correct, lr_sum = 0.0, 0, 0.0
            bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}", unit="batch",
                       disable=not verbose, leave=False, dynamic_ncols=True)
            start = time.perf_counter()
            for b in range(n_batches):
                rows_b = slice(b * batch_size, (b + 1) * batch_size)
                idx = order[rows_b]
                xb = self.backend.from_numpy(x[idx])
                if augment:
                    xb = augment.apply(self.backend, xb, draws, rows_b)
                yb = self.backend.labels_from_numpy(y[idx])
                broken = guard.before_step(epoch + 1, b + 1)
                if broken:
                    raise diverged(broken)
                optimizer.start_step(epoch, b, n_batches)
                lr_sum += optimizer.current_lr
                loss, correct = self.train_step(xb, yb, optimizer, label_smoothing)
                if not math.isfinite(loss):
                    raise diverged(f"loss became {loss} at epoch {epoch + 1}, batch {b + 1} of "
                                   f"{n_batches}; {guard.after_bad_loss(epoch + 1, b + 1)}")
                total_loss += loss * len(idx)
                total_correct += correct
                bar.update(1)
                if b % 20 == 0 or b == n_batches - 1:
                    bar.set_postfix(loss=f"{total_loss / min(n, (b + 1) * batch_size):.4f}",
                                    refresh=False)
            self.backend.synchronize()
            seconds = time.perf_counter() - start
            broken = guard.end_of_epoch(epoch + 1, n_batches)
            if broken:
                raise diverged(broken)
            bar.close()
            row = {"epoch": epoch + 1, "train_loss": total_loss / n,
                   "train_accuracy": total_correct / n, "val_loss": np.nan,
                   "val_accuracy": np.nan, "seconds": seconds,
                   "images_per_second": n / seconds if seconds > 0 else np.nan,
                   "learning_rate": lr_sum / n_batches if optimizer.schedule.per_step
                   and n_batches else optimizer.current_lr}
            row["warning"] = explosion_warning(row["train_loss"], (rows or [row])[0]["train_loss"],
                                               self.num_classes)
            if val is not None:
                scores = self.evaluate(val, batch_size=max(batch_size, 256))
                row["val_loss"], row["val_accuracy"] = scores["loss"], scores["accuracy"]
                self._set_training(True)
            rows.append(row)
            self._epochs_done += 1
            if verbose:
                tqdm.write(_epoch_line(row, epochs))
            if early_stopping is not None and early_stopping.update(row, self):
                stopped = True
                early_stopping.finish(self)
                kept = early_stopping.kept_epoch()
                if verbose:
                    tqdm.write(f"early stopping after epoch {row['epoch']}: "
                               f"{early_stopping.monitor} did not improve for "
                               f"{early_stopping.patience} epochs"
                               + (f"; keeping the weights of epoch {kept}" if kept else ""))
            if checkpoint is not None:
                ckpt.save(checkpoint, *ckpt.capture(self, optimizer, early_stopping, rows, run))
        self._set_training(False)
        history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
        history.attrs["resumed_epochs"] = resumed
        history.attrs["stopped_epoch"] = early_stopping.stopped_epoch if early_stopping else None
        history.attrs["kept_epoch"] = (early_stopping.kept_epoch() if early_stopping else None) \
            or (rows[-1]["epoch"] if rows else None)
        return history

    def evaluate(self, data, batch_size: int = 256) -> dict:
        """Mean loss and accuracy on ``data`` with the layers in evaluation mode."""
        x, y = self._unpack(data, "data")
        batch_size = checks.count(batch_size, "evaluate: batch_size")
        checks.not_empty(len(x), "data", "evaluate")
        self._require_built()
        self._check_data(x, y, "data")
        checks.check_memory(self, batch_size, len(x), False, "evaluate")
        self._set_training(False)
        total_loss, total_correct = 0.0, 0
        for start in range(0, len(x), batch_size):
            xb = self.backend.from_numpy(x[start:start + batch_size])
            yb = self.backend.labels_from_numpy(y[start:start + batch_size])
            loss, _, correct = self.backend.softmax_cross_entropy(self.forward(xb), yb)
            total_loss += loss * len(xb)
            total_correct += correct
        return {"loss": total_loss / len(x), "accuracy": total_correct / len(x)}

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Class scores (logits, before softmax) as a numpy array (N, classes)."""
        batch_size = checks.count(batch_size, "predict: batch_size")
        self._require_built()
        x = self._check_inputs(np.asarray(x), "x")
        checks.check_memory(self, batch_size, len(x), False, "predict")
        self._set_training(False)
        out = [self.backend.to_numpy(self.forward(self.backend.from_numpy(x[s:s + batch_size])))
               for s in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def activations(self, x, upto: int | None = None) -> list[np.ndarray]:
        """Every layer's output for the batch ``x`` in evaluation mode, as numpy arrays (the
        first ``upto`` layers only, if given): what the network computes, layer by layer."""
        self._require_built()
        x = self._check_inputs(np.asarray(x), "x")
        self._set_training(False)
        outputs, h = [], self.backend.from_numpy(x)
        for layer in self.layers[:upto]:
            h = layer.forward(h, False)
            outputs.append(self.backend.to_numpy(h).copy())
        return outputs

    def _set_training(self, training: bool) -> None:
        for layer in self.layers:
            layer.training = training

    # ---- checks ---------------------------------------------------------------------------
    def _require_built(self) -> None:
        if not self.built:
            raise RuntimeError("the model is not built yet: give input_shape=... or call fit first")

    @staticmethod
    def _unpack(data, what):
        if hasattr(data, "x") and hasattr(data, "y"):
            return np.asarray(data.x), np.asarray(data.y)
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return np.asarray(data[0]), np.asarray(data[1])
        raise TypeError(f"{what} must be a Dataset or an (x, y) tuple of arrays, "
                        f"got {type(data).__name__}")

    def _check_inputs(self, x: np.ndarray, what: str) -> np.ndarray:
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(f"{what} must hold real numbers, got dtype {x.dtype}")
        expected = "(N, " + ", ".join(map(str, self.input_shape)) + ")"
        if x.ndim != len(self.input_shape) + 1:
            raise ValueError(f"{what} must have shape {expected}, got rank {x.ndim} shape {x.shape}")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{what} must have shape {expected}, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        checks.warn_if_unscaled(x, what)
        return x

    def _check_data(self, x, y, what) -> None:
        self._check_inputs(x, f"{what} x")
        try:
            check_labels(y, self.num_classes, n=len(x))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{what}: {exc}") from None

    # ---- weights and files ----------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as numpy, keyed as a nested PyTorch ``state_dict``:
        '<layer index>.<name>' (``0.weight``, ``1.running_mean``), and for the layers of a
        residual block at index i '<i>.body.<j>.<name>' / '<i>.shortcut.<j>.<name>', nested
        further for a block inside a block (``3.body.1.body.0.weight``)."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in layer.get_weights().items()}

    def set_weights(self, weights: dict) -> None:
        """Replace parameters and buffers from numpy arrays keyed as ``get_weights`` names them
        (any subset of them); an unknown name or a wrong shape is a ValueError naming it."""
        per_layer: dict[int, dict] = {}
        for key, value in weights.items():
            i, _, name = str(key).partition(".")
            if not (i.isdecimal() and int(i) < len(self.layers) and name):
                raise ValueError(f"unknown weight name {key!r}: expected '<layer index>.<name>' "
                                 f"with a layer index below {len(self.layers)}, as get_weights "
                                 "gives")
            per_layer.setdefault(int(i), {})[name] = value
        for i, w in per_layer.items():
            try:
                self.layers[i].set_weights(w)
            except ValueError as exc:
                raise ValueError(f"layer {i}: {exc}") from None

    def config(self) -> dict:
        return {"format": _FORMAT, "version": 1, "nbcnn_version": __version__,
                "input_shape": list(self.input_shape), "seed": self.seed,
                "layers": [{"type": type(layer).__name__, "config": layer.config()}
                           for layer in self.layers]}

    def save(self, path) -> None:
        """Write architecture (JSON) and weights to one ``.npz`` file, atomically."""
        self._require_built()
        path = os.fspath(path)
        arrays = {f"weight:{k}": v for k, v in self.get_weights().items()}
        arrays["config"] = np.array(json.dumps(self.config()))
        atomic_write(path, lambda f: np.savez(f, **arrays), make_folder=False)

    @classmethod
    def load(cls, path, backend: str | Backend | None = None) -> "Sequential":
        """Rebuild a model saved by ``save``. Nothing in the file is trusted: it is never
        unpickled, and it is refused, with a ValueError naming the file and the array or
        config field, when it cannot be read (truncated, corrupt, not an ``.npz``), when its
        JSON config is malformed (not JSON, a missing or mistyped field, an unknown layer type,
        layer arguments the layer refuses), or when its arrays do not match the model the config
        describes one for one (a missing or an extra array, a wrong shape, a non-float dtype,
        NaN or infinite values)."""
        path = os.fspath(path)
        config, arrays = _read_model_file(path)
        try:
            input_shape, seed = _check_config(config)
            layers = _layers_from_config(config)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        model = cls(*layers, backend=backend, seed=seed)
        try:
            model.build(input_shape)
        except ValueError as exc:
            raise ValueError(f"{path}: the layers of 'config' do not fit its input_shape "
                             f"{list(input_shape)}: {exc}") from None
        model.set_weights(_check_weights(path, arrays, model.get_weights()))
        return model


def _read_model_file(path: str) -> tuple[dict, dict]:
    """The parsed JSON config and the other arrays of a model file, every read error turned
    into a ValueError naming the file (and the array). A missing file stays FileNotFoundError."""
    bad = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)
    try:
        f = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except bad as exc:
        raise ValueError(f"{path}: not a readable nbcnn model file, truncated or corrupt "
                         f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an nbcnn model file (one .npy array, not an .npz archive)")
    arrays = {}
    with f:
        if "config" not in f.files:
            raise ValueError(f"{path}: not an nbcnn model file (no 'config' entry)")
        for name in f.files:
            try:
                arrays[name] = f[name]
            except bad as exc:
                raise ValueError(f"{path}: array {name!r} cannot be read, the file is truncated "
                                 f"or corrupt ({type(exc).__name__}: {exc})") from exc
    raw = arrays.pop("config")
    if raw.shape != () or raw.dtype.kind != "U":
        raise ValueError(f"{path}: entry 'config' must hold one JSON string, got an array of "
                         f"dtype {raw.dtype} and shape {raw.shape}")
    try:
        config = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: entry 'config' is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != _FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path}: not an nbcnn model file (format {got!r})")
    return config, arrays


def _check_config(config: dict) -> tuple[tuple[int, ...], int]:
    """(input_shape, seed) of a model file's config, or a ValueError naming the bad field."""
    for key in ("input_shape", "seed", "layers"):
        if key not in config:
            raise ValueError(f"config field {key!r} is missing")
    shape, seed = config["input_shape"], config["seed"]
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise ValueError(f"config field 'input_shape' must be a list of positive ints, got {shape!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"config field 'seed' must be a non-negative int, got {seed!r}")
    return tuple(shape), seed


def _check_weights(path: str, arrays: dict, expected: dict) -> dict:
    """The file's arrays as the model's weights, once they match ``expected`` (the built model's
    own ``get_weights``) one for one: same names, shapes, a float dtype, finite values."""
    weights = {}
    for name, value in arrays.items():
        key = name[len("weight:"):] if name.startswith("weight:") else None
        if key not in expected:
            raise ValueError(f"{path}: unexpected array {name!r}: the model its config describes "
                             "has no such parameter or buffer")
        weights[key] = value
    missing = [f"weight:{k}" for k in expected if k not in weights]
    if missing:
        raise ValueError(f"{path}: array {missing[0]!r} is missing"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                         + "; the model its config describes needs every parameter and buffer")
    for key, value in weights.items():
        name, want = f"weight:{key}", expected[key].shape
        if value.shape != want:
            raise ValueError(f"{path}: array {name!r} has shape {value.shape}, expected {want}")
        if value.dtype.kind != "f":
            raise ValueError(f"{path}: array {name!r} has dtype {value.dtype}, expected floating "
                             "point")
        if not np.isfinite(value).all():
            raise ValueError(f"{path}: array {name!r} holds NaN or infinite values")
    return weights


def _layers_from_config(config: dict) -> list[Layer]:
    """New layers (without weights) as described by ``Sequential.config()``; a ValueError names
    the field that is wrong, e.g. ``layers[2].config`` or ``layers[3].config.body[0].type``."""
    entries = config.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"config field 'layers' must be a non-empty list, got {entries!r:.80}")
    return _layer_list(entries, "layers")


def _layer_list(entries, field: str) -> list[Layer]:
    if not isinstance(entries, list):
        raise ValueError(f"config field {field!r} must be a list of layers, got "
                         f"{type(entries).__name__}")
    return [_layer_from_entry(entry, f"{field}[{j}]") for j, entry in enumerate(entries)]


def _layer_from_entry(entry, field: str) -> Layer:
    if not isinstance(entry, dict) or set(entry) != {"type", "config"}:
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"config field {field!r} must be an object with the keys 'type' and "
                         f"'config', got {got}")
    kind, kwargs = entry["type"], entry["config"]
    if not isinstance(kind, str) or kind not in REGISTRY:
        raise ValueError(f"config field '{field}.type': unknown layer type {kind!r}; known "
                         f"types: {', '.join(REGISTRY)}")
    if not isinstance(kwargs, dict):
        raise ValueError(f"config field '{field}.config' must be an object, got "
                         f"{type(kwargs).__name__}")
    if REGISTRY[kind] is Residual:
        if set(kwargs) != {"body", "shortcut"}:
            raise ValueError(f"config field '{field}.config' of a Residual must have the keys "
                             f"'body' and 'shortcut', got {sorted(kwargs)}")
        kwargs = {"body": _layer_list(kwargs["body"], f"{field}.config.body"),
                  "shortcut": _layer_list(kwargs["shortcut"], f"{field}.config.shortcut") or None}
    try:
        return REGISTRY[kind](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config field '{field}.config' ({kind}): {exc}") from None


def _named_leaves(layers, prefix: str) -> list[tuple[str, Layer]]:
    out = []
    for i, layer in enumerate(layers):
        key = f"{prefix}{i}"
        if isinstance(layer, Residual):
            out += _named_leaves(layer.body, f"{key}.body.")
            out += _named_leaves(layer.shortcut, f"{key}.shortcut.")
        else:
            out.append((key, layer))
    return out


def _summary_rows(layers, shape, indent: str = "", path: str = "") -> list[tuple[str, str, int]]:
    """(name, output shape, parameter count) for each layer; a block's inner layers follow its
    own row, indented and named by their place in the block (``body.0: Conv2D(...)``)."""
    rows = []
    for j, layer in enumerate(layers):
        n = sum(int(np.prod(v.shape)) for _, leaf in _named_leaves([layer], "")
                for v in leaf.params.values())
        out = layer.output_shape(shape)
        name = f"{indent}{path}.{j}: {layer.describe()}" if path else layer.describe()
        rows.append((name, "(N, " + ", ".join(map(str, out)) + ")", n))
        if isinstance(layer, Residual):
            inner = indent + "  "
            rows += _summary_rows(layer.body, shape, inner, "body")
            if layer.shortcut:
                rows += _summary_rows(layer.shortcut, shape, inner, "shortcut")
            else:
                rows.append((f"{inner}shortcut: identity", "", 0))
        shape = out
    return rows


def _epoch_line(row: dict, epochs: int) -> str:
    line = (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  "
            f"acc {row['train_accuracy']:.4f}")
    if not np.isnan(row["val_loss"]):
        line += f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}"
    line += f"  {row['seconds']:.1f}s  {row['images_per_second']:,.0f} img/s"
    return line + (f"  WARNING: {row['warning']}" if row.get("warning") else "")
