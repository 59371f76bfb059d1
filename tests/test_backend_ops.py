"""Every op of every fast backend against the numpy reference, on odd shapes."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close, randn

from nbcnn.backends.base import pool_output_size

# (N, C, H, W, filters, kh, kw, stride, padding(top, bottom, left, right), bias)
CONV_CASES = [
    (1, 1, 7, 7, 2, 3, 3, (1, 1), (0, 0, 0, 0), True),
    (5, 3, 9, 6, 4, 3, 3, (2, 2), (1, 1, 1, 1), True),
    (2, 3, 8, 11, 5, 5, 5, (1, 1), (2, 2, 2, 2), True),
    (3, 1, 6, 5, 3, 1, 1, (1, 1), (0, 0, 0, 0), True),
    (2, 2, 7, 8, 3, 3, 3, (2, 1), (0, 1, 0, 1), True),
    (1, 3, 10, 7, 6, 5, 3, (2, 2), (0, 0, 1, 1), False),
    (5, 3, 6, 6, 9, 3, 3, (1, 1), (1, 1, 1, 1), False),
    (2, 16, 9, 9, 17, 3, 3, (1, 1), (1, 1, 1, 1), True),
]
# (N, C, H, W, filters, kh, kw, stride, padding, dilation, groups, bias)
GROUPED_CASES = [
    (2, 3, 9, 8, 4, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1, True),       # dilation 2
    (1, 4, 10, 7, 6, 3, 3, (2, 1), (1, 0, 2, 1), (2, 1), 2, False),     # dilation (2, 1), groups 2
    (3, 8, 9, 9, 8, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 4, True),       # groups 4, stride 2
    (2, 6, 8, 11, 6, 3, 3, (2, 2), (1, 2, 1, 0), (1, 1), 6, True),      # depthwise, stride 2
    (1, 4, 9, 7, 8, 5, 3, (1, 1), (4, 4, 1, 1), (2, 1), 4, False),      # depthwise x2, dilated
]
# (N, C, H, W, kernel, stride)
POOL_CASES = [
    (1, 1, 4, 4, (2, 2), (2, 2)),
    (5, 3, 7, 9, (3, 3), (2, 2)),
    (2, 2, 6, 5, (2, 3), (1, 2)),
    (1, 3, 5, 5, (3, 3), (1, 1)),
    (3, 4, 9, 8, (2, 2), (3, 3)),
]

# PyTorch's pooling options: (N, C, H, W, kernel, stride, padding (ph, pw), ceil_mode)
POOL_PAD_CASES = [
    (2, 3, 7, 5, (3, 3), (2, 2), (1, 1), False),
    (1, 3, 7, 5, (3, 3), (2, 2), (1, 1), True),
    (3, 2, 7, 9, (2, 2), (2, 2), (0, 0), True),     # 2x2/2 on odd sizes: a half last window
    (2, 2, 5, 5, (2, 2), (2, 2), (1, 1), True),     # ceil's extra window would start in padding
    (2, 3, 7, 6, (3, 2), (2, 1), (1, 1), True),
    (1, 2, 6, 8, (3, 2), (1, 2), (1, 0), False),
    (2, 4, 8, 7, (3, 3), (3, 3), (1, 1), True),     # stride == kernel, padded
    (1, 1, 3, 3, (4, 4), (2, 2), (0, 0), True),     # window larger than the input
]


def pool_args(case):
    """x's shape and the op arguments (kernel, stride, padding, output_size), as a layer
    resolves them."""
    n, c, h, w, kernel, stride, (ph, pw), ceil = case
    out = tuple(pool_output_size(size, k, s, p, p, ceil)
                for size, k, s, p in zip((h, w), kernel, stride, (ph, pw)))
    return (n, c, h, w), (kernel, stride, (ph, ph, pw, pw), out)


def _ids(cases):
    return [f"case{i}" for i in range(len(cases))]


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_conv2d(fast, ref, rng, case):
    n, c, h, w, o, kh, kw, stride, padding, bias = case
    x, wt = randn(rng, n, c, h, w), randn(rng, o, c, kh, kw)
    b = randn(rng, o) if bias else None
    y_ref = ref.conv2d_forward(x, wt, b, stride, padding)
    y = fast.conv2d_forward(fast.from_numpy(x), fast.from_numpy(wt),
                            None if b is None else fast.from_numpy(b), stride, padding)
    assert_close(fast.to_numpy(y), y_ref, what="conv forward")
    dy = randn(rng, *y_ref.shape)
    for need_dx in (True, False):
        want = ref.conv2d_backward(x, wt, dy, stride, padding, bias, need_dx)
        got = fast.conv2d_backward(fast.from_numpy(x), fast.from_numpy(wt), fast.from_numpy(dy),
                                   stride, padding, bias, need_dx)
        for name, g, r in zip(("dx", "dw", "db"), got, want):
            if r is None:
                assert g is None, f"{name} should be None"
            else:
                assert_close(fast.to_numpy(g), r, what=f"conv {name}")


@pytest.mark.parametrize("case", GROUPED_CASES, ids=_ids(GROUPED_CASES))
def test_conv2d_grouped_dilated(fast, ref, rng, case):
    n, c, h, w, o, kh, kw, stride, padding, dilation, groups, bias = case
    opts = dict(dilation=dilation, groups=groups)
    x, wt = randn(rng, n, c, h, w), randn(rng, o, c // groups, kh, kw)
    b = randn(rng, o) if bias else None
    y_ref = ref.conv2d_forward(x, wt, b, stride, padding, **opts)
    y = fast.conv2d_forward(fast.from_numpy(x), fast.from_numpy(wt),
                            None if b is None else fast.from_numpy(b), stride, padding, **opts)
    assert_close(fast.to_numpy(y), y_ref, what="grouped conv forward")
    dy = randn(rng, *y_ref.shape)
    for need_dx in (True, False):
        want = ref.conv2d_backward(x, wt, dy, stride, padding, bias, need_dx, **opts)
        got = fast.conv2d_backward(fast.from_numpy(x), fast.from_numpy(wt), fast.from_numpy(dy),
                                   stride, padding, bias, need_dx, **opts)
        for name, g, r in zip(("dx", "dw", "db"), got, want):
            if r is None:
                assert g is None, f"{name} should be None"
            else:
                assert_close(fast.to_numpy(g), r, what=f"grouped conv {name}")


@pytest.mark.parametrize("case", POOL_CASES, ids=_ids(POOL_CASES))
def test_maxpool2d(fast, ref, rng, case):
    n, c, h, w, kernel, stride = case
    x = randn(rng, n, c, h, w)
    x[0, 0, 0, :2] = 5.0                        # a tie: the first maximum must win
    y_ref, state_ref = ref.maxpool2d_forward(x, kernel, stride)
    y, state = fast.maxpool2d_forward(fast.from_numpy(x), kernel, stride)
    assert_close(fast.to_numpy(y), y_ref, what="maxpool forward")
    dy = randn(rng, *y_ref.shape)
    assert_close(fast.to_numpy(fast.maxpool2d_backward(fast.from_numpy(dy), state)),
                 ref.maxpool2d_backward(dy, state_ref), what="maxpool backward")


@pytest.mark.parametrize("case", POOL_CASES, ids=_ids(POOL_CASES))
def test_avgpool2d(fast, ref, rng, case):
    n, c, h, w, kernel, stride = case
    x = randn(rng, n, c, h, w)
    y_ref = ref.avgpool2d_forward(x, kernel, stride)
    assert_close(fast.to_numpy(fast.avgpool2d_forward(fast.from_numpy(x), kernel, stride)), y_ref)
    dy = randn(rng, *y_ref.shape)
    assert_close(fast.to_numpy(fast.avgpool2d_backward(fast.from_numpy(dy), x.shape, kernel, stride)),
                 ref.avgpool2d_backward(dy, x.shape, kernel, stride))


@pytest.mark.parametrize("case", POOL_PAD_CASES, ids=_ids(POOL_PAD_CASES))
def test_maxpool2d_padding_and_ceil_mode(fast, ref, rng, case):
    shape, args = pool_args(case)
    x = randn(rng, *shape)
    x[0, 0, 0, :2] = 5.0                        # a tie at the padded corner: the first wins
    y_ref, state_ref = ref.maxpool2d_forward(x, *args)
    y, state = fast.maxpool2d_forward(fast.from_numpy(x), *args)
    np.testing.assert_array_equal(fast.to_numpy(y), y_ref)
    dy = randn(rng, *y_ref.shape)
    assert_close(fast.to_numpy(fast.maxpool2d_backward(fast.from_numpy(dy), state)),
                 ref.maxpool2d_backward(dy, state_ref), what="maxpool backward")


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", POOL_PAD_CASES, ids=_ids(POOL_PAD_CASES))
def test_avgpool2d_padding_and_ceil_mode(fast, ref, rng, case, count_include_pad):
    shape, args = pool_args(case)
    x = randn(rng, *shape)
    y_ref = ref.avgpool2d_forward(x, *args, count_include_pad)
    y = fast.avgpool2d_forward(fast.from_numpy(x), *args, count_include_pad)
    assert_close(fast.to_numpy(y), y_ref, what="avgpool forward")
    dy = randn(rng, *y_ref.shape)
    kernel, stride, padding, _ = args
    assert_close(fast.to_numpy(fast.avgpool2d_backward(fast.from_numpy(dy), x.shape, kernel,
                                                       stride, padding, count_include_pad)),
                 ref.avgpool2d_backward(dy, x.shape, kernel, stride, padding, count_include_pad),
                 what="avgpool backward")


def test_pooling_windows_must_overlap_the_input(fast, ref):
    """An output size whose last window lies in the padding alone is refused by every backend."""
    for be in (ref, fast):
        x = be.from_numpy(np.zeros((1, 1, 5, 5), np.float32))
        with pytest.raises(ValueError, match="do not all overlap the input 5x5"):
            be.maxpool2d_forward(x, (2, 2), (2, 2), (1, 1, 1, 1), (4, 4))
        with pytest.raises(ValueError, match="do not all overlap"):
            be.avgpool2d_forward(x, (2, 2), (2, 2), (2, 2, 0, 0), None)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 7, 5), (5, 4, 8, 8), (2, 17, 3, 6)])
def test_global_avgpool2d(fast, ref, rng, shape):
    x = randn(rng, *shape)
    y_ref = ref.global_avgpool2d_forward(x)
    y = fast.global_avgpool2d_forward(fast.from_numpy(x))
    assert_close(fast.to_numpy(y), y_ref, what="global avgpool forward")
    dy = randn(rng, *y_ref.shape)
    assert_close(fast.to_numpy(fast.global_avgpool2d_backward(fast.from_numpy(dy), x.shape)),
                 ref.global_avgpool2d_backward(dy, x.shape), what="global avgpool backward")


@pytest.mark.parametrize("n,fin,fout,bias", [(1, 7, 3, True), (5, 33, 10, True), (64, 130, 17, False)])
def test_dense(fast, ref, rng, n, fin, fout, bias):
    x, w = randn(rng, n, fin), randn(rng, fout, fin)
    b = randn(rng, fout) if bias else None
    y_ref = ref.dense_forward(x, w, b)
    y = fast.dense_forward(fast.from_numpy(x), fast.from_numpy(w), None if b is None else fast.from_numpy(b))
    assert_close(fast.to_numpy(y), y_ref)
    dy = randn(rng, n, fout)
    want = ref.dense_backward(x, w, dy, bias, True)
    got = fast.dense_backward(fast.from_numpy(x), fast.from_numpy(w), fast.from_numpy(dy), bias, True)
    for g, r in zip(got, want):
        assert (g is None) == (r is None)
        if r is not None:
            assert_close(fast.to_numpy(g), r)


@pytest.mark.parametrize("kind", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activations(fast, ref, rng, kind):
    x = randn(rng, 3, 2, 5, 7) * 3
    x[0, 0, 0, :3] = 0.0                        # the kink of relu: gradient 0 at exactly 0
    y_ref = ref.activation_forward(kind, x, 0.1)
    y = fast.activation_forward(kind, fast.from_numpy(x), 0.1)
    assert_close(fast.to_numpy(y), y_ref)
    dy = randn(rng, *x.shape)
    assert_close(fast.to_numpy(fast.activation_backward(kind, fast.from_numpy(x), y,
                                                        fast.from_numpy(dy), 0.1)),
                 ref.activation_backward(kind, x, y_ref, dy, 0.1))


@pytest.mark.parametrize("n,classes", [(1, 10), (7, 3), (64, 10)])
def test_softmax_cross_entropy(fast, ref, rng, n, classes):
    logits = randn(rng, n, classes) * 4
    logits[0, 0] = 80.0                         # would overflow a naive exp in float32
    labels = rng.integers(0, classes, n)
    loss_ref, d_ref, c_ref = ref.softmax_cross_entropy(logits, labels)
    loss, d, c = fast.softmax_cross_entropy(fast.from_numpy(logits), fast.labels_from_numpy(labels))
    assert isinstance(loss, float) and isinstance(c, int)
    assert loss == pytest.approx(loss_ref, rel=1e-5, abs=1e-6)
    assert c == c_ref
    assert_close(fast.to_numpy(d), d_ref)


def test_dropout_draws_the_reference_mask(fast, ref, rng):
    x = randn(rng, 4, 3, 5, 6)
    y_ref, mask_ref = ref.dropout_forward(x, 0.3, seed=12345)
    y, mask = fast.dropout_forward(fast.from_numpy(x), 0.3, 12345)
    np.testing.assert_array_equal(fast.to_numpy(mask) != 0, mask_ref != 0)
    assert_close(fast.to_numpy(y), y_ref)
    dy = randn(rng, *x.shape)
    assert_close(fast.to_numpy(fast.dropout_backward(fast.from_numpy(dy), mask)),
                 ref.dropout_backward(dy, mask_ref))
    kept = (mask_ref != 0).mean()
    assert 0.6 < kept < 0.8


@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (5, 2, 3, 3), (8, 16, 7, 7)])
def test_batchnorm2d(fast, ref, rng, shape):
    c = shape[1]
    x = randn(rng, *shape) * 2 + 1
    gamma, beta = randn(rng, c), randn(rng, c)
    rm, rv = randn(rng, c), np.abs(randn(rng, c)) + 0.5
    rm_f, rv_f = fast.from_numpy(rm), fast.from_numpy(rv)
    y_ref, state_ref = ref.batchnorm2d_forward_train(x, gamma, beta, rm, rv, 0.1, 1e-5)
    y, state = fast.batchnorm2d_forward_train(fast.from_numpy(x), fast.from_numpy(gamma),
                                              fast.from_numpy(beta), rm_f, rv_f, 0.1, 1e-5)
    assert_close(fast.to_numpy(y), y_ref, rtol=2e-4, atol=2e-5, what="train forward")
    assert_close(fast.to_numpy(rm_f), rm, what="running mean")
    assert_close(fast.to_numpy(rv_f), rv, what="running var")
    dy = randn(rng, *shape)
    want = ref.batchnorm2d_backward(dy, state_ref, gamma)
    got = fast.batchnorm2d_backward(fast.from_numpy(dy), state, fast.from_numpy(gamma))
    for name, g, r in zip(("dx", "dgamma", "dbeta"), got, want):
        assert_close(fast.to_numpy(g), r, rtol=5e-4, atol=5e-5, what=name)
    assert_close(fast.to_numpy(fast.batchnorm2d_forward_eval(fast.from_numpy(x), fast.from_numpy(gamma),
                                                             fast.from_numpy(beta), rm_f, rv_f, 1e-5)),
                 ref.batchnorm2d_forward_eval(x, gamma, beta, rm, rv, 1e-5), what="eval forward")


def _run_steps(backend, step, arrays, n_steps=3):
    """Apply an optimizer step three times to copies of ``arrays`` on ``backend``."""
    on = [None if a is None else backend.from_numpy(a.copy()) for a in arrays]
    for t in range(1, n_steps + 1):
        step(backend, on, t)
    return [None if a is None else backend.to_numpy(a) for a in on]


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-2), (0.9, True, 0.0)])
def test_sgd_step(fast, ref, rng, momentum, nesterov, wd):
    p, g = randn(rng, 4, 3, 3, 3), randn(rng, 4, 3, 3, 3)
    v = np.zeros_like(p) if momentum else None

    def step(b, a, t):
        b.sgd_step(a[0], a[1], a[2], 0.05, momentum, nesterov, wd)
    for got, want in zip(_run_steps(fast, step, [p, g, v]), _run_steps(ref, step, [p, g, v])):
        if want is not None:
            assert_close(got, want)


@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (1e-2, False), (1e-2, True)])
def test_adam_step(fast, ref, rng, wd, decoupled):
    p, g = randn(rng, 10, 7), randn(rng, 10, 7)
    m, v = np.zeros_like(p), np.zeros_like(p)

    def step(b, a, t):
        b.adam_step(a[0], a[1], a[2], a[3], 1e-3, 0.9, 0.999, 1e-8, t, wd, decoupled)
    for got, want in zip(_run_steps(fast, step, [p, g, m, v]), _run_steps(ref, step, [p, g, m, v])):
        assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 1e-2)])
def test_rmsprop_step(fast, ref, rng, momentum, wd):
    p, g = randn(rng, 33), randn(rng, 33)
    s, buf = np.zeros_like(p), (np.zeros_like(p) if momentum else None)

    def step(b, a, t):
        b.rmsprop_step(a[0], a[1], a[2], a[3], 1e-2, 0.99, 1e-8, momentum, wd)
    for got, want in zip(_run_steps(fast, step, [p, g, s, buf]), _run_steps(ref, step, [p, g, s, buf])):
        if want is not None:
            assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 3, 7, 9), (2, 17)])
@pytest.mark.parametrize("into", [None, "a", "b"])
def test_add(fast, ref, rng, shape, into):
    a, b = randn(rng, *shape), randn(rng, *shape)
    a.flat[0] = np.nan                              # NaN propagates as in the reference
    want = ref.add(a, b)
    fa, fb = fast.from_numpy(a), fast.from_numpy(b)
    out = {"a": fa, "b": fb, None: None}[into]
    got = fast.add(fa, fb, out=out)
    assert out is None or got is out                # accumulated in place, no new array
    assert_close(fast.to_numpy(got), want, what="add")
    assert np.isnan(fast.to_numpy(got).flat[0])
    if into != "b":
        np.testing.assert_array_equal(fast.to_numpy(fb), b)
    with pytest.raises(ValueError, match="add: shapes"):
        fast.add(fa, fast.from_numpy(randn(rng, 3)))


def test_array_helpers(fast, rng):
    a = randn(rng, 3, 4)
    d = fast.from_numpy(a)
    np.testing.assert_array_equal(fast.to_numpy(d), a)
    z = fast.zeros((3, 4))
    assert fast.to_numpy(z).dtype == np.float32 and not fast.to_numpy(z).any()
    fast.copy_into(z, d)
    np.testing.assert_array_equal(fast.to_numpy(z), a)
    assert fast.all_finite(d)
    a[1, 2] = np.nan
    assert not fast.all_finite(fast.from_numpy(a))
    a[1, 2] = np.inf
    assert not fast.all_finite(fast.from_numpy(a))
    assert fast.to_numpy(fast.reshape(d, (12,))).shape == (12,)


@pytest.mark.parametrize("eps", [0.1, 1.0])
@pytest.mark.parametrize("n,classes", [(1, 10), (7, 3), (64, 10)])
def test_softmax_cross_entropy_label_smoothing(fast, ref, rng, n, classes, eps):
    logits = randn(rng, n, classes) * 4
    logits[0, 0] = 80.0
    labels = rng.integers(0, classes, n)
    loss_ref, d_ref, c_ref = ref.softmax_cross_entropy(logits, labels, eps)
    loss, d, c = fast.softmax_cross_entropy(fast.from_numpy(logits),
                                            fast.labels_from_numpy(labels), eps)
    assert loss == pytest.approx(loss_ref, rel=1e-5, abs=1e-5)
    assert c == c_ref
    assert_close(fast.to_numpy(d), d_ref)


@pytest.mark.parametrize("lr_decay,wd,init", [(0.0, 0.0, 0.0), (0.1, 1e-2, 0.5)])
def test_adagrad_step(fast, ref, rng, lr_decay, wd, init):
    p, g = randn(rng, 5, 3, 3, 2), randn(rng, 5, 3, 3, 2)
    s = np.full_like(p, init)

    def step(b, a, t):
        b.adagrad_step(a[0], a[1], a[2], 0.05, lr_decay, 1e-10, t, wd)
    for got, want in zip(_run_steps(fast, step, [p, g, s]), _run_steps(ref, step, [p, g, s])):
        assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rho,wd", [(0.9, 0.0), (0.5, 1e-2)])
def test_adadelta_step(fast, ref, rng, rho, wd):
    p, g = randn(rng, 37), randn(rng, 37)
    s, acc = np.zeros_like(p), np.zeros_like(p)

    def step(b, a, t):
        b.adadelta_step(a[0], a[1], a[2], a[3], 1.0, rho, 1e-6, wd)
    for got, want in zip(_run_steps(fast, step, [p, g, s, acc]),
                         _run_steps(ref, step, [p, g, s, acc])):
        assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shapes", [[(1,)], [(5, 3, 7, 9), (0,), (4,)], [(70001,), (3, 5)], []])
def test_sum_of_squares_and_scale(fast, ref, rng, shapes):
    arrays = [randn(rng, *s) for s in shapes]
    want = ref.sum_of_squares(arrays)
    got = fast.sum_of_squares([fast.from_numpy(a) for a in arrays])
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-5)
    for a in arrays:
        on = fast.from_numpy(a)
        fast.scale_(on, 0.37)
        ref.scale_(a, 0.37)
        assert_close(fast.to_numpy(on), a)
