"""Every layer's backward against central finite differences, in float64 on the reference."""

from __future__ import annotations

import numpy as np
import pytest

from nbcnn import layers
from nbcnn.backends.numpy_ref import NumpyBackend

REF64 = NumpyBackend(np.float64)
EPS = 1e-6


def numeric_grad(f, a):
    """Central differences of the scalar f() with respect to every element of ``a`` (in place)."""
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        hi = f()
        flat[i] = old - EPS
        lo = f()
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * EPS)
    return g


def check_layer(layer, x_shape, seed=0, training=True):
    """Compare backward's dx and every parameter gradient with finite differences of
    L = sum(forward(x) * G) for a fixed random G."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    layer.training = training
    y = layer.forward(x)
    g_out = rng.standard_normal(y.shape)

    def loss():
        return float((layer.forward(x) * g_out).sum())

    layer.forward(x)
    dx = layer.backward(g_out)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-7, err_msg="dx")
    for label, owner, name in parameters(layer):
        np.testing.assert_allclose(owner.grads[name], numeric_grad(loss, owner.params[name]),
                                   rtol=1e-5, atol=1e-7, err_msg=label)


def parameters(layer):
    """(label, owning layer, name) for every parameter of ``layer``, those of the layers inside
    a residual block included (labelled as its get_weights names them)."""
    if isinstance(layer, layers.Residual):
        return [(f"{prefix}.{label}", owner, name) for prefix, inner in layer.named_layers()
                for label, owner, name in parameters(inner)]
    return [(name, layer, name) for name in layer.params]


@pytest.mark.parametrize("kwargs,x_shape", [
    (dict(filters=3, kernel_size=3, stride=2, padding=1), (1, 2, 7, 6)),
    (dict(filters=2, kernel_size=(3, 2), stride=(1, 2), padding="same"), (2, 3, 5, 6)),
    (dict(filters=4, kernel_size=1, padding="valid", bias=False), (2, 3, 4, 3)),
    (dict(filters=2, kernel_size=5, stride=1, padding=2), (1, 1, 6, 5)),
    (dict(filters=4, kernel_size=3, padding=(2, 1, 0, 2), dilation=(2, 1), groups=2), (2, 4, 7, 6)),
    (dict(filters=6, kernel_size=(3, 2), stride=2, padding="same", dilation=2, groups=3),
     (1, 3, 8, 7)),                                                 # depthwise x2, dilated
])
def test_conv2d(kwargs, x_shape):
    check_layer(layers.Conv2D(**kwargs, backend=REF64), x_shape)


@pytest.mark.parametrize("cls", [layers.MaxPool2D, layers.AvgPool2D])
@pytest.mark.parametrize("pool,stride,x_shape", [(2, None, (1, 2, 6, 5)), (3, 2, (2, 3, 7, 8)),
                                                 ((2, 3), (1, 2), (1, 1, 5, 7))])
def test_pooling(cls, pool, stride, x_shape):
    check_layer(cls(pool, stride, backend=REF64), x_shape)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kwargs,x_shape", [
    (dict(pool_size=3, stride=2, padding=1), (1, 2, 7, 5)),
    (dict(pool_size=3, stride=2, padding=1, ceil_mode=True), (2, 2, 6, 5)),
    (dict(pool_size=2, ceil_mode=True), (1, 3, 5, 7)),
    (dict(pool_size=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True), (1, 2, 6, 5)),
])
def test_avgpool2d_padding_and_ceil_mode(kwargs, x_shape, count_include_pad):
    check_layer(layers.AvgPool2D(**kwargs, count_include_pad=count_include_pad, backend=REF64),
                x_shape)


@pytest.mark.parametrize("kwargs,x_shape", [
    (dict(pool_size=3, stride=2, padding=1), (1, 2, 7, 5)),
    (dict(pool_size=2, ceil_mode=True), (2, 2, 5, 7)),
])
def test_maxpool2d_padding_and_ceil_mode(kwargs, x_shape):
    check_layer(layers.MaxPool2D(**kwargs, backend=REF64), x_shape)


@pytest.mark.parametrize("x_shape", [(1, 1, 1, 1), (2, 3, 5, 4), (1, 4, 3, 7)])
def test_global_avgpool2d(x_shape):
    check_layer(layers.GlobalAvgPool2D(backend=REF64), x_shape)


def test_dense():
    check_layer(layers.Dense(4, backend=REF64), (3, 7))
    check_layer(layers.Dense(2, bias=False, backend=REF64), (1, 5))


@pytest.mark.parametrize("layer", [layers.ReLU, layers.Sigmoid, layers.Tanh,
                                   lambda **k: layers.LeakyReLU(0.1, **k)])
def test_activations(layer):
    check_layer(layer(backend=REF64), (2, 3, 4, 5))


def test_flatten():
    check_layer(layers.Flatten(backend=REF64), (2, 3, 4, 5))


def test_dropout_with_a_fixed_mask():
    layer = layers.Dropout(0.4, backend=REF64)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 4, 4))
    seed = 987654                        # a fixed mask: the op with one seed is a linear map
    y, mask = REF64.dropout_forward(x, 0.4, seed)
    g_out = rng.standard_normal(y.shape)
    numeric = numeric_grad(lambda: float((REF64.dropout_forward(x, 0.4, seed)[0] * g_out).sum()), x)
    np.testing.assert_allclose(REF64.dropout_backward(g_out, mask), numeric, rtol=1e-5, atol=1e-7)
    assert np.array_equal(layer.forward(x, training=False), x)      # identity at evaluation


def test_batchnorm_training_mode():
    check_layer(layers.BatchNorm2D(backend=REF64), (4, 3, 3, 2))
    check_layer(layers.BatchNorm2D(backend=REF64), (1, 2, 3, 3), seed=5)


def test_batchnorm_eval_mode():
    layer = layers.BatchNorm2D(backend=REF64)
    layer.forward(np.random.default_rng(0).standard_normal((4, 2, 3, 3)))   # some running stats
    x = np.random.default_rng(1).standard_normal((2, 2, 3, 3))
    y = layer.forward(x, training=False)
    b = layer.buffers
    want = (x - b["running_mean"][None, :, None, None]) / np.sqrt(b["running_var"] + 1e-5)[None, :, None, None]
    np.testing.assert_allclose(y, want, rtol=1e-10)


def test_softmax_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    loss, d, _ = REF64.softmax_cross_entropy(logits, labels)
    numeric = numeric_grad(lambda: REF64.softmax_cross_entropy(logits, labels)[0], logits)
    np.testing.assert_allclose(d, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("body,shortcut,x_shape,n_params", [
    # identity shortcut; the body ends in a conv, so the sum accumulates into its output
    (lambda: [layers.Conv2D(3, 3, padding=1), layers.BatchNorm2D(), layers.ReLU(),
              layers.Conv2D(3, 3, padding=1, bias=False)], lambda: None, (2, 3, 5, 4), 5),
    # projection shortcut (stride 2, channels 3 -> 4); the body ends in an activation
    (lambda: [layers.Conv2D(4, 3, stride=2, padding=1), layers.Tanh()],
     lambda: [layers.Conv2D(4, 1, stride=2), layers.BatchNorm2D()], (2, 3, 5, 4), 6),
    # a block inside a block, the inner one an identity shortcut around a sigmoid
    (lambda: [layers.Residual([layers.Sigmoid()]), layers.Conv2D(2, (3, 2), padding="same")],
     lambda: [layers.Conv2D(2, 1, bias=False)], (1, 3, 4, 5), 3),
], ids=["identity", "projection", "nested"])
def test_residual(body, shortcut, x_shape, n_params):
    block = layers.Residual(body(), shortcut(), backend=REF64)
    check_layer(block, x_shape)
    assert len(parameters(block)) == n_params


def test_residual_without_input_gradient_still_fills_every_parameter_gradient():
    block = layers.Residual([layers.Conv2D(2, 3, padding=1)], [layers.Conv2D(2, 1)], backend=REF64)
    rng = np.random.default_rng(0)
    x, g_out = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 2, 4, 4))
    block.forward(x)
    assert block.backward(g_out).shape == x.shape
    grads = block.get_grads()
    block.need_input_grad = False
    assert block.body[0].need_input_grad is False and block.shortcut[0].need_input_grad is False
    block.forward(x)
    assert block.backward(g_out) is None
    assert sorted(block.get_grads()) == sorted(grads) == ["body.0.bias", "body.0.weight",
                                                          "shortcut.0.bias", "shortcut.0.weight"]
    for key, value in block.get_grads().items():
        np.testing.assert_array_equal(value, grads[key], err_msg=key)
