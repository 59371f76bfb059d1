"""The model uses the layers' public API: ``build(..., followed_by=, input_grad=)``,
``forward`` and ``backward``; the layers' configs stay as the user wrote them."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import nbcnn
from nbcnn import layers as L
from nbcnn import model as model_module
from nbcnn.backends import get_backend
from nbcnn.layers import residual as residual_module


def test_spec_and_config_keep_an_explicit_init():
    arch = "conv(8,3,init=glorot)-relu-flatten-dense(4,init=he)"
    model = nbcnn.build(arch, input_shape=(1, 6, 6), backend="numpy")
    assert model.spec() == arch
    conv, dense = model.layers[0], model.layers[3]
    assert conv.config()["init"] == "glorot" and dense.config()["init"] == "he"
    assert conv.resolved_init == "glorot"          # written: kept, even before a ReLU
    assert nbcnn.build(model.spec(), input_shape=(1, 6, 6), backend="numpy").spec() == arch


def test_build_leaves_auto_in_the_config(tmp_path):
    model = nbcnn.build("conv(4,3)-leaky_relu(0.2)-flatten-dense(3)", input_shape=(2, 5, 5),
                        backend="numpy")
    conv, dense = model.layers[0], model.layers[3]
    assert conv.config()["init"] == dense.config()["init"] == "auto"
    assert model.spec() == "conv(4,3)-leaky_relu(0.2)-flatten-dense(3)"
    assert (conv.resolved_init, conv.resolved_slope) == ("he", 0.2)
    assert (dense.resolved_init, dense.resolved_slope) == ("glorot", 0.0)
    model.save(tmp_path / "m.npz")
    again = nbcnn.Sequential.load(tmp_path / "m.npz", backend="numpy")
    assert again.config() == model.config() and again.layers[0].resolved_slope == 0.2


def _std(layer):
    return float(layer.get_weights()["weight"].std())


def test_auto_init_standalone_is_glorot_and_before_relu_is_he():
    """One rule: 'auto' is He when the layer's output meets a ReLU-family activation first,
    Glorot otherwise; a layer on its own meets nothing, so it is Glorot."""
    x = np.random.default_rng(0).random((2, 16, 9, 9), dtype=np.float32)
    alone = L.Conv2D(64, 3, backend="numpy", seed=0)
    alone.forward(x)
    assert alone.resolved_init == "glorot" and alone.init == "auto"
    fan_in, fan_out = 16 * 9, 64 * 9
    assert _std(alone) == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)

    before_relu = L.Conv2D(64, 3)
    before_relu.build((16, 9, 9), get_backend("numpy"), np.random.default_rng(0),
                      followed_by=L.ReLU())
    assert before_relu.resolved_init == "he"
    assert _std(before_relu) == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    in_model = nbcnn.Sequential(L.Conv2D(64, 3), L.ReLU(), L.Flatten(), L.Dense(2),
                                input_shape=(16, 9, 9), backend="numpy")
    assert in_model.layers[0].resolved_init == "he" and in_model.layers[3].resolved_init == "glorot"


def test_input_grad_is_a_build_argument():
    model = nbcnn.build("conv(2,3)-relu-flatten-dense(2)", input_shape=(1, 5, 5),
                        backend="numpy")
    assert [layer.need_input_grad for layer in model.layers] == [False, True, True, True]
    dense = L.Dense(3)
    dense.build((4,), get_backend("numpy"), np.random.default_rng(0), input_grad=False)
    dense.forward(np.ones((2, 4), np.float32))
    assert dense.backward(np.ones((2, 3), np.float32)) is None and "weight" in dense.grads


def test_bad_init_is_refused_when_the_layer_is_made():
    with pytest.raises(ValueError, match="Conv2D: init must be one of auto, he, glorot, got 'x'"):
        L.Conv2D(4, 3, init="x")
    with pytest.raises(ValueError, match="Dense: init must be one of"):
        nbcnn.build("flatten-dense(2,init=xavier)", input_shape=(1, 2, 2), backend="numpy")


def test_the_model_calls_the_layers_public_forward_and_backward(monkeypatch):
    model = nbcnn.build("conv(2,3,same)-residual(conv(2,3,same)-relu)-relu-flatten-dense(2)",
                        input_shape=(1, 4, 4), backend="numpy")
    calls = []
    for cls in (L.Layer, L.Residual):
        for name in ("forward", "backward"):
            original = getattr(cls, name)

            def spy(self, *args, _original=original, _name=name, **kwargs):
                calls.append((id(self), _name))
                return _original(self, *args, **kwargs)
            monkeypatch.setattr(cls, name, spy)
    x = np.random.default_rng(0).random((3, 1, 4, 4), dtype=np.float32)
    model.fit((x, np.array([0, 1, 0])), epochs=1, batch_size=3, verbose=False)
    for layer in [*model.layers, *(layer for _, layer in model.named_layers())]:
        assert (id(layer), "forward") in calls and (id(layer), "backward") in calls, layer


@pytest.mark.parametrize("module", [model_module, residual_module], ids=lambda m: m.__name__)
def test_no_private_layer_calls_or_config_rewrites(module):
    source = inspect.getsource(module)
    for private in ("._forward(", "._backward(", ".init =", ".negative_slope",
                    ".need_input_grad = False"):
        assert private not in source, private


@pytest.mark.parametrize("name", sorted(L.REGISTRY))
def test_every_layer_states_its_maths_and_names_the_reference(name):
    """What a student reads: the forward and backward equations, the shapes, and the
    ``numpy_ref`` functions that implement them (which must exist)."""
    import re

    from nbcnn.backends.numpy_ref import NumpyBackend
    cls = L.REGISTRY[name]
    doc = "\n".join(k.__doc__ or "" for k in cls.__mro__ if k not in (L.Layer, object))
    for word in ("Shapes", "Forward", "Backward", "Reference"):
        assert word in doc, f"{name}: no {word!r} in its docstring"
    refs = re.findall(r"NumpyBackend\.(\w+)", doc) \
        + re.findall(r"NumpyBackend\.\w+`` and ``(\w+)``", doc)
    assert refs or name == "Flatten", name
    for ref in refs:
        assert callable(getattr(NumpyBackend, ref, None)), f"{name} names NumpyBackend.{ref}"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_model_moves_no_array_between_its_layers(backend, monkeypatch):
    """The public forward / backward take the backend's own arrays as they are: a training
    step copies nothing from layer to layer (the numba backend's from_numpy copies)."""
    status = nbcnn.backends.available()[backend]
    if not status.startswith("ok"):
        pytest.skip(status)
    model = nbcnn.build("conv(2,3,same)-residual(conv(2,3,same)-relu)-relu-flatten-dense(2)",
                        input_shape=(1, 4, 4), backend=backend)
    be = model.backend
    x = be.from_numpy(np.random.default_rng(0).random((3, 1, 4, 4), dtype=np.float32))
    y = be.labels_from_numpy(np.array([0, 1, 0]))
    model.train_step(x, y, nbcnn.optim.SGD())          # the first step's dry run may copy
    moved = []
    monkeypatch.setattr(be, "from_numpy", lambda a: moved.append(a.shape) or a)
    model.train_step(x, y, nbcnn.optim.SGD())
    model.forward(x)
    assert moved == []
