"""Checkpoints: a resumed run ends exactly like one never interrupted; other runs' and broken
checkpoints are refused; ``nbcnn train --checkpoint`` survives a SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import nbcnn
from conftest import backend_or_skip
from interrupt import kill_once_checkpointed
from nbcnn import checkpoint as ckpt
from nbcnn import data, optim
from nbcnn.callbacks import EarlyStopping
from nbcnn.checkpoint import CheckpointError, CheckpointMismatch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# dropout and batch norm: random state and buffers that a resume must bring back
NET = "conv(4,3)-batchnorm-relu-maxpool(2)-flatten-dropout(0.3)-dense(4)"
TIMING = ["seconds", "images_per_second"]


@pytest.fixture(scope="module")
def shapes():
    train = data.load("shapes", split="train", n=120, size=10, seed=0)
    return train.split(0.25, seed=0)


class Interrupted(Exception):
    pass


def _fit(backend, train, val, path=None, epochs=4, stop_after=None, lr=3e-3, net=NET, seed=5,
         batch_size=16, augment="crop:1,flip", clip_grad_norm=None, **kw):
    """fit with the settings every test shares; ``stop_after=k`` raises right after the k-th
    checkpoint is written, as a kill between two epochs would leave it."""
    model = nbcnn.build(net, input_shape=train.input_shape, backend=backend_or_skip(backend),
                        seed=seed)
    real_save, saved = ckpt.save, []

    def save(*args):
        real_save(*args)
        saved.append(1)
        if len(saved) == stop_after:
            raise Interrupted

    ckpt.save = save
    try:
        history = model.fit(train, epochs=epochs, batch_size=batch_size, validation=val,
                            optimizer=optim.Adam(lr=lr, schedule=optim.CosineDecay(epochs),
                                                 clip_grad_norm=clip_grad_norm),
                            augment=augment, checkpoint=path, verbose=False, **kw)
    finally:
        ckpt.save = real_save
    return history, model


def assert_same_run(h1, m1, h2, m2):
    pd.testing.assert_frame_equal(h1.drop(columns=TIMING), h2.drop(columns=TIMING),
                                  check_exact=True)
    w1, w2 = m1.get_weights(), m2.get_weights()
    assert w1.keys() == w2.keys()
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k], err_msg=k)


@pytest.mark.parametrize("backend", ["numpy", "numba", "opencl"])
def test_resumed_run_equals_uninterrupted_one(shapes, tmp_path, backend):
    train, val = shapes
    h_full, m_full = _fit(backend, train, val)
    path = tmp_path / "run.ckpt.npz"
    with pytest.raises(Interrupted):
        _fit(backend, train, val, path, stop_after=2)
    meta, _ = ckpt.load(path)
    assert meta["epochs_done"] == 2 and len(meta["history"]) == 2
    h_resumed, m_resumed = _fit(backend, train, val, path)
    assert h_resumed.attrs["resumed_epochs"] == 2
    assert_same_run(h_full, m_full, h_resumed, m_resumed)
    # a finished run's checkpoint gives the same run again without training
    h_again, m_again = _fit(backend, train, val, path)
    assert h_again.attrs["resumed_epochs"] == 4
    assert_same_run(h_full, m_full, h_again, m_again)


def test_file_honours_the_umask_and_holds_no_pickle(shapes, tmp_path):
    train, val = shapes
    old = os.umask(0o022)
    try:
        _fit("numba", train, val, tmp_path / "c.ckpt.npz", epochs=1)
    finally:
        os.umask(old)
    path = tmp_path / "c.ckpt.npz"
    assert (os.stat(path).st_mode & 0o777) == 0o644
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    with np.load(path, allow_pickle=False) as f:            # would raise on an object array
        assert all(f[k].dtype != object for k in f.files)
        meta = json.loads(str(f["meta"]))
    assert meta["format"] == "nbcnn.checkpoint" and meta["optimizer"]["steps"] == 6
    assert {"model.shuffle", "layer5._rng"} <= set(meta["random"])      # dropout's generator


@pytest.mark.parametrize("change,where", [
    (dict(lr=1e-3), "fit.optimizer.lr: 0.003 -> 0.001"),
    (dict(epochs=5), "fit.epochs: 4 -> 5"),
    (dict(data=True), "data.sha1"),
    (dict(early_stopping=EarlyStopping(patience=2)), "fit.early_stopping"),
    (dict(batch_size=8), "fit.batch_size: 16 -> 8"),
    (dict(augment="flip"), "fit.augment: 'crop:1,flip' -> 'flip'"),
    (dict(clip_grad_norm=1.0), "fit.optimizer.clip_grad_norm: None -> 1.0"),
    (dict(net=NET.replace("dropout(0.3)", "dropout(0.5)")), "model.layers.5.p: 0.3 -> 0.5"),
    (dict(net=NET.replace("conv(4,3)", "conv(4,3,init=glorot)")),
     "model.layers.0.init: 'he' -> 'glorot'"),
    (dict(seed=6), "model.seed: 5 -> 6"),
    (dict(validation=True), "validation.sha1"),
])
def test_mismatching_checkpoint_is_refused_and_kept(shapes, tmp_path, change, where):
    train, val = shapes
    path = tmp_path / "run.ckpt.npz"
    with pytest.raises(Interrupted):
        _fit("numba", train, val, path, stop_after=1)
    before = path.read_bytes()
    kw = dict(change)
    if kw.pop("data", False):
        train = train[1:]
    if kw.pop("validation", False):
        val = val[1:]
    with pytest.raises(CheckpointMismatch, match="refusing") as info:
        _fit("numba", train, val, path, **kw)
    assert where in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before


def test_other_architecture_is_refused(shapes, tmp_path):
    train, val = shapes
    path = tmp_path / "run.ckpt.npz"
    with pytest.raises(Interrupted):
        _fit("numba", train, val, path, stop_after=1)
    model = nbcnn.build("flatten-dense(4)", input_shape=train.input_shape, seed=5)
    with pytest.raises(CheckpointMismatch, match="model.spec: .conv") as info:
        model.fit(train, epochs=4, batch_size=16, checkpoint=path, verbose=False)
    assert "flatten-dense(4)" in str(info.value) and "model.layers" not in str(info.value)


# ---- checkpoints written by an older nbcnn ------------------------------------------------
@pytest.fixture(scope="module")
def half_run(shapes, tmp_path_factory):
    """(the checkpoint's bytes after 2 of 4 epochs, the uninterrupted run's history and model)."""
    train, val = shapes
    path = tmp_path_factory.mktemp("half") / "run.ckpt.npz"
    with pytest.raises(Interrupted):
        _fit("numba", train, val, path, stop_after=2)
    return path.read_bytes(), _fit("numba", train, val)


def _edit(path, change) -> None:
    """Rewrite the checkpoint at ``path`` with ``change(meta, arrays)`` applied."""
    meta, arrays = ckpt.load(path)
    change(meta, arrays)
    ckpt.save(path, meta, arrays)


def _layers(meta):
    return meta["match"]["model"]["layers"]


def _without_new_layer_keys(meta, arrays):     # an nbcnn before dilation and groups
    for key in ("dilation", "groups"):
        del _layers(meta)[0]["config"][key]


def _init_resolved(meta, arrays):              # an nbcnn that saved the init it drew with
    _layers(meta)[0]["config"]["init"] = "he"      # conv before batchnorm-relu
    _layers(meta)[-1]["config"]["init"] = "glorot"  # the last dense


def _older_spec_and_retired_argument(meta, arrays):
    # a config this nbcnn cannot read (dropout took an argument it no longer has, at its
    # default), so the spec is read instead, written with aliases and defaults spelt out
    _layers(meta)[5]["config"]["inplace"] = False
    meta["match"]["model"]["spec"] = \
        "conv2d(4,(3:3),0,stride=1)-bn(0.1,1e-05)-relu-maxpool(2,2)-flatten-dropout(0.3)-fc(4)"


def _optimizer_before_clipping(meta, arrays):
    del meta["match"]["fit"]["optimizer"]["clip_grad_norm"]
    del meta["defaults"]["optimizer"]["clip_grad_norm"]


def _optimizer_with_retired_setting(meta, arrays):   # "amsgrad", off by default then
    meta["match"]["fit"]["optimizer"]["amsgrad"] = False
    meta["defaults"]["optimizer"]["amsgrad"] = False


def _fit_settings_of_an_int_writer(meta, arrays):     # 0 for 0.0: the same number
    meta["match"]["fit"]["label_smoothing"] = 0
    meta["match"]["fit"]["augment"] = "flip, crop:1"


def _slots_in_another_order(meta, arrays):
    """A parameter order other than this nbcnn's: format 2 finds each state by its name."""
    opt = meta["optimizer"]
    n = len(opt["params"])
    opt["params"] = opt["params"][::-1]
    opt["slots"] = {str(n - 1 - int(i)): flags for i, flags in opt["slots"].items()}
    moved = {}
    for k in [k for k in arrays if k.startswith("optim:")]:
        _, i, j = k.split(":")
        moved[f"optim:{n - 1 - int(i)}:{j}"] = arrays.pop(k)
    arrays.update(moved)


