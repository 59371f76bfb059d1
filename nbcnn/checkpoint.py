"""Checkpoints: everything ``fit`` needs to continue a run bit for bit, in one ``.npz`` file.

``fit(..., checkpoint=PATH)`` writes PATH after every epoch: the weights and buffers, the
optimizer's state (its per-parameter arrays by parameter name, step count and learning rate),
the epoch (which fixes the schedule's position and the augmentation draws), the state of every
random generator (shuffling, dropout), the early-stopping state, the history so far, and what
the run is: the architecture, a fingerprint of the data and the fit settings, with the defaults
of the settings and the nbcnn version that wrote it. When PATH exists, ``fit`` continues from
it if the run is the same and refuses it (``CheckpointMismatch``, saying what differs) if not;
a file it cannot read is refused with ``CheckpointError`` naming it.

**What "the same run" means.** A long run is continued across sessions while nbcnn changes, so
the check compares what the saved run *means* to this code, never how an older nbcnn wrote it
down. Continuing is allowed exactly when the continuation computes what an uninterrupted run of
this run would:

- the architecture: the saved one is rebuilt with this code (from its saved layer config, by
  the loader ``Sequential.load`` uses; from its saved spec string when this code cannot read the
  config, e.g. a layer argument it no longer has) and its current-code form is compared with
  the running model's: every layer's type and arguments (a weighted layer's ``init`` as it
  resolves, so ``"auto"`` before a ReLU equals ``"he"``), the nesting of blocks, the input
  shape and the seed (it fixes the augmentation draws). A layer argument the saved config
  lacks takes this code's default. The spec strings themselves are never compared;
- the weights: the saved arrays must have exactly the names and shapes of the running model's
  parameters and buffers (they are loaded by name), and every random generator the model draws
  from must be in the file under its name (their states are restored, not redrawn);
- the data and the validation data: their fingerprints (``data_fingerprint``), unchanged;
- the fit settings (epochs, batch size, shuffling, label smoothing, augmentation read by this
  code, early stopping) and the optimizer (its name, every setting, the schedule as its
  ``repr``), setting by setting: a setting the saved run lacks is the same when this run has it
  at its default (a setting nbcnn gained, e.g. ``clip_grad_norm: null``), one this code no
  longer has is the same when the saved run had it at its default then (the defaults are saved
  in the checkpoint; ``nbcnn.settings`` for files that predate that). Numbers compare by value
  (0 equals 0.0).

What the saved config says is read with this code's meaning: a default that changed its
*behaviour* without changing its value is not seen, as the file cannot tell.

The file is an ``.npz`` of plain arrays plus one JSON entry ``meta``, read with
``allow_pickle=False``: nothing in it is ever unpickled. It is written to a temporary file in
the same folder and renamed over PATH, so a kill leaves the previous epoch's checkpoint or the
new one, never half of one. ``meta`` holds the file format's ``version`` (``VERSION``) and
``nbcnn_version``; a file of a newer format than this code knows is refused, naming both,
and the older ones (``READS``) are read: version 1 has no parameter names for the optimizer's
state (it is matched by position, shapes checked) and no saved defaults.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import numbers
import os
import zipfile

import numpy as np

from . import __version__
from . import settings as registry
from .files import atomic_write

FORMAT = "nbcnn.checkpoint"
#: the format this code writes: 2 added the parameter names of the optimizer's state, the
#: settings' defaults and the nbcnn version
VERSION = 2
#: the formats this code reads
READS = (1, 2)
#: examples hashed (evenly spaced) for the data fingerprint, besides every label
SAMPLE = 64


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt, not a checkpoint, or of a
    newer format than this nbcnn reads)."""


class CheckpointMismatch(ValueError):
    """A checkpoint of another run (architecture, data or fit settings differ)."""


