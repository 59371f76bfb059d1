"""Training end to end: a small net learns, runs are reproducible, models save and load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbcnn
from nbcnn import data, optim
from nbcnn.model import HISTORY_COLUMNS

NET = "conv(8,3,same)-relu-maxpool(2)-conv(16,3,same)-relu-maxpool(2)-flatten-dense(2)"


@pytest.fixture(scope="module")
def two_shapes():
    kw = dict(n=600, size=16, classes=["cross", "circle"], seed=0)
    return data.load("shapes", split="train", **kw), data.load("shapes", split="test", **kw)


def test_small_net_learns_generated_shapes(two_shapes):
    train, test = two_shapes
    model = nbcnn.build(NET, input_shape=train.input_shape, backend="numba", seed=0)
    history = model.fit(train, epochs=4, batch_size=16, optimizer=optim.Adam(lr=3e-3),
                        validation=test, verbose=False)
    assert list(history.columns) == HISTORY_COLUMNS
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["val_accuracy"].iloc[-1] >= 0.9
    scores = model.evaluate(test)
    assert scores["accuracy"] == pytest.approx(history["val_accuracy"].iloc[-1])
    assert (history["images_per_second"] > 0).all()


def _history(train, backend, seed):
    model = nbcnn.build("conv(4,3)-relu-maxpool(2)-flatten-dropout(0.25)-dense(2)",
                        input_shape=train.input_shape, backend=backend, seed=seed)
    h = model.fit(train[:200], epochs=2, batch_size=10,
                  optimizer=optim.SGD(lr=0.05, momentum=0.9), verbose=False)
    return h.drop(columns=["seconds", "images_per_second"]), model


def test_same_seed_gives_identical_histories(two_shapes):
    train, _ = two_shapes
    h1, m1 = _history(train, "numba", seed=3)
    h2, m2 = _history(train, "numba", seed=3)
    pd.testing.assert_frame_equal(h1, h2, check_exact=True)
    for k, v in m1.get_weights().items():
        np.testing.assert_array_equal(v, m2.get_weights()[k])
    h3, _ = _history(train, "numba", seed=4)
    assert not h1.equals(h3)


def test_numba_trains_like_the_reference(two_shapes):
    """The same seed on numpy and numba gives the same training, to float32 rounding."""
    train, _ = two_shapes
    h_ref, _ = _history(train, "numpy", seed=1)
    h_nb, _ = _history(train, "numba", seed=1)
    np.testing.assert_allclose(h_nb["train_loss"], h_ref["train_loss"], rtol=1e-3)


def test_save_then_load_predicts_identically(tmp_path, two_shapes):
    train, test = two_shapes
    model = nbcnn.build("conv(4,3,same)-batchnorm-relu-maxpool(2)-flatten-dense(2)",
                        input_shape=train.input_shape, backend="numba", seed=0)
    model.fit(train[:100], epochs=1, batch_size=20, verbose=False)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = nbcnn.Sequential.load(path)
    assert loaded.spec() == model.spec()
    np.testing.assert_array_equal(loaded.predict(test.x[:50]), model.predict(test.x[:50]))
    assert loaded.get_weights()["1.running_var"].shape == (4,)
    # the file holds only plain arrays: it loads with pickling disabled
    with np.load(path, allow_pickle=False) as f:
        assert "config" in f.files


def test_fit_accepts_arrays_and_builds_lazily():
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 8, 8), dtype=np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > x[:, 0, 4:].mean(axis=(1, 2))).astype(np.int64)
    model = nbcnn.Sequential(nbcnn.layers.Conv2D(4, 3), nbcnn.layers.ReLU(), nbcnn.layers.Flatten(),
                             nbcnn.layers.Dense(2), backend="numba", seed=0)
    history = model.fit((x, y), epochs=2, batch_size=8, verbose=False)
    assert len(history) == 2 and model.input_shape == (1, 8, 8)
    assert model.predict(x).shape == (40, 2)


def test_summary_lists_layers_shapes_and_parameters():
    model = nbcnn.build("mnist-simple", input_shape=(1, 28, 28), backend="numpy")
    text = model.summary()
    assert "Conv2D(8, 3x3)" in text and "(N, 8, 28, 28)" in text and "15,690" in text
    assert model.count_params() == 8 * 9 + 8 + 1568 * 10 + 10


def test_he_init_before_relu_and_glorot_otherwise():
    model = nbcnn.build("conv(64,3)-relu-flatten-dense(10)", input_shape=(16, 9, 9), backend="numpy")
    conv, dense = model.layers[0], model.layers[3]
    assert conv.resolved_init == "he" and dense.resolved_init == "glorot"
    assert conv.init == dense.init == "auto"          # the configs keep what was written
    std = conv.get_weights()["weight"].std()
    assert std == pytest.approx(np.sqrt(2 / (16 * 9)), rel=0.05)


def test_learning_rate_schedule_is_applied_per_epoch(two_shapes):
    train, _ = two_shapes
    model = nbcnn.build("flatten-dense(2)", input_shape=train.input_shape, backend="numba")
    opt = optim.SGD(lr=0.1, schedule=optim.StepDecay(1, gamma=0.5))
    h = model.fit(train[:50], epochs=3, batch_size=25, optimizer=opt, verbose=False)
    np.testing.assert_allclose(h["learning_rate"], [0.1, 0.05, 0.025])


def test_schedules_compose():
    s = optim.Warmup(2) * optim.CosineDecay(10)
    assert s.factor(0) == pytest.approx(1 / 3)
    assert s.factor(10) == pytest.approx(0.0)
    assert optim.ExponentialDecay(0.5).factor(3) == 0.125


def test_standalone_layer_on_numpy_arrays():
    conv = nbcnn.layers.Conv2D(3, kernel_size=3, padding=1, backend="numba", seed=0)
    x = np.random.default_rng(0).random((2, 1, 5, 5), dtype=np.float32)
    y = conv.forward(x)
    assert y.shape == (2, 3, 5, 5)
    dx = conv.backward(np.ones_like(y))
    assert dx.shape == x.shape
    assert set(conv.get_grads()) == {"weight", "bias"}
    conv.set_weights({"bias": np.ones(3, np.float32)})
    assert np.array_equal(conv.get_weights()["bias"], np.ones(3))


def test_default_backend_can_be_switched(monkeypatch):
    from nbcnn import backends
    monkeypatch.setattr(backends, "_default", None)
    monkeypatch.setenv("NBCNN_BACKEND", "numpy")
    assert backends.get_backend().name == "numpy"
    nbcnn.set_backend("numba")
    assert nbcnn.layers.ReLU().forward(np.ones((1, 2))).shape == (1, 2)
    assert backends.get_backend().name == "numba"


def test_thread_count_can_be_set():
    before = nbcnn.get_num_threads()
    nbcnn.set_num_threads(1)
    assert nbcnn.get_num_threads() == 1
    nbcnn.set_num_threads(before)
    with pytest.raises(ValueError, match="thread count"):
        nbcnn.set_num_threads(0)


def test_activations_gives_each_layers_output():
    model = nbcnn.build("conv(3,3,same)-relu-maxpool(2)-flatten-dense(2)", (1, 6, 6), backend="numba")
    x = np.random.default_rng(0).random((2, 1, 6, 6), dtype=np.float32)
    outs = model.activations(x)
    assert [o.shape for o in outs] == [(2, 3, 6, 6), (2, 3, 6, 6), (2, 3, 3, 3), (2, 27), (2, 2)]
    assert (outs[1] >= 0).all()
    np.testing.assert_array_equal(outs[-1], model.predict(x))
    assert len(model.activations(x, upto=2)) == 2


def test_schedules_from_strings():
    s = optim.parse_schedule("warmup:1*cosine", epochs=4)
    assert [round(s.factor(e), 4) for e in range(4)] == [0.5, 0.8536, 0.5, 0.1464]
    assert optim.parse_schedule("step:2:0.5", epochs=9).factor(5) == 0.25
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.parse_schedule("linear", epochs=3)
