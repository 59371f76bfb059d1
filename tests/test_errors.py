"""Bad input gets a clear error naming what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest

import nbcnn
from nbcnn import layers, optim


@pytest.fixture
def model():
    return nbcnn.build("mnist-tiny", input_shape=(1, 12, 12), backend="numba", seed=0)


def _data(n=20, shape=(1, 12, 12)):
    rng = np.random.default_rng(0)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, 10, n)


def test_wrong_input_shape(model):
    x, y = _data(shape=(1, 10, 12))
    with pytest.raises(ValueError, match=r"\(N, 1, 12, 12\).*\(20, 1, 10, 12\)"):
        model.fit((x, y), verbose=False)


def test_wrong_rank(model):
    x, _ = _data()
    with pytest.raises(ValueError, match="rank 3"):
        model.predict(x[:, 0])


def test_labels_out_of_range(model):
    x, y = _data()
    y[3] = 10
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\).*10"):
        model.fit((x, y), verbose=False)
    with pytest.raises(TypeError, match="integer"):
        model.evaluate((x, y.astype(np.float32)))


def test_non_finite_inputs(model):
    x, y = _data()
    x[1, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit((x, y), verbose=False)


def test_unknown_layer_in_spec():
    with pytest.raises(ValueError, match="unknown layer 'convolution'.*conv"):
        nbcnn.build("convolution(8,3)-flatten-dense(10)", input_shape=(1, 8, 8))


@pytest.mark.parametrize("spec,match", [
    ("conv(8,3)--dense(10)", "empty layer"),
    ("conv(8,3-flatten", "unbalanced"),
    ("dense(10,1,2)", "at most 1 positional"),
    ("conv(8,3,bogus=1)-flatten-dense(10)", "bad arguments"),
])
def test_malformed_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        nbcnn.build(spec, input_shape=(1, 8, 8))


def test_impossible_geometry():
    with pytest.raises(ValueError, match="kernel 5x5 is larger than the padded input 3x3"):
        nbcnn.build("conv(4,5)-flatten-dense(2)", input_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="larger than the padded input"):
        nbcnn.build("maxpool(4)-flatten-dense(2)", input_shape=(1, 3, 8))


def test_pooling_padding_beyond_half_the_window():
    """PyTorch refuses it ("pad should be at most half of effective kernel size"); so do we."""
    with pytest.raises(ValueError, match="MaxPool2D: padding 2 must be at most half the pool "
                                         "size 3"):
        layers.MaxPool2D(3, 2, padding=2)
    with pytest.raises(ValueError, match=r"AvgPool2D: padding \(1, 2\) must be at most half the "
                                         r"pool size 3"):
        layers.AvgPool2D(3, padding=(1, 2))
    with pytest.raises(ValueError, match="at most half"):
        nbcnn.build("maxpool(2,padding=2)-flatten-dense(2)", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        layers.MaxPool2D(3, padding=-1)
    with pytest.raises(TypeError, match="ceil_mode must be true or false"):
        layers.AvgPool2D(2, ceil_mode="yes")
    with pytest.raises(ValueError, match="count_include_pad must be true or false"):
        nbcnn.build("avgpool(2,count_include_pad=1)-flatten-dense(2)", input_shape=(1, 8, 8))


def test_dense_on_images_says_to_flatten():
    with pytest.raises(ValueError, match="Flatten"):
        nbcnn.build("conv(4,3)-dense(10)", input_shape=(1, 8, 8))


def test_model_must_end_in_class_scores():
    with pytest.raises(ValueError, match="class scores"):
        nbcnn.build("conv(4,3)-relu", input_shape=(1, 8, 8))


def test_standalone_layer_rejects_a_changed_shape():
    conv = layers.Conv2D(2, 3, backend="numpy")
    conv.forward(np.zeros((1, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, 5, 5\)"):
        conv.forward(np.zeros((1, 2, 5, 5), np.float32))


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="filters"):
        layers.Conv2D(0, 3)
    with pytest.raises(TypeError, match="kernel_size"):
        layers.Conv2D(4, "3")
    with pytest.raises(ValueError, match="padding"):
        layers.Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="Dropout"):
        layers.Dropout(1.0)


def test_bad_conv_options():
    with pytest.raises(ValueError, match=r"Conv2D dilation must be >= 1, got \(0, 0\)"):
        layers.Conv2D(4, 3, dilation=0)
    with pytest.raises(ValueError, match="dilation"):
        nbcnn.build("conv(4,3,dilation=(2:0))", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="groups=3 must divide filters=4"):
        layers.Conv2D(4, 3, groups=3)
    with pytest.raises(ValueError, match="groups must be a positive int, got 0"):
        layers.Conv2D(4, 3, groups=0)
    with pytest.raises(ValueError, match=r"Conv2D\(8, 3x3, groups=4\): groups=4 must divide "
                                         r"both in_channels=6 and filters=8"):
        nbcnn.build("conv(8,3,groups=4)", input_shape=(6, 8, 8))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        layers.Conv2D(4, 3, padding=(1, 0, -1, 0))
    with pytest.raises(TypeError, match="4-tuple"):
        layers.Conv2D(4, 3, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="larger than the padded input"):
        nbcnn.build("conv(4,3,dilation=4)", input_shape=(1, 8, 8))     # spans 9 rows


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        nbcnn.build("mnist-tiny", input_shape=(1, 12, 12), backend="cuda")


def test_nan_loss_stops_fit_and_keeps_finite_weights(model):
    x, y = _data(n=64)
    with pytest.raises(nbcnn.TrainingDiverged, match=r"epoch 1, batch \d+ of 8"):
        model.fit((x * 1e3, y), epochs=3, batch_size=8, optimizer=optim.SGD(lr=1e12), verbose=False)
    weights = model.get_weights()
    assert all(np.isfinite(w).all() for w in weights.values())


def test_bad_optimizer_settings():
    with pytest.raises(ValueError, match="lr"):
        optim.SGD(lr=0)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.make("lbfgs", lr=1)


def test_loading_a_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match="not an nbcnn model"):
        nbcnn.Sequential.load(path)
