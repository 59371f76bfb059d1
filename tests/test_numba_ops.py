"""Numba-specific properties, beyond the op-by-op comparison of test_backend_ops.py (which runs
the shared cases on numba's parallel and single-thread paths): every convolution algorithm and
kernel forced in turn, race freedom (identical results on repeated runs and with 1 or 2
threads), non-contiguous / float64 inputs converted at the boundary, the kernels pooling picks."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from helpers import CONV_CASES, REF64, case_id, check_conv, check_op, close, randn

from nbcnn.backends.numba import NumbaBackend
from nbcnn.backends.numba import _jit as numba_jit

NB = NumbaBackend()


@pytest.fixture(autouse=True, params=["parallel", "serial"])
def parallel_paths(request, monkeypatch):
    """Every test runs twice: with every op on the thread pool (the shapes here are small, so by
    default most would run on one thread) and with every op on the calling thread."""
    monkeypatch.setattr(numba_jit, "SERIAL_WORK", 0 if request.param == "parallel" else 1 << 62)


def is_f32c(a):
    return isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous


def backend_with(variant):
    nb = NumbaBackend()
    nb.conv_variant = variant
    return nb


@pytest.mark.parametrize("variant", ["direct", "gemm"])
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_variants(case, variant):
    """Each plain-convolution algorithm forced ("auto" is the default test_backend_ops runs)."""
    check_conv(backend_with(variant), np.random.default_rng(hash(case) % 2**32), case)


def test_conv2d_grouped_is_the_per_group_plain_convolution():
    """A grouped convolution equals the plain convolutions of each group concatenated (the two
    run on different kernels)."""
    rng = np.random.default_rng(15)
    x, w, b = randn(rng, 2, 6, 8, 9), randn(rng, 4, 3, 3, 3), randn(rng, 4)
    y = NB.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1), groups=2)
    parts = [NB.conv2d_forward(x[:, 3 * g:3 * g + 3], w[2 * g:2 * g + 2], b[2 * g:2 * g + 2],
                               (1, 1), (1, 1, 1, 1)) for g in range(2)]
    close(y, np.concatenate(parts, axis=1))


@pytest.mark.parametrize("variant", ["direct", "gemm"])
def test_conv2d_grouped_ignores_the_plain_variant(variant):
    """conv_variant chooses among the plain convolution's algorithms; grouped, dilated and
    depthwise convolutions run grouped.py whatever it says."""
    nb = backend_with(variant)
    rng = np.random.default_rng(16)
    x, dy = randn(rng, 2, 4, 7, 6), randn(rng, 2, 4, 7, 6)
    for w, pad, opts in ((randn(rng, 4, 2, 3, 3), (1, 1, 2, 2), dict(groups=2, dilation=(1, 2))),
                         (randn(rng, 4, 1, 3, 3), (1, 1, 1, 1), dict(groups=4))):
        check_op(nb, "conv2d_forward", x, w, None, (1, 1), pad, **opts)
        check_op(nb, "conv2d_backward", x, w, dy, (1, 1), pad, True, True, **opts)


def test_conv2d_groups_shape_error():
    x = np.zeros((1, 6, 5, 5), np.float32)
    with pytest.raises(ValueError, match="groups=4"):
        NB.conv2d_forward(x, np.zeros((4, 2, 3, 3), np.float32), None, (1, 1), (0, 0, 0, 0),
                          groups=4)


def test_conv2d_chunked_gemm():
    """The im2col + BLAS path split into several batch chunks (with a ragged last chunk)."""
    nb = backend_with("gemm")
    nb.cols_bytes = 4 * 27 * 9 * 7 * 2          # two images per chunk
    rng = np.random.default_rng(13)
    x, w, b = randn(rng, 5, 3, 9, 7), randn(rng, 4, 3, 3, 3), randn(rng, 4)
    check_op(nb, "conv2d_forward", x, w, b, (1, 1), (1, 1, 1, 1))
    check_op(nb, "conv2d_backward", x, w, randn(rng, 5, 4, 9, 7), (1, 1), (1, 1, 1, 1), True, True)


@pytest.mark.parametrize("variant", ["auto", "direct", "gemm"])
def test_conv2d_reused_buffers_keep_zero_border(variant):
    """Two layers whose padded inputs have the same shape but different padding (the scratch
    buffers are reused per shape) must not see each other's data."""
    nb = backend_with(variant)
    rng = np.random.default_rng(14)
    x, w = randn(rng, 2, 3, 6, 6), randn(rng, 4, 3, 3, 3)
    for padding in ((1, 1, 1, 1), (0, 2, 0, 2), (2, 0, 2, 0), (1, 1, 1, 1)):
        check_op(nb, "conv2d_forward", x, w, None, (1, 1), padding, case=f"padding {padding}")
        check_op(nb, "conv2d_backward", x, w, randn(rng, 2, 4, 6, 6), (1, 1), padding, True, True,
                 case=f"padding {padding}")


