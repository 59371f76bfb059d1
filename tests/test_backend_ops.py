"""Every op of every backend (numpy in float32, numba on its parallel and single-thread paths,
OpenCL) against the float64 numpy reference, on the shared odd shapes of helpers.py."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import (ACTIVATION_SHAPES, ADAM_CASES, BATCHNORM_SHAPES, CONV_CASES, DENSE_CASES,
                     DROPOUT_CASES, GLOBAL_POOL_SHAPES, GROUPED_CASES, LOSS_CASES, POOL_CASES,
                     POOL_PAD_CASES, REF32, RMSPROP_CASES, SGD_CASES, case_id, check_conv,
                     check_op, check_steps, close, pool_args, randn)

from nbcnn.backends.base import dropout_uniform


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d(backend, rng, case):
    check_conv(backend, rng, case)


@pytest.mark.parametrize("case", GROUPED_CASES, ids=case_id)
def test_conv2d_grouped_dilated(backend, rng, case):
    check_conv(backend, rng, case, dilation=case[8], groups=case[9])


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_maxpool2d(backend, rng, case):
    n, c, h, w, kernel, stride = case
    x = randn(rng, n, c, h, w)
    x[0, 0, 0, :3] = 5.0                        # a tie: the first maximum must win
    fwd = check_op(backend, "maxpool2d_forward", x, kernel, stride, exact=True, opaque=(1,))
    dy = randn(rng, *fwd.want[0].shape)
    check_op(backend, "maxpool2d_backward", dy, fwd.both(1))


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_avgpool2d(backend, rng, case):
    n, c, h, w, kernel, stride = case
    x = randn(rng, n, c, h, w)
    y = check_op(backend, "avgpool2d_forward", x, kernel, stride).want
    check_op(backend, "avgpool2d_backward", randn(rng, *y.shape), x.shape, kernel, stride)


def test_maxpool_ties_go_to_first(backend):
    x = np.zeros((2, 3, 6, 6), np.float32)           # every window is all ties
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = 1.0              # tie of two maxima inside one window
    dy = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) + 1
    for kernel, stride in (((2, 2), (2, 2)), ((3, 3), (1, 1)), ((2, 3), (2, 1))):
        fwd = check_op(backend, "maxpool2d_forward", x, kernel, stride, exact=True, opaque=(1,))
        d = np.ascontiguousarray(np.resize(dy, fwd.want[0].shape))
        check_op(backend, "maxpool2d_backward", d, fwd.both(1), exact=True, case=f"k{kernel}")


@pytest.mark.parametrize("case", POOL_PAD_CASES, ids=case_id)
def test_maxpool2d_padding_and_ceil_mode(backend, rng, case):
    shape, args = pool_args(case)
    x = randn(rng, *shape)
    x[0, 0, 0, :2] = 5.0                        # a tie at the padded corner: the first wins
    fwd = check_op(backend, "maxpool2d_forward", x, *args, exact=True, opaque=(1,))
    assert fwd.want[0].shape == shape[:2] + args[3]
    check_op(backend, "maxpool2d_backward", randn(rng, *fwd.want[0].shape), fwd.both(1))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", POOL_PAD_CASES, ids=case_id)
def test_avgpool2d_padding_and_ceil_mode(backend, rng, case, count_include_pad):
    shape, args = pool_args(case)
    kernel, stride, padding, _ = args
    x = randn(rng, *shape)
    y = check_op(backend, "avgpool2d_forward", x, *args, count_include_pad).want
    check_op(backend, "avgpool2d_backward", randn(rng, *y.shape), x.shape, kernel, stride,
             padding, count_include_pad)


def test_pooling_windows_must_overlap_the_input(backend):
    """An output size whose last window lies in the padding alone is refused by every backend."""
    x = backend.from_numpy(np.zeros((1, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match="do not all overlap the input 5x5"):
        backend.maxpool2d_forward(x, (2, 2), (2, 2), (1, 1, 1, 1), (4, 4))
    with pytest.raises(ValueError, match="do not all overlap"):
        backend.avgpool2d_forward(x, (2, 2), (2, 2), (2, 2, 0, 0), None)


@pytest.mark.parametrize("shape", GLOBAL_POOL_SHAPES, ids=case_id)
def test_global_avgpool2d(backend, rng, shape):
    x = randn(rng, *shape)
    y = check_op(backend, "global_avgpool2d_forward", x).want
    assert y.shape == shape[:2]
    check_op(backend, "global_avgpool2d_backward", randn(rng, *y.shape), x.shape)


@pytest.mark.parametrize("case", DENSE_CASES, ids=case_id)
def test_dense(backend, rng, case):
    n, fin, fout = case
    x, w, b = randn(rng, n, fin), randn(rng, fout, fin), randn(rng, fout)
    check_op(backend, "dense_forward", x, w, b)
    check_op(backend, "dense_forward", x, w, None)
    dy = randn(rng, n, fout)
    check_op(backend, "dense_backward", x, w, dy, True, True)
    check_op(backend, "dense_backward", x, w, dy, False, False)


@pytest.mark.parametrize("shape", ACTIVATION_SHAPES, ids=case_id)
@pytest.mark.parametrize("kind", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activations(backend, rng, kind, shape):
    x = randn(rng, *shape) * 3
    x[0, 0, 0, :3] = 0.0                        # the kink of relu: gradient 0 at exactly 0
    y = check_op(backend, "activation_forward", kind, x, 0.1, rtol=1e-6, atol=1e-6)
    check_op(backend, "activation_backward", kind, x, y.both(), randn(rng, *shape), 0.1,
             rtol=1e-5, atol=1e-6)


def test_unknown_activation(backend):
    with pytest.raises(ValueError, match="unknown activation"):
        backend.activation_forward("gelu", backend.zeros((2,)), 0.0)


def _logits(rng, n, classes, how):
    logits = randn(rng, n, classes) * 4
    labels = rng.integers(0, classes, n)
    if how == "big":
        logits[0, 0] = 80.0                     # would overflow a naive exp in float32
    elif how == "shift":
        logits[0, :] += 200.0
    elif how == "tie":
        logits[1, :] = 2.0                      # a tie: arg-max is the first class
        labels[1] = 0
    return logits, labels


@pytest.mark.parametrize("case", LOSS_CASES, ids=case_id)
def test_softmax_cross_entropy(backend, rng, case):
    logits, labels = _logits(rng, *case)
    check_op(backend, "softmax_cross_entropy", logits, labels, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eps", [0.1, 1.0])
@pytest.mark.parametrize("case", LOSS_CASES[:3], ids=case_id)
def test_softmax_cross_entropy_label_smoothing(backend, rng, case, eps):
    logits, labels = _logits(rng, *case)
    check_op(backend, "softmax_cross_entropy", logits, labels, eps, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", DROPOUT_CASES, ids=case_id)
def test_dropout_draws_the_reference_mask(backend, rng, case):
    """Bit for bit numpy's float32 mask, drawn by dropout_uniform."""
    p, seed = case
    x = randn(rng, 5, 3, 9, 7)
    fwd = check_op(backend, "dropout_forward", x, p, seed, ref=REF32, exact=True)
    check_op(backend, "dropout_backward", randn(rng, *x.shape), fwd.both(1), ref=REF32,
             exact=True)
    u = dropout_uniform(seed, np.arange(x.size)).reshape(x.shape)
    np.testing.assert_array_equal(fwd.want[1] > 0, u >= np.float32(p))
    assert abs((fwd.want[1] != 0).mean() - (1 - p)) < 0.1


