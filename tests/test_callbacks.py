"""Early stopping stops and restores; an exploding loss is flagged, a normal one is not."""

from __future__ import annotations

import numpy as np
import pytest

import nbcnn
from nbcnn import data, optim
from nbcnn.callbacks import EXPLOSION_FACTOR, EarlyStopping, explosion_warning

NET = "conv(4,3)-relu-maxpool(2)-flatten-dense(4)"


@pytest.fixture(scope="module")
def shapes():
    train = data.load("shapes", split="train", n=120, size=10, seed=0)
    return train.split(0.25, seed=0)


def _fit(train, val, epochs, **kw):
    model = nbcnn.build(NET, input_shape=train.input_shape, backend="numba", seed=2)
    history = model.fit(train, epochs=epochs, batch_size=16, validation=val,
                        optimizer=optim.SGD(lr=0.05, momentum=0.9), verbose=False, **kw)
    return history, model


def test_stops_after_patience_and_restores_the_best_weights(shapes):
    train, val = shapes
    # nothing improves by more than 1 (an accuracy): epoch 1 stays the best
    stop = EarlyStopping(patience=3, monitor="val_accuracy", min_delta=1.0)
    history, model = _fit(train, val, 10, early_stopping=stop)
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert history.attrs["stopped_epoch"] == 4 and history.attrs["kept_epoch"] == 1
    _, after_one = _fit(train, val, 1)
    for k, v in after_one.get_weights().items():
        np.testing.assert_array_equal(model.get_weights()[k], v, err_msg=k)
    assert model.evaluate(val)["loss"] == pytest.approx(history["val_loss"].iloc[0])


def test_without_restore_keeps_the_last_weights(shapes):
    train, val = shapes
    stop = EarlyStopping(patience=2, monitor="train_loss", min_delta=100.0, restore_best=False)
    history, model = _fit(train, None, 10, early_stopping=stop)
    assert history.attrs["stopped_epoch"] == 3 and history.attrs["kept_epoch"] == 3
    _, plain = _fit(train, None, 3)
    for k, v in plain.get_weights().items():
        np.testing.assert_array_equal(model.get_weights()[k], v, err_msg=k)


def test_improving_run_is_not_stopped(shapes):
    train, val = shapes
    history, _ = _fit(train, val, 3, early_stopping=EarlyStopping(patience=1, monitor="train_loss"))
    assert history["train_loss"].is_monotonic_decreasing      # so it never waits
    assert len(history) == 3 and history.attrs["stopped_epoch"] is None
    assert history.attrs["kept_epoch"] == 3


def test_direction_follows_the_monitor():
    for monitor, values, stops_at in (("val_loss", [1.0, 0.9, 0.95, 0.96], 4),
                                      ("val_accuracy", [0.5, 0.6, 0.55, 0.58], 4),
                                      ("val_accuracy", [0.5, 0.4, 0.7, 0.6], None),
                                      ("train_loss", [1.0, 1.1, 1.2, 0.5], 3)):
        stop = EarlyStopping(patience=2, monitor=monitor, restore_best=False)
        stopped = None
        for epoch, v in enumerate(values, 1):
            if stop.update({"epoch": epoch, monitor: v}, model=None):
                stopped = epoch
                break
        assert stopped == stops_at, (monitor, values)


def test_bad_settings_are_refused(shapes):
    train, _ = shapes
    with pytest.raises(ValueError, match="needs validation data"):
        _fit(train, None, 2, early_stopping=EarlyStopping(monitor="val_loss"))
    with pytest.raises(ValueError, match="unknown monitor 'loss'"):
        EarlyStopping(monitor="loss")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
    with pytest.raises(TypeError, match="EarlyStopping"):
        _fit(train, None, 1, early_stopping=5)


# ---- exploding losses ------------------------------------------------------------------------
def test_explosion_threshold():
    assert explosion_warning(7819.0, 4.0, 10).startswith("loss exploding: 7819")
    assert explosion_warning(EXPLOSION_FACTOR * 4.0 * 0.99, 4.0, 10) == ""
    # ten times a tiny first loss is still below a uniform guess: no warning
    assert explosion_warning(0.05, 0.001, 10) == ""
    assert explosion_warning(float("nan"), 1.0, 10) == ""


def test_exploding_run_is_flagged_and_normal_one_is_not(shapes, capsys):
    train, _ = shapes
    model = nbcnn.build("flatten-dense(4)", input_shape=train.input_shape, backend="numba", seed=0)
    # the learning rate grows 30x an epoch: the loss climbs without turning NaN
    history = model.fit(train, epochs=4, batch_size=8, verbose=True,
                        optimizer=optim.SGD(lr=0.01, momentum=0.9,
                                            schedule=optim.ExponentialDecay(30)))
    assert np.isfinite(history["train_loss"]).all()
    flagged = [w != "" for w in history["warning"]]
    assert flagged[0] is False and flagged[-1] is True
    first = history["train_loss"].iloc[0]
    assert flagged == [bool(v > EXPLOSION_FACTOR * first) for v in history["train_loss"]]
    assert "WARNING: loss exploding" in capsys.readouterr().out
    normal, _ = _fit(train, None, 4)
    assert (normal["warning"] == "").all()
