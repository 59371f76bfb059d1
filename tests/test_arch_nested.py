"""Architecture strings with residual blocks: round trips, malformed nested strings, and the
CIFAR ResNet presets."""

from __future__ import annotations

import re

import numpy as np
import pytest

import nbcnn
from nbcnn import arch, layers as L

ROUND_TRIPS = {
    # every layer the strings know, with non-default arguments
    "every-layer": ("conv(6,(3:2),same,stride=(2:1),bias=false)-batchnorm(0.3,0.001)-"
                    "leaky_relu(0.125)-maxpool(2,1)-avgpool((2:1))-residual(sigmoid-tanh)-"
                    "conv(6,1)-relu-dropout(0.375)-globalavgpool-dense(5,bias=false)-dense(3)"),
    "identity": "conv(4,3,same)-residual(conv(4,3,same)-batchnorm-relu-conv(4,3,same))-relu-"
                "flatten-dense(2)",
    "projection": "residual(conv(8,3,1,stride=2)-batchnorm,conv(8,1,stride=2)-batchnorm)-relu-"
                  "globalavgpool-dense(2)",
    "nested-in-body": "residual(conv(3,3,same)-residual(relu-residual(conv(3,1)))-batchnorm)-"
                      "flatten-dense(2)",
    "nested-in-shortcut": "residual(conv(4,3,same),conv(4,1)-residual(tanh,conv(4,1)))-"
                          "flatten-dense(2)",
    "negative-free-dash-inside": "residual(leaky_relu(0.2)-conv(3,3,same))-flatten-dense(2)",
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_spec_builds_the_same_model(name):
    spec = ROUND_TRIPS[name]
    model = nbcnn.build(spec, input_shape=(3, 8, 7), backend="numpy", seed=5)
    assert model.spec() == spec
    again = nbcnn.build(model.spec(), input_shape=(3, 8, 7), backend="numpy", seed=5)
    assert again.config()["layers"] == model.config()["layers"]
    weights = again.get_weights()
    assert list(weights) == list(model.get_weights())
    for key, value in model.get_weights().items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)


@pytest.mark.parametrize("name", sorted(arch.PRESETS))
def test_every_preset_round_trips_through_its_spec(name):
    shape = (3, 32, 32) if name.startswith("cifar") else (1, 28, 28)
    model = nbcnn.build(name, input_shape=shape, backend="numpy", seed=1)
    again = nbcnn.build(model.spec(), input_shape=shape, backend="numpy", seed=1)
    assert again.config() == model.config()
    for key, value in model.get_weights().items():
        np.testing.assert_array_equal(again.get_weights()[key], value, err_msg=key)


def test_spaces_case_and_aliases_are_accepted():
    model = nbcnn.build(" Residual( conv2d(4,3,same) - bn , CONV(4,1) ) -flatten-dense(2)",
                        input_shape=(2, 5, 5), backend="numpy")
    assert model.spec() == "residual(conv(4,3,same)-batchnorm,conv(4,1))-flatten-dense(2)"


@pytest.mark.parametrize("spec,message", [
    ("residual(relu-conv(4,3)-flatten-dense(2)", r"unbalanced '\(' at offset 8 \(never closed\)"),
    ("residual(relu))-flatten-dense(2)", r"unbalanced '\)' at offset 14"),
    ("conv(4,3)-residual()-flatten-dense(2)", r"empty body of the residual at offset 10, at offset 19"),
    ("residual( ,conv(2,1))-flatten-dense(2)", r"empty body of the residual at offset 0, at offset 9"),
    ("residual(relu,)-flatten-dense(2)", r"empty shortcut of the residual at offset 0, at offset "
                                         r"14 \(a trailing ','"),
    ("residual(relu,relu,relu)-flatten-dense(2)", r"at most one shortcut, but a third argument "
                                                  r"starts at offset 19"),
    ("residual(relu--relu)-flatten-dense(2)", r"empty layer at offset 14"),
    ("residual(relu-)-flatten-dense(2)", r"empty layer at offset 14"),
    ("residual-flatten-dense(2)", r"residual at offset 0 needs its layers"),
    ("residual(relu)(tanh)-flatten-dense(2)", r"unexpected text after residual\(\.\.\.\) at offset 14"),
    ("residual(relu-residual(convolution(3,1)))-flatten-dense(2)",
     r"unknown layer 'convolution'.*\(the layer at offset 23\)"),
    ("residual(relu,conv(4,1,bogus=2))-flatten-dense(2)",
     r"bad arguments in 'conv\(4,1,bogus=2\)'.*\(the layer at offset 14\)"),
])
def test_malformed_nested_strings_name_the_offset(spec, message):
    with pytest.raises(ValueError, match=message):
        nbcnn.build(spec, input_shape=(2, 6, 6), backend="numpy")


def test_unknown_layer_message_lists_residual():
    with pytest.raises(ValueError, match=r"known layers:.*residual"):
        arch.parse("resnet(relu)")


def _structure(model):
    blocks = [layer for layer in model.layers if isinstance(layer, L.Residual)]
    return len(blocks), sum(bool(b.shortcut) for b in blocks)


def test_cifar_resnet20():
    model = nbcnn.build("cifar-resnet20", input_shape=(3, 32, 32), backend="numpy")
    # He et al. 2016 report 0.27M for ResNet-20 with parameter-free (option A) shortcuts:
    # 269,722; our two 1x1-conv + BN projections add 16*32 + 2*32 + 32*64 + 2*64 = 2,752
    assert model.count_params() == 272_474 == 269_722 + 2_752
    assert _structure(model) == (9, 2)
    convs = [leaf for _, leaf in model.named_layers() if isinstance(leaf, L.Conv2D)]
    assert len(convs) == 1 + 9 * 2 + 2 and not any(c.use_bias for c in convs)
    assert [c.filters for c in convs if c.kernel_size == (3, 3)] == [16] * 7 + [32] * 6 + [64] * 6
    assert [c.stride for c in convs if c.stride != (1, 1)] == [(2, 2)] * 4
    assert model.layers[-2].output_shape((64, 8, 8)) == (64,)
    assert isinstance(model.layers[-2], L.GlobalAvgPool2D) and model.output_shape == (10,)


def test_cifar_resnet8():
    model = nbcnn.build("cifar-resnet8", input_shape=(3, 32, 32), backend="numpy")
    assert model.count_params() == 78_042
    assert _structure(model) == (3, 2)
    assert re.fullmatch(r"conv\(16,3,1,bias=false\)-batchnorm-relu-(residual\(.*\)-relu-){3}"
                        r"globalavgpool-dense\(10\)", arch.PRESETS["cifar-resnet8"])