@pytest.mark.parametrize("shape", BATCHNORM_SHAPES, ids=case_id)
def test_batchnorm2d(backend, rng, shape):
    c = shape[1]
    x = randn(rng, *shape) * 2 + 1
    gamma, beta = randn(rng, c), randn(rng, c)
    rm, rv = randn(rng, c), np.abs(randn(rng, c)) + 0.5
    fwd = check_op(backend, "batchnorm2d_forward_train", x, gamma, beta, rm, rv, 0.1, 1e-5,
                   opaque=(1,), mutated=(3, 4), rtol=2e-4, atol=2e-5)
    check_op(backend, "batchnorm2d_backward", randn(rng, *shape), fwd.both(1), gamma,
             rtol=1e-3, atol=1e-4)
    check_op(backend, "batchnorm2d_forward_eval", x, gamma, beta, fwd.both_input(3),
             fwd.both_input(4), 1e-5)


@pytest.mark.parametrize("case", SGD_CASES, ids=case_id)
def test_sgd_step(backend, rng, case):
    momentum, nesterov, wd = case
    p, g = randn(rng, 4, 3, 3, 3), randn(rng, 4, 3, 3, 3)
    v = randn(rng, *p.shape) if momentum else None
    check_steps(backend, "sgd_step", [p, g, v], lambda t: (0.05, momentum, nesterov, wd))