def _format_1(meta, arrays):
    meta["version"] = 1
    for key in ("nbcnn_version", "defaults"):
        del meta[key]
    del meta["optimizer"]["params"]


@pytest.mark.parametrize("change", [
    _without_new_layer_keys, _init_resolved, _older_spec_and_retired_argument,
    _optimizer_before_clipping, _optimizer_with_retired_setting, _fit_settings_of_an_int_writer,
    _slots_in_another_order, _format_1])
def test_checkpoint_of_an_older_nbcnn_continues_exactly(shapes, tmp_path, half_run, change):
    train, val = shapes
    saved, (h_full, m_full) = half_run
    path = tmp_path / "run.ckpt.npz"
    path.write_bytes(saved)
    _edit(path, change)
    h_resumed, m_resumed = _fit("numba", train, val, path)
    assert h_resumed.attrs["resumed_epochs"] == 2
    assert_same_run(h_full, m_full, h_resumed, m_resumed)
    meta, _ = ckpt.load(path)                           # written again in today's format
    assert meta["version"] == ckpt.VERSION and meta["nbcnn_version"] == nbcnn.__version__


def _shape(name, shape):
    def change(meta, arrays):
        arrays[name] = arrays[name].reshape(shape)
    return change


def _set(where, value):
    def change(meta, arrays):
        *path, last = where
        node = meta
        for k in path:
            node = node[k]
        node[last] = value
    return change