# ---- what the run is -----------------------------------------------------------------------
def data_fingerprint(x: np.ndarray, y: np.ndarray) -> dict:
    """Size, shape and a sha1 of every label and of ``SAMPLE`` evenly spaced examples: the same
    for the same data on any backend, different for other data or another subset."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    picks = np.unique(np.linspace(0, len(x) - 1, num=min(SAMPLE, len(x))).astype(np.int64))
    h.update(np.ascontiguousarray(x[picks], dtype=np.float32).tobytes())
    return {"n": int(len(x)), "shape": [int(s) for s in x.shape[1:]], "sha1": h.hexdigest()}


def run_identity(model, data, validation, fit_settings: dict) -> dict:
    """What the run is, as saved in its checkpoint: the architecture (spec, layers, input shape,
    seed), the data and validation fingerprints, and ``fit``'s settings (``optimizer``: the
    optimizer's ``config()``, ``early_stopping``: its ``config()`` or None, ``augment``: a spec
    string). ``compare`` says whether a saved one is of the same run."""
    config = {k: v for k, v in model.config().items() if k != "nbcnn_version"}
    return {"model": {"spec": model.spec(), **config}, "data": data_fingerprint(*data),
            "validation": None if validation is None else data_fingerprint(*validation),
            "fit": fit_settings}


def defaults(run: dict) -> dict:
    """The defaults, in this code, of the settings of ``run`` (``run_identity``): saved with the
    checkpoint, so that a later nbcnn that has dropped a setting can tell whether the saved run
    had it at its default."""
    opt = run["fit"].get("optimizer") or {}
    name = opt.get("name")
    return {"fit": fit_defaults(),
            "optimizer": registry.optimizer_defaults(name) if name in registry.OPTIMIZERS else {},
            "early_stopping": early_stopping_defaults()}


def fit_defaults() -> dict:
    """The value each of ``fit``'s saved settings has when it is not given."""
    from .model import Sequential
    params = inspect.signature(Sequential.fit).parameters
    return {"shuffle": params["shuffle"].default,
            "label_smoothing": params["label_smoothing"].default,
            "augment": registry.default("augment"), "early_stopping": None}


def early_stopping_defaults() -> dict:
    """``EarlyStopping``'s keyword defaults, as its ``config()`` names them."""
    from .callbacks import EarlyStopping
    return {k: p.default for k, p in inspect.signature(EarlyStopping).parameters.items()
            if p.default is not inspect.Parameter.empty}


def architecture(model) -> dict:
    """A built model's architecture as this code means it: input shape, seed, and every layer
    that is not a block (keyed as ``Sequential.named_layers``, which also gives the nesting) with
    its type and arguments, a weighted layer's ``init`` as it resolved (``"he"``, or
    ``"he (slope 0.01)"`` when drawn for a LeakyReLU)."""
    layers = {}
    for key, layer in model.named_layers():
        config = dict(layer.config())
        if "init" in config and getattr(layer, "resolved_init", None) is not None:
            slope = getattr(layer, "resolved_slope", 0.0)
            config["init"] = layer.resolved_init + (f" (slope {slope:g})" if slope else "")
        layers[key] = {"type": type(layer).__name__, **config}
    return {"input_shape": list(model.input_shape), "seed": model.seed, "layers": layers}


def rebuild(saved: dict):
    """The saved architecture (``run_identity``'s ``model`` part) built by this code on the numpy
    backend: from its layer config, through the loader ``Sequential.load`` uses, else from its
    spec string. Returns (model, None), or (None, why neither can be read)."""
    from .arch import build
    from .model import Sequential, _check_config, _layers_from_config
    try:
        shape, seed = _check_config(saved)
    except ValueError as exc:
        return None, str(exc)
    why = []
    try:
        model = Sequential(*_layers_from_config(saved), backend="numpy", seed=seed)
        model.build(shape)
        return model, None
    except (TypeError, ValueError) as exc:
        why.append(f"its layer config: {exc}")
    try:
        return build(saved.get("spec"), shape, backend="numpy", seed=seed), None
    except (TypeError, ValueError) as exc:
        why.append(f"its spec {saved.get('spec')!r}: {exc}")
    return None, "; ".join(why)