def test_conv2d_converts_inputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 10, 9))          # float64
    xt = np.asfortranarray(x[:, ::2])               # non-contiguous, 2 channels
    w = rng.standard_normal((3, 2, 3, 3))
    y = NB.conv2d_forward(xt, w, None, (1, 1), (1, 1, 1, 1))
    assert is_f32c(y)
    close(y, REF64.conv2d_forward(np.ascontiguousarray(xt), w, None, (1, 1), (1, 1, 1, 1)))


def test_conv2d_shape_errors():
    x = np.zeros((1, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match="channels"):
        NB.conv2d_forward(x, np.zeros((2, 2, 3, 3), np.float32), None, (1, 1), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="smaller"):
        NB.conv2d_forward(x, np.zeros((2, 3, 7, 7), np.float32), None, (1, 1), (0, 0, 0, 0))


def test_maxpool_state_holds_int32_indices():
    y, state = NB.maxpool2d_forward(np.zeros((2, 3, 6, 6), np.float32), (2, 2), (2, 2))
    assert is_f32c(y) and state[0].dtype == np.int32


def test_pooling_takes_the_fast_kernels_when_nothing_is_padded():
    """No padding and no ceil-mode overhang: the unpadded kernels (2x2/2 its own); otherwise
    the padded ones. Recorded by the precompile dry run, which needs no compiled kernel."""
    from nbcnn.backends.numba import precompile
    x = np.zeros((2, 3, 8, 7), np.float32)
    dy = np.zeros((2, 3, 4, 4), np.float32)

    def names(run):
        return [fn.py_func.__name__ for fn, _ in precompile.kernels_of(run)]

    assert names(lambda: NB.maxpool2d_forward(x, (2, 2), (2, 2))) == ["maxpool_forward_2x2"]
    assert names(lambda: NB.maxpool2d_forward(x, (3, 3), (2, 2))) == ["maxpool_forward"]
    assert names(lambda: NB.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), (4, 4))) == \
        ["maxpool_forward_padded"]
    assert names(lambda: NB.avgpool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), (4, 3), False)) \
        == ["avgpool_forward"]
    assert names(lambda: NB.avgpool2d_forward(x, (3, 3), (2, 2), (1, 1, 1, 1))) == \
        ["avgpool_forward_padded"]
    assert names(lambda: NB.avgpool2d_backward(dy, x.shape, (2, 2), (2, 2), (0, 0, 0, 0))) == \
        ["avgpool_backward_padded"]


@pytest.mark.parametrize("accumulate", [False, True])
def test_register_blocked_product_every_remainder(accumulate):
    """``blocked.abt`` walks C in 4 x 3 tiles: every count of leftover rows (0-3) and columns
    (0-2), and dot products shorter and longer than a SIMD vector, must come out right."""
    from nbcnn.backends.numba import blocked
    rng = np.random.default_rng(9)
    for n_r in (1, 4, 5, 6, 7, 8):
        for n_s in (1, 2, 3, 4, 5, 6):
            for n_t in (1, 7, 8, 19):
                a, b, c0 = randn(rng, n_r, n_t), randn(rng, n_s, n_t), randn(rng, n_r, n_s)
                c = c0.copy()
                blocked.abt(a, b, c, accumulate)
                want = a.astype(np.float64) @ b.T.astype(np.float64)
                close(c, want + c0 if accumulate else want)


def test_softmax_cross_entropy_refuses_bad_labels():
    with pytest.raises(ValueError):
        NB.softmax_cross_entropy(np.zeros((3, 10), np.float32), np.array([0, 10, 12]))


@pytest.mark.parametrize("into", [None, 0, 1])
def test_add_converts_at_the_boundary(into):
    """test_backend_ops checks the sum; here: float64 and transposed inputs are converted, and a
    float64 ``out`` (which cannot take the sum in place) is refused."""
    rng = np.random.default_rng(0)
    a, b = randn(rng, 3, 5, 7, 2), randn(rng, 3, 5, 7, 2)
    want = a.astype(np.float64) + b
    args = [NB.from_numpy(a), NB.from_numpy(b)]
    out = None if into is None else args[into]
    got = NB.add(*args, out=out)
    assert is_f32c(got) and (out is None or got is out)
    close(NB.add(a.T, b.T.astype(np.float64)), want.T)
    with pytest.raises(TypeError, match="add's out"):
        NB.add(a, b, out=np.zeros(a.shape))


