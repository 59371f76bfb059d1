"""Checkpoints: everything ``fit`` needs to continue a run bit for bit, in one ``.npz`` file.

``fit(..., checkpoint=PATH)`` writes PATH after every epoch: the weights and buffers, the
optimizer's state (its per-parameter arrays, step count and learning rate), the epoch (which
fixes the schedule's position and the augmentation draws), the state of every random generator
(shuffling, dropout), the early-stopping state, the history so far, and what the run is: the
architecture, a fingerprint of the data and the fit settings. When PATH exists, ``fit``
continues from it if all of that matches and refuses it (``CheckpointMismatch``, saying what
differs) if not; a file it cannot read is refused with ``CheckpointError`` naming it.

The file is an ``.npz`` of plain arrays plus one JSON entry ``meta``, read with
``allow_pickle=False``: nothing in it is ever unpickled. It is written to a temporary file in
the same folder and renamed over PATH, so a kill leaves the previous epoch's checkpoint or the
new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np

from .files import atomic_write

FORMAT = "nbcnn.checkpoint"
VERSION = 1
#: examples hashed (evenly spaced) for the data fingerprint, besides every label
SAMPLE = 64


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt or not a checkpoint)."""


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
    """What a checkpoint must match to be continued: the architecture (spec, layers, input shape,
    seed), the data and validation fingerprints, and ``fit``'s settings."""
    config = {k: v for k, v in model.config().items() if k != "nbcnn_version"}
    return {"model": {"spec": model.spec(), **config}, "data": data_fingerprint(*data),
            "validation": None if validation is None else data_fingerprint(*validation),
            "fit": fit_settings}


def differences(saved, now, prefix: str = "") -> list[str]:
    """'where: saved -> now' for every leaf that differs between two JSON-like values."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in list(now) + [k for k in saved if k not in now]:
            where = f"{prefix}.{k}" if prefix else str(k)
            if k not in saved or k not in now:
                out.append(f"{where}: {saved.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}")
            else:
                out += differences(saved[k], now[k], where)
        return out
    if _canonical(saved) != _canonical(now):
        return [f"{prefix or 'value'}: {saved!r} -> {now!r}"]
    return []


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


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
    meta = {"format": FORMAT, "version": VERSION, "match": run,
            "epochs_done": model._epochs_done, "backend": model.backend.name,
            "history": history,
            "optimizer": {"steps": opt["steps"], "current_lr": opt["current_lr"], "slots": slots},
            "random": {k: g.bit_generator.state for k, g in generators(model).items()},
            "early_stopping": es}
    return meta, arrays


def restore(meta: dict, arrays: dict, model, optimizer, early_stopping) -> list:
    """Put a run back as ``capture`` saw it; returns its history rows."""
    model.set_weights({k[7:]: v for k, v in arrays.items() if k.startswith("weight:")})
    opt = meta["optimizer"]
    state = {int(i): [arrays[f"optim:{i}:{j}"] if present else None
                      for j, present in enumerate(flags)]
             for i, flags in opt["slots"].items()}
    optimizer.load_state_dict({"steps": opt["steps"], "current_lr": opt["current_lr"],
                               "state": state}, model.backend)
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
    whole nbcnn checkpoint."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f.files:
                raise CheckpointError(f"{path}: not an nbcnn checkpoint (no 'meta' entry)")
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in f.files if k != "meta"}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise CheckpointError(f"{path}: cannot read this checkpoint (truncated or corrupt: "
                              f"{type(exc).__name__}: {exc}); delete it to start the run "
                              "again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an nbcnn checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r}, this nbcnn "
                              f"reads version {VERSION}")
    return meta, arrays


def resume(path, run: dict, model, optimizer, early_stopping) -> list:
    """Load the checkpoint at ``path``, check it is of ``run`` (``run_identity``) and put the
    model, optimizer and early stopping back as it saw them; returns the history rows so far."""
    meta, arrays = load(path)
    check_match(path, meta, run)
    return restore(meta, arrays, model, optimizer, early_stopping)


def check_match(path, meta: dict, match: dict) -> None:
    """Raise CheckpointMismatch listing what differs between the saved run and this one."""
    diff = differences(meta["match"], match)
    if any(d.startswith("model.spec:") for d in diff):       # the spec says it shorter
        diff = [d for d in diff if not d.startswith("model.layers:")]
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise CheckpointMismatch(
            f"{path}: this checkpoint is of another run, refusing to continue or overwrite it "
            f"(saved -> now: {shown}). Use another checkpoint path, or delete the file to start "
            "again.")
