"""Architecture strings and presets."""

from __future__ import annotations

import numpy as np
import pytest

import nbcnn
from nbcnn import arch, layers


@pytest.mark.parametrize("name", sorted(arch.PRESETS))
def test_every_preset_builds_and_round_trips(name):
    shape = (3, 32, 32) if name.startswith("cifar") else (1, 28, 28)
    model = nbcnn.build(name, input_shape=shape, backend="numpy")
    assert model.output_shape == (10,)
    assert nbcnn.build(model.spec(), input_shape=shape, backend="numpy").spec() == model.spec()


def test_spec_arguments():
    conv, act, pool, flat, drop, dense = arch.parse(
        "conv(16,(3:5),same,stride=2,bias=false)-leaky_relu(0.2)-maxpool(3,2)-flatten-dropout(0.5)-dense(7)")
    assert (conv.filters, conv.kernel_size, conv.padding, conv.stride, conv.use_bias) == \
        (16, (3, 5), "same", (2, 2), False)
    assert isinstance(act, layers.LeakyReLU) and act.alpha == 0.2
    assert (pool.pool_size, pool.stride) == ((3, 3), (2, 2))
    assert isinstance(flat, layers.Flatten) and drop.p == 0.5 and dense.units == 7


def test_mnist_strided_preset_shapes():
    model = nbcnn.build("mnist-strided", input_shape=(1, 28, 28), backend="numpy")
    assert model.layers[0].output_shape((1, 28, 28)) == (1, 9, 9)
    assert model.count_params() == 5 + 81 * 30 + 30 + 30 * 20 + 20 + 20 * 10 + 10


def test_same_padding_with_stride_two():
    conv = layers.Conv2D(2, 3, stride=2, padding="same")
    assert conv.output_shape((1, 7, 8)) == (2, 4, 4)
    assert conv.pads == (1, 1, 0, 1)



def test_global_avgpool_string_alias_and_save_load(tmp_path):
    model = nbcnn.build("conv(6,3,same)-relu-gap-dense(10)", input_shape=(3, 7, 5), backend="numpy")
    assert isinstance(model.layers[2], layers.GlobalAvgPool2D)
    assert model.layers[3].input_shape == (6,)
    assert model.spec() == "conv(6,3,same)-relu-globalavgpool-dense(10)"
    assert nbcnn.build(model.spec(), input_shape=(3, 7, 5), backend="numpy").spec() == model.spec()
    model.save(tmp_path / "m.npz")
    loaded = nbcnn.Sequential.load(tmp_path / "m.npz")
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 5)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)


def test_pooling_options_in_strings_round_trip(tmp_path):
    spec = ("conv(4,3,same)-maxpool(3,2,padding=1)-"
            "avgpool(2,ceil_mode=true,count_include_pad=false)-"
            "avgpool((3:2),(2:1),padding=(1:0),ceil_mode=true)-flatten-dense(3)")
    model = nbcnn.build(spec, input_shape=(2, 11, 9), backend="numpy")
    assert model.spec() == spec
    mp, ap, ap2 = model.layers[1:4]
    assert (mp.pool_size, mp.stride, mp.padding, mp.ceil_mode) == ((3, 3), (2, 2), (1, 1), False)
    assert (ap.padding, ap.ceil_mode, ap.count_include_pad) == ((0, 0), True, False)
    assert (ap2.pool_size, ap2.stride, ap2.padding, ap2.count_include_pad) == \
        ((3, 2), (2, 1), (1, 0), True)
    assert [layer.output_shape(layer.input_shape) for layer in (mp, ap, ap2)] == \
        [(4, 6, 5), (4, 3, 3), (4, 2, 2)]
    model.save(tmp_path / "m.npz")
    loaded = nbcnn.Sequential.load(tmp_path / "m.npz")
    assert loaded.spec() == spec and loaded.layers[1].config() == mp.config()
    x = np.random.default_rng(1).standard_normal((2, 2, 11, 9)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)