def differences(saved, now, prefix: str = "") -> list[str]:
    """'where: saved -> now' for every leaf that differs between two JSON-like values (numbers
    by value)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in list(now) + [k for k in saved if k not in now]:
            where = f"{prefix}.{k}" if prefix else str(k)
            if k not in saved or k not in now:
                out.append(f"{where}: {saved.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}")
            else:
                out += differences(saved[k], now[k], where)
        return out
    if not same(saved, now):
        return [f"{prefix or 'value'}: {saved!r} -> {now!r}"]
    return []


def same(a, b) -> bool:
    """Equal as JSON values, numbers by value (1 == 1.0, but True is not 1)."""
    def number(v):
        return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
    if number(a) and number(b):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def setting_differences(saved: dict, now: dict, where: str, old_defaults: dict,
                        new_defaults: dict) -> list[str]:
    """'where.key: saved -> now' for each setting that differs: a key on one side only counts
    as that side's default (``new_defaults`` for a setting the saved run lacks, ``old_defaults``,
    then ``new_defaults``, for one this run lacks)."""
    out = []
    for k in list(now) + [k for k in saved if k not in now]:
        at = f"{where}.{k}"
        if k in saved and k in now:
            out += differences(saved[k], now[k], at)
        elif k in now:
            if not (k in new_defaults and same(now[k], new_defaults[k])):
                was = f"(absent, its default {new_defaults[k]!r})" if k in new_defaults \
                    else "(absent)"
                out.append(f"{at}: {was} -> {now[k]!r}")
        else:
            old = old_defaults.get(k, new_defaults.get(k, _UNKNOWN))
            if old is _UNKNOWN or not same(saved[k], old):
                out.append(f"{at}: {saved[k]!r} -> (a setting nbcnn {__version__} does not have)")
    return out


_UNKNOWN = object()


def compare(meta: dict, arrays: dict, run: dict, model) -> list[str]:
    """What differs ('where: saved -> now') between the run a checkpoint (``load``'s meta and
    arrays) saved and this one (``run_identity`` of ``model``, built); empty when ``fit`` may
    continue it. The rule is the module docstring's."""
    saved, old_defaults = meta["match"], meta.get("defaults", {})
    diff = _model_differences(saved.get("model", {}), model, arrays, meta)
    diff += differences(saved.get("data"), run["data"], "data")
    diff += differences(saved.get("validation"), run["validation"], "validation")
    was, now = dict(saved.get("fit", {})), dict(run["fit"])
    opt_was, opt_now = was.pop("optimizer", None) or {}, now.pop("optimizer", None) or {}
    es_was, es_now = was.pop("early_stopping", None), now.pop("early_stopping", None)
    if "augment" in was:                     # as this code reads it
        was["augment"] = _augment_spec(was["augment"])
    diff += setting_differences(was, now, "fit", old_defaults.get("fit", {}), fit_defaults())
    if opt_was.get("name") != opt_now.get("name"):
        diff.append(f"fit.optimizer.name: {opt_was.get('name')!r} -> {opt_now.get('name')!r}")
    else:
        diff += setting_differences(opt_was, opt_now, "fit.optimizer",
                                    old_defaults.get("optimizer", {}),
                                    registry.optimizer_defaults(opt_now["name"]))
    if es_was is None or es_now is None:
        diff += differences(es_was, es_now, "fit.early_stopping")
    else:
        diff += setting_differences(es_was, es_now, "fit.early_stopping",
                                    old_defaults.get("early_stopping", {}),
                                    early_stopping_defaults())
    return diff


def _augment_spec(text):
    from .data.augment import Augment
    try:
        return Augment.parse(text).spec()
    except (TypeError, ValueError):
        return text                          # differs from this run's, and is shown as saved


def _model_differences(saved: dict, model, arrays: dict, meta: dict) -> list[str]:
    """The architecture, the weights' names and shapes, the optimizer state's parameters and
    the random generators of the saved run against ``model``'s."""
    rebuilt, why = rebuild(saved)
    if rebuilt is None:
        return [f"model: nbcnn {__version__} cannot rebuild the saved architecture ({why})"]
    was, now = architecture(rebuilt), architecture(model)
    diff = differences(was, now, "model")
    shape = [(k, v["type"]) for k, v in was["layers"].items()]
    if shape != [(k, v["type"]) for k, v in now["layers"].items()]:     # other layers: the
        diff = [d for d in diff if not d.startswith("model.layers")]    # spec says it shorter
        diff.insert(0, f"model.spec: {rebuilt.spec()!r} -> {model.spec()!r}")
    if diff:
        return diff
    weights = {k: list(v.shape) for k, v in model.get_weights().items()}
    stored = {k[7:]: list(v.shape) for k, v in arrays.items() if k.startswith("weight:")}
    diff = differences(stored, weights, "weights")
    if not diff:
        try:
            optimizer_slots(meta, arrays, model)
        except CheckpointMismatch as exc:
            diff.append(str(exc))
    names = sorted(meta.get("random", {}))
    from_now = sorted(generators(model))
    if names != from_now:
        diff.append(f"random generators: {names} -> {from_now}")
    return diff