def _spec_read_and_other(meta, arrays):
    """A config this nbcnn cannot read, so the spec is, and it says another batch norm."""
    _layers(meta)[5]["config"]["inplace"] = False
    meta["match"]["model"]["spec"] = NET.replace("batchnorm", "batchnorm(0.2)")


def _rename_generator(meta, arrays):
    meta["random"]["layer5.rng"] = meta["random"].pop("layer5._rng")


@pytest.mark.parametrize("change,where", [
    (_set(("match", "fit", "optimizer", "amsgrad"), True),
     "fit.optimizer.amsgrad: True -> (a setting nbcnn"),
    (_set(("match", "fit", "optimizer", "beta1"), 0.8), "fit.optimizer.beta1: 0.8 -> 0.9"),
    (_set(("match", "model", "layers", 0, "config", "init"), "glorot"),
     "model.layers.0.init: 'glorot' -> 'he'"),
    (_spec_read_and_other, "model.layers.1.momentum: 0.2 -> 0.1"),
    (_set(("match", "model", "spec"), "conv(4,3)-relu-flatten-dense(4)"), None),   # config wins
    (_shape("weight:0.bias", (4, 1)), "weights.0.bias: [4, 1] -> [4]"),
    (_rename_generator, "random generators: ["),
])
def test_older_checkpoint_that_means_another_run_is_refused(shapes, tmp_path, half_run, change,
                                                            where):
    train, val = shapes
    path = tmp_path / "run.ckpt.npz"
    path.write_bytes(half_run[0])
    _edit(path, change)
    if where is None:
        assert _fit("numba", train, val, path)[0].attrs["resumed_epochs"] == 2
        return
    before = path.read_bytes()
    with pytest.raises(CheckpointMismatch, match="refusing") as info:
        _fit("numba", train, val, path)
    assert where in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before


def test_checkpoint_of_a_newer_format_is_refused(shapes, tmp_path, half_run):
    train, val = shapes
    path = tmp_path / "run.ckpt.npz"
    path.write_bytes(half_run[0])
    _edit(path, lambda meta, arrays: meta.update(version=ckpt.VERSION + 1,
                                                 nbcnn_version="9.9.0"))
    with pytest.raises(CheckpointError, match="is newer than nbcnn") as info:
        _fit("numba", train, val, path)
    text = str(info.value)
    assert str(path) in text and "9.9.0" in text and f"version {ckpt.VERSION + 1}" in text
    assert "delete the file" in text


@pytest.mark.parametrize("cut", [0.5, 0.97, 10])
def test_truncated_checkpoint_is_refused_naming_the_file(shapes, tmp_path, cut):
    train, val = shapes
    path = tmp_path / "run.ckpt.npz"
    with pytest.raises(Interrupted):
        _fit("numba", train, val, path, stop_after=1)
    data_ = path.read_bytes()
    path.write_bytes(data_[:int(len(data_) * cut)] if cut < 1 else data_[:cut])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        _fit("numba", train, val, path)
    assert str(path) in str(info.value)


def test_a_model_file_is_not_a_checkpoint(shapes, tmp_path):
    train, val = shapes
    _, model = _fit("numba", train, val, epochs=1)
    model.save(tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match="not an nbcnn checkpoint"):
        _fit("numba", train, val, tmp_path / "m.npz")


