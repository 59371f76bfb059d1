"""Sequential: a stack of layers with fit / evaluate / predict / save / load."""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import __version__
from . import validation as checks
from .backends import Backend, get_backend
from .files import honour_umask
from .guard import WeightGuard
from .layers import REGISTRY, Layer, LeakyReLU, ReLU
from .layers.activations import Activation
from .losses import check_labels
from .optim import SGD, Optimizer

HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "seconds", "images_per_second", "learning_rate"]
_FORMAT = "nbcnn.Sequential"


class TrainingDiverged(FloatingPointError):
    """The loss or the weights became NaN or infinite; the model keeps its last finite weights
    (see ``nbcnn.guard`` for exactly which)."""


class Sequential:
    """Layers applied one after another, ending in class scores (N, classes).

    All randomness (initial weights, shuffling, dropout) comes from ``seed``. Every array stays on
    ``backend`` from the first layer to the loss; only the batch's loss and number of correct
    predictions come back to the host.
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
        """Create every layer's weights for examples of ``input_shape`` (C, H, W)."""
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        shape = tuple(int(s) for s in input_shape)
        self.input_shape = shape
        self._choose_inits()
        for layer in self.layers:
            shape = layer.build(shape, self.backend, self._init_rng)
        if len(shape) != 1:
            raise ValueError(f"the last layer must output class scores (N, classes), but it "
                             f"outputs (N, {', '.join(map(str, shape))}); end with Flatten and "
                             "Dense(classes)")
        self.output_shape = shape
        self.layers[0].need_input_grad = False

    def _choose_inits(self) -> None:
        """'auto' init: He when the next activation is in the ReLU family, Glorot otherwise."""
        for i, layer in enumerate(self.layers):
            if getattr(layer, "init", None) != "auto":
                continue
            following = next((nxt for nxt in self.layers[i + 1:]
                              if isinstance(nxt, Activation) or hasattr(nxt, "init")), None)
            if isinstance(following, (ReLU, LeakyReLU)):
                layer.init = "he"
                layer.negative_slope = following.alpha
            else:
                layer.init = "glorot"

    @property
    def built(self) -> bool:
        return self.output_shape is not None

    @property
    def num_classes(self) -> int:
        return self.output_shape[0]

    def parameters(self):
        """(layer, name) for every trainable parameter, in a fixed order."""
        return [(layer, name) for layer in self.layers for name in layer.params]

    def count_params(self) -> int:
        return sum(int(np.prod(layer.params[name].shape)) for layer, name in self.parameters())

    def spec(self) -> str:
        """The architecture as a string ``nbcnn.build`` understands."""
        return "-".join(layer.spec() for layer in self.layers)

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts."""
        self._require_built()
        rows, shape = [], self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
            n = sum(int(np.prod(p.shape)) for p in layer.params.values())
            rows.append((layer.describe(), "(N, " + ", ".join(map(str, shape)) + ")", n))
        w0 = max(len("layer"), *(len(r[0]) for r in rows))
        w1 = max(len("output shape"), *(len(r[1]) for r in rows))
        lines = [f"{'layer':<{w0}}  {'output shape':<{w1}}  {'params':>10}", "-" * (w0 + w1 + 14)]
        lines += [f"{a:<{w0}}  {b:<{w1}}  {c:>10,}" for a, b, c in rows]
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
            x = layer._forward(x, training)
        return x

    def backward(self, dlogits) -> None:
        """Propagate the loss gradient through every layer, filling each layer's ``grads``."""
        dy = dlogits
        for layer in reversed(self.layers):
            dy = layer._backward(dy)

    def train_step(self, x, y, optimizer: Optimizer) -> tuple[float, int]:
        """One mini-batch of training on backend arrays: forward, loss, backward, update.
        Returns (loss, number correct)."""
        if not self._prepared:
            self._prepared = True
            self._prepare_training(x, y, optimizer)
        logits = self.forward(x, training=True)
        loss, dlogits, correct = self.backend.softmax_cross_entropy(logits, y)
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
    def fit(self, data, epochs: int = 1, batch_size: int = 32, optimizer: Optimizer | None = None,
            validation=None, shuffle: bool = True, verbose: bool = True) -> pd.DataFrame:
        """Train on ``data`` (a Dataset or an (x, y) tuple of numpy arrays).

        Mini-batches are shuffled from the model's seed. After each epoch the model is evaluated
        on ``validation`` if given. Returns the history, one row per epoch. A loss or an update
        that turns NaN or infinite raises ``TrainingDiverged`` naming the epoch and batch; the
        model then keeps its last finite weights: those before the batch whose loss broke, or,
        when an update overflowed, a snapshot at most ``snapshot_every`` batches older
        (``nbcnn.guard``). fit never leaves NaN or infinite weights behind.
        """
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
        optimizer = optimizer or SGD(lr=0.01)
        n = len(x)
        n_batches = math.ceil(n / batch_size)
        self._set_training(True)
        guard = WeightGuard(self.backend, [layer.params[name] for layer, name in self.parameters()],
                            self.snapshot_every)

        def diverged(why):
            bar.close()
            return TrainingDiverged(f"{why} (lr {optimizer.current_lr:g}). "
                                    "Try a smaller learning rate.")
        rows = []
        for _ in range(epochs):
            epoch = self._epochs_done
            optimizer.start_epoch(epoch)
            order = self._shuffle_rng.permutation(n) if shuffle else np.arange(n)
            total_loss, total_correct = 0.0, 0
            bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}", unit="batch",
                       disable=not verbose, leave=False, dynamic_ncols=True)
            start = time.perf_counter()
            for b in range(n_batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                xb = self.backend.from_numpy(x[idx])
                yb = self.backend.labels_from_numpy(y[idx])
                broken = guard.before_step(epoch + 1, b + 1)
                if broken:
                    raise diverged(broken)
                loss, correct = self.train_step(xb, yb, optimizer)
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
                   "learning_rate": optimizer.current_lr}
            if val is not None:
                scores = self.evaluate(val, batch_size=max(batch_size, 256))
                row["val_loss"], row["val_accuracy"] = scores["loss"], scores["accuracy"]
                self._set_training(True)
            rows.append(row)
            self._epochs_done += 1
            if verbose:
                tqdm.write(_epoch_line(row, epochs))
        self._set_training(False)
        return pd.DataFrame(rows, columns=HISTORY_COLUMNS)

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
            h = layer._forward(h, False)
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
        """Every parameter and buffer as numpy, keyed '<layer index>.<name>'."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in layer.get_weights().items()}

    def set_weights(self, weights: dict) -> None:
        per_layer: dict[int, dict] = {}
        for key, value in weights.items():
            i, _, name = key.partition(".")
            per_layer.setdefault(int(i), {})[name] = value
        for i, w in per_layer.items():
            self.layers[i].set_weights(w)

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
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".nbcnn-", suffix=".npz")
        try:
            honour_umask(fd)
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path, backend: str | Backend | None = None) -> "Sequential":
        """Rebuild a model saved by ``save`` (never unpickles anything)."""
        with np.load(path, allow_pickle=False) as f:
            if "config" not in f.files:
                raise ValueError(f"{path}: not an nbcnn model file (no 'config' entry)")
            config = json.loads(str(f["config"]))
            weights = {k.split(":", 1)[1]: f[k] for k in f.files if k.startswith("weight:")}
        if config.get("format") != _FORMAT:
            raise ValueError(f"{path}: not an nbcnn model file (format {config.get('format')!r})")
        try:
            layers = _layers_from_config(config)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        model = cls(*layers, input_shape=tuple(config["input_shape"]), backend=backend,
                    seed=config["seed"])
        model.set_weights(weights)
        return model


def _layers_from_config(config: dict) -> list[Layer]:
    """New layers (without weights) as described by ``Sequential.config()``."""
    layers = []
    for entry in config["layers"]:
        if entry["type"] not in REGISTRY:
            raise ValueError(f"unknown layer type {entry['type']!r}")
        layers.append(REGISTRY[entry["type"]](**entry["config"]))
    return layers


def _epoch_line(row: dict, epochs: int) -> str:
    line = (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  "
            f"acc {row['train_accuracy']:.4f}")
    if not np.isnan(row["val_loss"]):
        line += f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}"
    return line + f"  {row['seconds']:.1f}s  {row['images_per_second']:,.0f} img/s"