def test_sgd_step_refuses_float64_parameters():
    p = np.zeros((4, 3), np.float64)
    with pytest.raises(TypeError):
        NB.sgd_step(p, np.zeros((4, 3), np.float32), None, 0.1, 0.0, False, 0.0)


def _training_step_outputs():
    """A conv-relu-pool-dense-loss forward and backward; every array it produces."""
    rng = np.random.default_rng(12)
    x = randn(rng, 5, 3, 13, 11)
    w, b = randn(rng, 6, 3, 3, 3), randn(rng, 6)
    h = NB.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1))
    a = NB.activation_forward("relu", h, 0.0)
    p, st = NB.maxpool2d_forward(a, (2, 2), (2, 2))
    flat = p.reshape(5, -1)
    wd, bd = randn(rng, 10, flat.shape[1]), randn(rng, 10)
    z = NB.dense_forward(flat, wd, bd)
    loss, dz, _ = NB.softmax_cross_entropy(z, rng.integers(0, 10, 5))
    dflat, dwd, dbd = NB.dense_backward(flat, wd, dz, True, True)
    dp = NB.maxpool2d_backward(dflat.reshape(p.shape), st)
    da = NB.activation_backward("relu", h, a, dp, 0.0)
    dx, dw, db = NB.conv2d_backward(x, w, da, (1, 1), (1, 1, 1, 1), True, True)
    xb = randn(rng, 5, 6, 8, 8)
    yb, bst = NB.batchnorm2d_forward_train(xb, np.ones(6, np.float32), np.zeros(6, np.float32),
                                           np.zeros(6, np.float32), np.ones(6, np.float32),
                                           0.1, 1e-5)
    bn = NB.batchnorm2d_backward(randn(rng, *yb.shape), bst, np.ones(6, np.float32))
    grouped = []
    for wg, opts in ((randn(rng, 6, 3, 3, 3), dict(groups=2, dilation=(2, 1))),
                     (randn(rng, 6, 1, 3, 3), dict(groups=6))):                 # depthwise
        yg = NB.conv2d_forward(yb, wg, None, (1, 1), (1, 1, 1, 1), **opts)
        grouped += [yg, *NB.conv2d_backward(yb, wg, randn(rng, *yg.shape), (1, 1), (1, 1, 1, 1),
                                            True, True, **opts)]
    return [h, a, p, z, np.float32(loss), dz, dflat, dp, da, dx, dw, db, yb, *bn, *grouped]


def test_deterministic_and_thread_count_independent(parallel_paths):
    """No prange races: repeated runs and 1 vs all threads give bit-identical results."""
    first = _training_step_outputs()
    again = _training_step_outputs()
    top = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = _training_step_outputs()
    finally:
        numba.set_num_threads(top)
    for a, b, c in zip(first, again, single):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_plane_kernel_and_chunked_dw_are_thread_count_independent(parallel_paths):
    """The SIMD plane kernel (a 1-channel first layer; 16 channels on 32-wide rows, forward and
    input gradient) and the stride-1 dw in chunks of several images (17 images of 14 x 14): 1 vs all
    threads give bit-identical results."""
    rng = np.random.default_rng(5)
    cases = [(randn(rng, 3, 1, 9, 7), randn(rng, 6, 1, 3, 3)),
             (randn(rng, 2, 16, 5, 32), randn(rng, 5, 16, 3, 3)),
             (randn(rng, 17, 3, 14, 14), randn(rng, 5, 3, 3, 3))]

    def outputs():
        out = []
        for x, w in cases:
            y = NB.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1))
            out += [y, *NB.conv2d_backward(x, w, np.cos(y), (1, 1), (1, 1, 1, 1), True, True)]
        return out

    first = outputs()
    top = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = outputs()
    finally:
        numba.set_num_threads(top)
    for a, b in zip(first, single):
        np.testing.assert_array_equal(a, b)


def test_device_name_and_dtype():
    assert NB.dtype == np.float32
    assert "thread" in NB.device_name()
    a = NB.from_numpy(np.arange(6.0).reshape(2, 3).T)
    assert is_f32c(a)
    assert NB.labels_from_numpy([1, 2]).dtype == np.int64


def test_sum_of_squares_is_thread_count_independent():
    """Gradient clipping's norm: the same bits with 1 or all threads (a fixed split into chunks,
    not a prange reduction), and float64 accurate."""
    rng = np.random.default_rng(13)
    arrays = [randn(rng, 100003), randn(rng, 7, 5), randn(rng, 1)]
    top = numba.get_num_threads()
    first = NB.sum_of_squares(arrays)
    try:
        numba.set_num_threads(1)
        single = NB.sum_of_squares(arrays)
    finally:
        numba.set_num_threads(top)
    assert first == single
    assert first == pytest.approx(REF64.sum_of_squares(arrays), rel=1e-12)