def parameter_names(model) -> list[str]:
    """The ``get_weights`` name of each of ``model.parameters()``, in that order (the order of
    the optimizer's state)."""
    return [f"{key}.{name}" for key, layer in model.named_layers() for name in layer.params]


def optimizer_slots(meta: dict, arrays: dict, model) -> dict:
    """The saved optimizer state as ``Optimizer.load_state_dict`` takes it, keyed by the position
    of each parameter in ``model.parameters()``: found by name (format 2), or by position
    (format 1); CheckpointMismatch when a slot does not fit its parameter."""
    opt = meta["optimizer"]
    names = parameter_names(model)
    shapes = [tuple(layer.params[name].shape) for layer, name in model.parameters()]
    saved_names = opt.get("params")
    state = {}
    for i, flags in opt["slots"].items():
        if saved_names is not None:
            name = saved_names[int(i)]
            if name not in names:
                raise CheckpointMismatch(f"optimizer state: parameter {name!r} -> (absent)")
            at = names.index(name)
        else:
            at = int(i)
            if at >= len(names):
                raise CheckpointMismatch(f"optimizer state: parameter {at} -> (absent: this "
                                         f"model has {len(names)})")
        entries = [arrays[f"optim:{i}:{j}"] if present else None for j, present in enumerate(flags)]
        for a in entries:
            if a is not None and tuple(a.shape) != shapes[at]:
                raise CheckpointMismatch(f"optimizer state of {names[at]}: shape "
                                         f"{list(a.shape)} -> {list(shapes[at])}")
        state[at] = entries
    return state


# ---- random generators ---------------------------------------------------------------------
def generators(model) -> dict:
    """Every ``numpy.random.Generator`` the model draws from, by a stable name: the model's own
    (weights, shuffling) and any a layer holds (Dropout's), nested layers included."""
    from .layers import Layer

    out = {"model.init": model._init_rng, "model.shuffle": model._shuffle_rng}

    def walk(prefix, layer):
        for name, value in vars(layer).items():
            if isinstance(value, np.random.Generator):
                out[f"{prefix}.{name}"] = value
            elif isinstance(value, Layer):
                walk(f"{prefix}.{name}", value)
            elif isinstance(value, (list, tuple)):
                for j, item in enumerate(value):
                    if isinstance(item, Layer):
                        walk(f"{prefix}.{name}.{j}", item)

    for i, layer in enumerate(model.layers):
        walk(f"layer{i}", layer)
    return out


# ---- the file ------------------------------------------------------------------------------
def capture(model, optimizer, early_stopping, history: list, run: dict) -> tuple[dict, dict]:
    """(meta, arrays) of the run ``run`` (``run_identity``) after its last finished epoch."""
    arrays = {f"weight:{k}": v for k, v in model.get_weights().items()}
    opt = optimizer.state_dict(model.backend)
    slots = {}
    for i, entries in opt["state"].items():
        slots[str(i)] = [a is not None for a in entries]
        for j, a in enumerate(entries):
            if a is not None:
                arrays[f"optim:{i}:{j}"] = a
    es = None
    if early_stopping is not None:
        es, best = early_stopping.state_dict()
        arrays.update({f"best:{k}": v for k, v in best.items()})
    meta = {"format": FORMAT, "version": VERSION, "nbcnn_version": __version__, "match": run,
            "defaults": defaults(run), "epochs_done": model._epochs_done,
            "backend": model.backend.name, "history": history,
            "optimizer": {"steps": opt["steps"], "current_lr": opt["current_lr"], "slots": slots,
                          "params": parameter_names(model)},
            "random": {k: g.bit_generator.state for k, g in generators(model).items()},
            "early_stopping": es}
    return meta, arrays


