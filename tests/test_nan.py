"""NaN propagates through every op of every fast backend as through the numpy reference: the
same outputs are NaN (a NaN must never be hidden by a kernel, e.g. a ReLU that turns NaN into 0,
or a max pooling that skips it).

One exception, in one direction only: OpenCL's convolutions. The reference multiplies its
explicit zero padding (IEEE 0 * NaN = NaN: a NaN weight makes its whole output channel NaN, a
NaN gradient the whole of its filter's dw), the Numba kernels do the same; PyTorch and the
OpenCL kernels that test the image's edges skip the padding (its padded-input kernels, the CPU
defaults, multiply it as the reference does), and OpenCL's dx (a convolution of the padded dy with the
flipped filters) meets a NaN weight at padding the reference never multiplies. For OpenCL the
test asks that every output a NaN reaches through the data (``_reach``: not through padding or
zero filler) is NaN: a NaN is never hidden, only the outputs where it meets a zero may differ.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import randn
from nbcnn.backends.numpy_ref import NumpyBackend

REF = NumpyBackend(np.float32)


def _to(b, a):
    return None if a is None else b.from_numpy(a)


def _out(b, *arrays):
    return [None if a is None else np.array(b.to_numpy(a)) for a in arrays]


# Each op: (input shapes by name, call(backend, inputs as backend arrays) -> outputs as numpy).
# Inputs are random; the test puts NaN into one of them at a time.
def _conv(stride, padding, bias):
    def call(b, a):
        y = b.conv2d_forward(a["x"], a["w"], a["b"], stride, padding)
        dx, dw, db = b.conv2d_backward(a["x"], a["w"], a["dy"], stride, padding, bias, True)
        return _out(b, y, dx, dw, db)
    return call


def _maxpool(kernel, stride):
    def call(b, a):
        y, state = b.maxpool2d_forward(a["x"], kernel, stride)
        return _out(b, y, b.maxpool2d_backward(a["dy"], state))
    return call


def _avgpool(kernel, stride, x_shape):
    def call(b, a):
        return _out(b, b.avgpool2d_forward(a["x"], kernel, stride),
                    b.avgpool2d_backward(a["dy"], x_shape, kernel, stride))
    return call


def _dense(b, a):
    y = b.dense_forward(a["x"], a["w"], a["b"])
    return _out(b, y, *b.dense_backward(a["x"], a["w"], a["dy"], True, True))


def _activation(kind):
    def call(b, a):
        y = b.activation_forward(kind, a["x"], 0.1)
        return _out(b, y, b.activation_backward(kind, a["x"], y, a["dy"], 0.1))
    return call


def _softmax(b, a):
    labels = b.labels_from_numpy(np.arange(6) % 4)
    loss, d, correct = b.softmax_cross_entropy(a["x"], labels)
    return [np.array([loss]), *_out(b, d)]


def _dropout(b, a):
    y, mask = b.dropout_forward(a["x"], 0.4, 7)
    return _out(b, y, b.dropout_backward(a["dy"], mask))


def _batchnorm(b, a):
    rm, rv = b.from_numpy(np.zeros(3, np.float32)), b.from_numpy(np.ones(3, np.float32))
    y, state = b.batchnorm2d_forward_train(a["x"], a["gamma"], a["beta"], rm, rv, 0.1, 1e-5)
    grads = b.batchnorm2d_backward(a["dy"], state, a["gamma"])
    y_eval = b.batchnorm2d_forward_eval(a["x"], a["gamma"], a["beta"], rm, rv, 1e-5)
    return _out(b, y, rm, rv, *grads, y_eval)


def _sgd(momentum, nesterov, wd):
    def call(b, a):
        v = b.zeros((24,)) if momentum else None
        for _ in range(2):
            b.sgd_step(a["param"], a["grad"], v, 0.05, momentum, nesterov, wd)
        return _out(b, a["param"], v)
    return call


def _adam(wd, decoupled):
    def call(b, a):
        m, v = b.zeros((24,)), b.zeros((24,))
        for t in (1, 2):
            b.adam_step(a["param"], a["grad"], m, v, 1e-3, 0.9, 0.999, 1e-8, t, wd, decoupled)
        return _out(b, a["param"], m, v)
    return call


def _rmsprop(momentum, wd):
    def call(b, a):
        s, buf = b.zeros((24,)), (b.zeros((24,)) if momentum else None)
        for _ in range(2):
            b.rmsprop_step(a["param"], a["grad"], s, buf, 1e-2, 0.99, 1e-8, momentum, wd)
        return _out(b, a["param"], s, buf)
    return call


def _reach(stride, padding, poisoned, inputs):
    """Which outputs (y, dx, dw, db) of the convolution ops the NaN of ``poisoned`` reaches
    through the data (padding and zero filler excluded): the float64 reference on 0/1 inputs, a
    NaN position as 1 in ``poisoned`` and the other factors all ones, is > 0 exactly there.
    (The bias is 0 unless poisoned, and then x is 0, so y sees only the poisoned factor.)"""
    one = {k: np.ones_like(v, dtype=np.float64) for k, v in inputs.items()}
    one["b"][:] = 0
    if poisoned == "b":
        one["x"][:] = 0
    one[poisoned] = np.isnan(inputs[poisoned]).astype(np.float64)
    ref = NumpyBackend(np.float64)
    y = ref.conv2d_forward(one["x"], one["w"], one["b"], stride, padding)
    dx, dw, db = ref.conv2d_backward(one["x"], one["w"], one["dy"], stride, padding, True, True)
    uses = {"y": ("x", "w", "b"), "dx": ("w", "dy"), "dw": ("x", "dy"), "db": ("dy",)}
    return [(a > 0) & (poisoned in uses[name])
            for name, a in zip(("y", "dx", "dw", "db"), (y, dx, dw, db))]


CONV_GEOMETRY = {}


def _conv_case(name, n, c, h, w, o, k, stride, padding):
    CONV_GEOMETRY[name] = (stride, padding)
    return _conv_shapes(n, c, h, w, o, k, stride, padding), _conv(stride, padding, True)


def _conv_shapes(n, c, h, w, o, k, stride, padding):
    oh = (h + padding[0] + padding[1] - k) // stride[0] + 1
    ow = (w + padding[2] + padding[3] - k) // stride[1] + 1
    return {"x": (n, c, h, w), "w": (o, c, k, k), "b": (o,), "dy": (n, o, oh, ow)}


OPS = {
    "conv_s2_p1": _conv_case("conv_s2_p1", 2, 3, 9, 7, 4, 3, (2, 2), (1, 1, 1, 1)),
    "conv_s1_batch1": _conv_case("conv_s1_batch1", 1, 2, 6, 5, 3, 3, (1, 1), (0, 0, 0, 0)),
    "conv_wide_window": _conv_case("conv_wide_window", 2, 16, 7, 7, 5, 3, (1, 1), (1, 1, 1, 1)),
    "conv_s2x1_uneven_pad": _conv_case("conv_s2x1_uneven_pad", 2, 2, 7, 8, 3, 3, (2, 1),
                                       (0, 1, 0, 1)),
    "maxpool_2x2": ({"x": (2, 3, 6, 8), "dy": (2, 3, 3, 4)}, _maxpool((2, 2), (2, 2))),
    "maxpool_3x3_s2": ({"x": (1, 2, 7, 9), "dy": (1, 2, 3, 4)}, _maxpool((3, 3), (2, 2))),
    "maxpool_2x3_s1x2": ({"x": (2, 2, 6, 5), "dy": (2, 2, 5, 2)}, _maxpool((2, 3), (1, 2))),
    "avgpool_3x3_s2": ({"x": (1, 2, 7, 9), "dy": (1, 2, 3, 4)}, _avgpool((3, 3), (2, 2), (1, 2, 7, 9))),
    "dense": ({"x": (5, 33), "w": (7, 33), "b": (7,), "dy": (5, 7)}, _dense),
    **{kind: ({"x": (3, 2, 5, 7), "dy": (3, 2, 5, 7)}, _activation(kind))
       for kind in ("relu", "leaky_relu", "sigmoid", "tanh")},
    "softmax_cross_entropy": ({"x": (6, 4)}, _softmax),
    "dropout": ({"x": (4, 3, 5, 6), "dy": (4, 3, 5, 6)}, _dropout),
    "batchnorm": ({"x": (4, 3, 5, 6), "gamma": (3,), "beta": (3,), "dy": (4, 3, 5, 6)}, _batchnorm),
    "sgd": ({"param": (24,), "grad": (24,)}, _sgd(0.0, False, 0.0)),
    "sgd_nesterov_wd": ({"param": (24,), "grad": (24,)}, _sgd(0.9, True, 1e-2)),
    "adam": ({"param": (24,), "grad": (24,)}, _adam(0.0, False)),
    "adamw": ({"param": (24,), "grad": (24,)}, _adam(1e-2, True)),
    "rmsprop": ({"param": (24,), "grad": (24,)}, _rmsprop(0.0, 0.0)),
    "rmsprop_momentum_wd": ({"param": (24,), "grad": (24,)}, _rmsprop(0.9, 1e-2)),
}


def _cases():
    for op, (shapes, _) in OPS.items():
        for name in shapes:
            yield pytest.param(op, name, id=f"{op}-nan_in_{name}")


@pytest.mark.parametrize("op,poisoned", list(_cases()))
def test_nan_propagates_as_in_the_reference(fast, rng, op, poisoned):
    shapes, call = OPS[op]
    inputs = {name: randn(rng, *shape) for name, shape in shapes.items()}
    flat = inputs[poisoned].reshape(-1)
    at = rng.choice(flat.size, size=min(2, flat.size), replace=False)
    flat[at] = np.nan
    if op.startswith("maxpool") and poisoned == "x":
        flat[at + 1 - 2 * (at % 2)] = 50.0       # NaN must beat a large value beside it
    if op in ("relu", "leaky_relu") and poisoned == "dy":
        inputs["x"].reshape(-1)[at] = -1.0       # a NaN gradient at an inactive unit
    want = call(REF, {k: REF.from_numpy(v.copy()) for k, v in inputs.items()})
    got = call(fast, {k: _to(fast, v.copy()) for k, v in inputs.items()})
    assert len(got) == len(want)
    assert any(np.isnan(w).any() for w in want if w is not None), "the NaN reached no output"
    if op.startswith("conv") and fast.name.startswith("opencl"):
        stride, padding = CONV_GEOMETRY[op]
        reach = _reach(stride, padding, poisoned, inputs)
        for i, (g, w, r) in enumerate(zip(got, want, reach)):
            assert (np.isnan(w) >= r).all()                  # the reference: a superset too
            hidden = r & ~np.isnan(g)
            assert not hidden.any(), f"{op}: output {i} hides the NaN of {poisoned} at " \
                                     f"{np.argwhere(hidden)[:3].tolist()}"
        return
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None
            continue
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w),
                                      err_msg=f"{op}: NaN positions of output {i} "
                                              f"(NaN in {poisoned})")


def test_a_nan_weight_reaches_predict_on_every_backend(fast, rng):
    import nbcnn
    arch = "conv(4,3,same)-relu-maxpool(2)-flatten-dense(3)"
    x = rng.random((5, 1, 8, 8), dtype=np.float32)
    models = [nbcnn.build(arch, input_shape=(1, 8, 8), backend=b, seed=0) for b in ("numpy", fast)]
    for m in models:
        w = m.layers[0].params["weight"]
        host = m.backend.to_numpy(w).copy()
        host[2, 0, 1, 1] = np.nan                  # one weight of the third filter
        m.backend.copy_into(w, m.backend.from_numpy(host))
    want, got = (m.predict(x) for m in models)
    assert np.isnan(want).all()                    # every score depends on that filter
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