@pytest.mark.parametrize("case", ADAM_CASES, ids=case_id)
def test_adam_step(backend, rng, case):
    lr, wd, decoupled = case
    p, g = randn(rng, 10, 7), randn(rng, 10, 7)
    check_steps(backend, "adam_step", [p, g, np.zeros_like(p), np.zeros_like(p)],
                lambda t: (lr, 0.9, 0.999, 1e-8, t, wd, decoupled), atol=1e-6)


@pytest.mark.parametrize("case", RMSPROP_CASES, ids=case_id)
def test_rmsprop_step(backend, rng, case):
    momentum, wd = case
    p, g = randn(rng, 4, 3, 3, 3), randn(rng, 4, 3, 3, 3)
    buf = np.zeros_like(p) if momentum else None
    check_steps(backend, "rmsprop_step", [p, g, np.zeros_like(p), buf],
                lambda t: (1e-2, 0.99, 1e-8, momentum, wd), atol=1e-6)


@pytest.mark.parametrize("lr_decay,wd,init", [(0.0, 0.0, 0.0), (0.1, 1e-2, 0.5)])
def test_adagrad_step(backend, rng, lr_decay, wd, init):
    p, g = randn(rng, 5, 3, 3, 2), randn(rng, 5, 3, 3, 2)
    check_steps(backend, "adagrad_step", [p, g, np.full_like(p, init)],
                lambda t: (0.05, lr_decay, 1e-10, t, wd), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rho,wd", [(0.9, 0.0), (0.5, 1e-2)])
def test_adadelta_step(backend, rng, rho, wd):
    p, g = randn(rng, 37), randn(rng, 37)
    check_steps(backend, "adadelta_step", [p, g, np.zeros_like(p), np.zeros_like(p)],
                lambda t: (1.0, rho, 1e-6, wd), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 3, 7, 9), (2, 17), (3, 5, 7, 2)],
                         ids=case_id)
@pytest.mark.parametrize("into", [None, "a", "b"])
def test_add(backend, rng, shape, into):
    a, b = randn(rng, *shape), randn(rng, *shape)
    a.flat[0] = np.nan                              # NaN propagates as in the reference
    want = a.astype(np.float64) + b
    fa, fb = backend.from_numpy(a), backend.from_numpy(b)
    out = {"a": fa, "b": fb, None: None}[into]
    got = backend.add(fa, fb, out=out)
    assert out is None or got is out                # accumulated in place, no new array
    close(backend.to_numpy(got), want, what="add")
    assert np.isnan(backend.to_numpy(got).flat[0])
    if into != "b":
        np.testing.assert_array_equal(backend.to_numpy(fb), b)
    with pytest.raises(ValueError, match="add: shapes"):
        backend.add(fa, backend.from_numpy(randn(rng, 3)))


def test_array_helpers(backend, rng):
    a = randn(rng, 3, 4)
    d = backend.from_numpy(a)
    np.testing.assert_array_equal(backend.to_numpy(d), a)
    z = backend.zeros((3, 4))
    assert backend.to_numpy(z).dtype == np.float32 and not backend.to_numpy(z).any()
    backend.copy_into(z, d)
    np.testing.assert_array_equal(backend.to_numpy(z), a)
    assert backend.all_finite(d)
    a[1, 2] = np.nan
    assert not backend.all_finite(backend.from_numpy(a))
    a[1, 2] = np.inf
    assert not backend.all_finite(backend.from_numpy(a))
    assert backend.to_numpy(backend.reshape(d, (12,))).shape == (12,)


@pytest.mark.parametrize("shapes", [[(1,)], [(5, 3, 7, 9), (0,), (4,)], [(70001,), (3, 5)], []])
def test_sum_of_squares_and_scale(backend, rng, shapes):
    arrays = [randn(rng, *s) for s in shapes]
    check_op(backend, "sum_of_squares", arrays, rtol=1e-5)
    for a in arrays:
        check_op(backend, "scale_", a, 0.37, mutated=(0,))