def restore(meta: dict, arrays: dict, model, optimizer, early_stopping) -> list:
    """Put a run back as ``capture`` saw it; returns its history rows."""
    model.set_weights({k[7:]: v for k, v in arrays.items() if k.startswith("weight:")})
    opt = meta["optimizer"]
    optimizer.load_state_dict({"steps": opt["steps"], "current_lr": opt["current_lr"],
                               "state": optimizer_slots(meta, arrays, model)}, model.backend)
    gens = generators(model)
    for name, st in meta["random"].items():
        gens[name].bit_generator.state = st
    model._epochs_done = int(meta["epochs_done"])
    if early_stopping is not None:
        early_stopping.load_state_dict(
            meta["early_stopping"], {k[5:]: v for k, v in arrays.items() if k.startswith("best:")})
    return list(meta["history"])


def save(path, meta: dict, arrays: dict) -> None:
    """Write the checkpoint atomically (``files.atomic_write``: a temporary file beside
    ``path``, flushed to disk, renamed over ``path``, with the mode the umask gives)."""
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))


def load(path) -> tuple[dict, dict]:
    """(meta, arrays) of the checkpoint at ``path``; CheckpointError naming it when it is not a
    whole nbcnn checkpoint of a format this code reads (``READS``)."""
    return _read(path, arrays=True)


def read_meta(path) -> dict:
    """The checkpoint's ``meta`` alone (the arrays are not read), checked as ``load`` checks it."""
    return _read(path, arrays=False)[0]


def progress(path) -> dict:
    """How far the run checkpointed at ``path`` got: ``epochs_done`` of ``epochs`` (None when
    the file does not say), the ``seconds`` its epochs took so far and the last epoch's history
    row (``last``)."""
    meta = read_meta(path)
    history = meta.get("history") or []
    return {"epochs_done": int(meta["epochs_done"]),
            "epochs": meta.get("match", {}).get("fit", {}).get("epochs"),
            "seconds": float(sum(row.get("seconds", 0.0) for row in history)),
            "last": dict(history[-1]) if history else {}}


def _read(path, arrays: bool) -> tuple[dict, dict]:
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f.files:
                raise CheckpointError(f"{path}: not an nbcnn checkpoint (no 'meta' entry)")
            meta = json.loads(str(f["meta"]))
            saved = {k: f[k] for k in f.files if k != "meta"} if arrays else {}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise CheckpointError(f"{path}: cannot read this checkpoint (truncated or corrupt: "
                              f"{type(exc).__name__}: {exc}); delete it to start the run "
                              "again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an nbcnn checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("version")
    if version not in READS:
        writer = meta.get("nbcnn_version", "an unknown version")
        newer = isinstance(version, int) and not isinstance(version, bool) and version > VERSION
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}, written by nbcnn {writer}, "
            + (f"is newer than nbcnn {__version__} reads (up to version {VERSION}); continue "
               "the run with that nbcnn or a later one, or delete the file to start it again"
               if newer else f"is not one nbcnn {__version__} reads "
               f"({', '.join(map(str, READS))}); delete the file to start the run again"))
    return meta, saved


def resume(path, run: dict, model, optimizer, early_stopping) -> list:
    """Load the checkpoint at ``path``, check it is of ``run`` (``run_identity`` of ``model``;
    ``compare``) and put the model, optimizer and early stopping back as it saw them; returns
    the history rows so far."""
    meta, arrays = load(path)
    check_match(path, meta, arrays, run, model)
    return restore(meta, arrays, model, optimizer, early_stopping)


def check_match(path, meta: dict, arrays: dict, run: dict, model) -> None:
    """Raise CheckpointMismatch listing what differs (``compare``) between the saved run and
    this one."""
    diff = compare(meta, arrays, run, model)
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise CheckpointMismatch(
            f"{path}: this checkpoint is of another run, refusing to continue or overwrite it "
            f"(saved -> now: {shown}). Use another checkpoint path, or delete the file to start "
            "again.")