def test_conv_dilation_groups_and_padding_strings():
    a, b, c = arch.parse("conv(16,3,same,dilation=2,groups=4)-conv(8,(3:5),(1:2:0:1),"
                         "stride=(2:1),dilation=(2:1),bias=false)-conv(16,3,(2:1),groups=8)")
    assert (a.filters, a.padding, a.dilation, a.groups) == (16, "same", (2, 2), 4)
    assert (b.padding, b.stride, b.dilation, b.groups, b.use_bias) == \
        ((1, 2, 0, 1), (2, 1), (2, 1), 1, False)
    assert (c.padding, c.groups) == ((2, 1), 8)
    assert a.spec() == "conv(16,3,same,dilation=2,groups=4)"
    assert b.spec() == "conv(8,(3:5),(1:2:0:1),stride=(2:1),dilation=(2:1),bias=false)"


ROUND_TRIP = ("conv(8,3,same,dilation=2,groups=2)-relu-conv(16,(3:2),(1:2:0:1),stride=2,"
              "dilation=(2:1),groups=4,bias=false)-conv(16,3,same,groups=16)-flatten-dense(3)")


def test_conv_options_round_trip(tmp_path):
    """spec(), config() (what a saved model holds) and save/load give the same model."""
    model = nbcnn.build(ROUND_TRIP, input_shape=(4, 11, 10), backend="numpy", seed=5)
    assert model.spec() == ROUND_TRIP
    again = nbcnn.build(model.spec(), input_shape=(4, 11, 10), backend="numpy", seed=5)
    assert again.config() == model.config()
    conv = model.layers[2]
    assert conv.get_weights()["weight"].shape == (16, 2, 3, 2)     # (filters, C // groups, kh, kw)
    assert model.layers[3].get_weights()["weight"].shape == (16, 1, 3, 3)
    for k, v in model.get_weights().items():
        np.testing.assert_array_equal(v, again.get_weights()[k])
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = nbcnn.Sequential.load(path, backend="numpy")
    assert loaded.spec() == ROUND_TRIP
    x = np.random.default_rng(0).standard_normal((2, 4, 11, 10)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_same_padding_counts_the_dilation():
    conv = layers.Conv2D(2, 3, padding="same", dilation=(2, 3))
    assert conv.output_shape((1, 7, 8)) == (2, 7, 8)
    assert conv.pads == (2, 2, 3, 3)
    conv = layers.Conv2D(2, 3, stride=2, padding="same", dilation=2)
    assert conv.output_shape((1, 7, 8)) == (2, 4, 4)
    assert conv.pads == (2, 2, 1, 2)


def test_grouped_init_uses_the_group_fan_in():
    """He init draws N(0, 2 / fan_in) with fan_in = (C // groups) * kh * kw, as PyTorch counts."""
    conv = layers.Conv2D(256, 3, groups=32, init="he", backend="numpy", seed=0)
    conv.forward(np.zeros((1, 64, 5, 5), np.float32))
    w = conv.get_weights()["weight"]
    assert w.shape == (256, 2, 3, 3)
    assert w.std() == pytest.approx(np.sqrt(2 / 18), rel=0.05)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_mobilenet_small_builds_and_trains(shape):
    from nbcnn import data, optim
    model = nbcnn.build("mobilenet-small", input_shape=shape, backend="numba", seed=0)
    assert model.output_shape == (10,)
    depthwise = [l for l in model.layers if isinstance(l, layers.Conv2D) and l.groups > 1]
    assert len(depthwise) == 4 and all(l.groups == l.input_shape[0] for l in depthwise)
    train = data.load("shapes", split="train", n=64, size=shape[1], channels=shape[0], seed=0)
    history = model.fit(train, epochs=1, batch_size=16, optimizer=optim.Adam(lr=1e-3),
                        verbose=False)
    assert np.isfinite(history["train_loss"]).all()