def test_early_stopping_state_survives_a_resume(shapes, tmp_path):
    train, val = shapes
    stop = dict(monitor="val_accuracy", min_delta=1.0, patience=2)   # stops after epoch 3
    h_full, m_full = _fit("numba", train, val, epochs=6, early_stopping=EarlyStopping(**stop))
    path = tmp_path / "run.ckpt.npz"
    with pytest.raises(Interrupted):
        _fit("numba", train, val, path, epochs=6, stop_after=2,
             early_stopping=EarlyStopping(**stop))
    h_res, m_res = _fit("numba", train, val, path, epochs=6, early_stopping=EarlyStopping(**stop))
    assert h_res.attrs["stopped_epoch"] == h_full.attrs["stopped_epoch"] == 3
    assert h_res.attrs["kept_epoch"] == 1
    assert_same_run(h_full, m_full, h_res, m_res)


# ---- nbcnn train --checkpoint, killed -----------------------------------------------------------
def _train_cmd(tmp_path, tag, checkpoint=None):
    cmd = [sys.executable, "-m", "nbcnn", "train", "--dataset", "shapes", "--limit", "1500",
           "--arch", "conv(8,3)-relu-maxpool(2)-flatten-dropout(0.2)-dense(4)",
           "--backend", "numba", "--threads", "1", "--epochs", "6", "--batch-size", "8",
           "--optimizer", "adam", "--lr", "0.002", "--augment", "crop:2,flip", "--quiet",
           "--history", str(tmp_path / f"{tag}.csv"), "--save", str(tmp_path / f"{tag}.npz")]
    return cmd + (["--checkpoint", str(checkpoint)] if checkpoint else [])


def test_train_command_killed_then_run_again_continues(tmp_path):
    path = tmp_path / "run.ckpt.npz"
    cmd = _train_cmd(tmp_path, "killed", path)
    done = kill_once_checkpointed(cmd, path)
    assert 2 <= done < 6
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"continued from checkpoint {path} after epoch {done}" in again.stdout
    plain = subprocess.run(_train_cmd(tmp_path, "plain"), cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr

    h_killed = pd.read_csv(tmp_path / "killed.csv").drop(columns=TIMING)
    h_plain = pd.read_csv(tmp_path / "plain.csv").drop(columns=TIMING)
    assert len(h_plain) == 6
    pd.testing.assert_frame_equal(h_killed, h_plain, check_exact=True)
    with np.load(tmp_path / "killed.npz") as a, np.load(tmp_path / "plain.npz") as b:
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("name,settings", [
    ("sgd", {}), ("sgd", {"momentum": 0.9, "nesterov": True}), ("adam", {"weight_decay": 0.1}),
    ("rmsprop", {}), ("rmsprop", {"momentum": 0.5}),
    *[(n, {}) for n in optim.OPTIMIZERS if n not in ("sgd", "adam", "rmsprop")]])
def test_optimizer_state_dict_continues_exactly(name, settings):
    """Two optimizers, one continued from the other's state_dict, take identical steps."""
    be = backend_or_skip("numba")
    rng = np.random.default_rng(0)
    params = [be.from_numpy(rng.standard_normal(s).astype(np.float32)) for s in ((3, 4), (5,))]

    def grads():
        return [be.from_numpy(rng.standard_normal(p.shape).astype(np.float32)) for p in params]

    first = optim.make(name, lr=0.01, **settings)
    for _ in range(3):
        first.step(be, list(zip(params, grads())))
    state = first.state_dict(be)
    assert state["steps"] == 3 and sorted(state["state"]) == [0, 1]
    second = optim.make(name, lr=0.01, **settings)
    second.load_state_dict(state, be)
    twins = [be.from_numpy(be.to_numpy(p)) for p in params]
    for _ in range(2):
        g = grads()
        first.step(be, list(zip(params, g)))
        second.step(be, list(zip(twins, [be.from_numpy(be.to_numpy(x)) for x in g])))
    for a, b in zip(params, twins):
        np.testing.assert_array_equal(be.to_numpy(a), be.to_numpy(b))
    assert second.steps == first.steps == 5


def test_progress_reads_how_far_a_run_got(tmp_path, half_run):
    path = tmp_path / "run.ckpt.npz"
    path.write_bytes(half_run[0])
    got = ckpt.progress(path)
    history = ckpt.load(path)[0]["history"]
    assert (got["epochs_done"], got["epochs"]) == (2, 4)
    assert got["seconds"] == pytest.approx(sum(row["seconds"] for row in history)) and \
        got["seconds"] > 0
    assert got["last"] == history[-1] and got["last"]["epoch"] == 2
    path.write_bytes(half_run[0][:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ckpt.progress(path)
