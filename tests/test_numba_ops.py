"""The Numba backend against the numpy reference, op by op, plus Numba-specific properties:
float32 C-contiguous outputs, race freedom (identical results on repeated runs and with 1 or 2
threads), non-contiguous / float64 inputs converted at the boundary, and the dropout mask equal
bit for bit to numpy's."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from nbcnn.backends.base import dropout_uniform
from nbcnn.backends.numba import NumbaBackend
from nbcnn.backends.numba import _jit as numba_jit
from nbcnn.backends.numpy_ref import NumpyBackend

NB = NumbaBackend()


@pytest.fixture(autouse=True, params=["parallel", "serial"])
def parallel_paths(request, monkeypatch):
    """Every test runs twice: with every op on the thread pool (the shapes here are small, so by
    default most would run on one thread) and with every op on the calling thread."""
    monkeypatch.setattr(numba_jit, "SERIAL_WORK", 0 if request.param == "parallel" else 1 << 62)
REF64 = NumpyBackend(np.float64)       # float64 oracle: the float32 kernels are compared to it
REF32 = NumpyBackend(np.float32)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(got, want, rtol=1e-4, atol=1e-5):
    """float32 closeness, atol scaled by the magnitude of the reference."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)


def is_f32c(a):
    return isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous


def f64(*arrays):
    return [None if a is None else np.asarray(a, np.float64) for a in arrays]


# (N, C, H, W, O, kernel, stride, padding)
CONV_CASES = [
    (1, 1, 7, 5, 2, (3, 3), (1, 1), (0, 0, 0, 0)),
    (5, 3, 9, 7, 4, (3, 3), (1, 1), (1, 1, 1, 1)),
    (5, 3, 9, 7, 4, (3, 3), (2, 2), (1, 1, 1, 1)),
    (2, 3, 10, 8, 3, (3, 3), (2, 1), (0, 1, 0, 1)),      # 'same'-style asymmetric, stride 2x1
    (1, 3, 8, 11, 5, (5, 5), (1, 1), (2, 2, 2, 2)),
    (5, 1, 12, 9, 8, (5, 5), (2, 2), (0, 0, 0, 0)),
    (3, 3, 6, 5, 4, (1, 1), (1, 1), (0, 0, 0, 0)),       # 1x1 kernel
    (2, 2, 7, 9, 3, (1, 1), (2, 2), (0, 0, 0, 0)),
    (1, 1, 28, 28, 8, (3, 3), (3, 3), (0, 0, 0, 0)),     # non-overlapping stride
    (2, 3, 9, 9, 2, (3, 5), (1, 2), (1, 2, 2, 1)),       # non-square kernel
    (4, 8, 14, 14, 16, (3, 3), (1, 1), (1, 1, 1, 1)),    # wider layer
    (3, 5, 7, 6, 9, (3, 3), (1, 1), (2, 0, 3, 0)),       # padding > k-1 on one side
    (2, 4, 9, 8, 7, (2, 2), (1, 1), (0, 1, 1, 0)),       # even kernel, asymmetric padding
    (17, 3, 14, 13, 5, (3, 3), (1, 1), (1, 1, 1, 1)),   # stride-1 dw: 8 chunks of 2 images + 1
    (3, 2, 9, 7, 6, (3, 3), (1, 1), (1, 0, 1, 2)),      # short window: 3x3 kernel, 4 + 2 filters
    (2, 5, 17, 18, 6, (3, 3), (1, 1), (1, 1, 1, 1)),    # wide plane: 3x3 kernel, dx 4 + 1
]


def backend_with(variant):
    nb = NumbaBackend()
    nb.conv_variant = variant
    return nb


def _case_id(c):
    return "x".join(map(str, c[:5])) + f"-k{c[5]}s{c[6]}p{c[7]}"


@pytest.mark.parametrize("variant", ["auto", "direct", "gemm"])
@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_conv2d_forward_backward(case, variant):
    NB = backend_with(variant)
    n, c, h, w_, o, kernel, stride, padding = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x, w, b = rand(rng, n, c, h, w_), rand(rng, o, c, *kernel), rand(rng, o)
    y = NB.conv2d_forward(x, w, b, stride, padding)
    assert is_f32c(y)
    close(y, REF64.conv2d_forward(*f64(x, w, b), stride, padding))
    y0 = NB.conv2d_forward(x, w, None, stride, padding)
    close(y0, REF64.conv2d_forward(*f64(x, w, None), stride, padding))

    dy = rand(rng, *y.shape)
    dx, dw, db = NB.conv2d_backward(x, w, dy, stride, padding, True, True)
    rdx, rdw, rdb = REF64.conv2d_backward(*f64(x, w, dy), stride, padding, True, True)
    for got, want in ((dx, rdx), (dw, rdw), (db, rdb)):
        assert is_f32c(got)
        close(got, want)
    dx2, dw2, db2 = NB.conv2d_backward(x, w, dy, stride, padding, False, False)
    assert dx2 is None and db2 is None
    close(dw2, rdw)


# (N, C, H, W, O, kernel, stride, padding, dilation, groups): grouped, dilated and depthwise
@pytest.mark.parametrize("width", [1, 10 ** 9], ids=["plane_3x3", "blocked"])
@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[5] == (3, 3) and c[6] == (1, 1)],
                         ids=_case_id)
def test_conv2d_3x3_plane_and_blocked_paths(case, width):
    """Both "auto" paths of 3 x 3 stride-1 layers, forced whatever the plane's width: the plane
    kernel (``conv_forward_3x3``, forward and input gradient) and the blocked one."""
    NB = backend_with("auto")
    NB.plane_3x3_width = width
    NB.plane_3x3_window = 10 ** 9
    n, c, h, w_, o, kernel, stride, padding = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x, w, b = rand(rng, n, c, h, w_), rand(rng, o, c, *kernel), rand(rng, o)
    close(NB.conv2d_forward(x, w, b, stride, padding),
          REF64.conv2d_forward(*f64(x, w, b), stride, padding))
    dy = rand(rng, *REF64.conv2d_forward(*f64(x, w, b), stride, padding).shape)
    got = NB.conv2d_backward(x, w, dy, stride, padding, True, True)
    want = REF64.conv2d_backward(*f64(x, w, dy), stride, padding, True, True)
    for g, r in zip(got, want):
        close(g, r)


GROUPED_CASES = [
    (2, 3, 11, 9, 4, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),      # dilation 2, groups 1
    (3, 4, 10, 13, 5, (3, 3), (2, 1), (1, 2, 0, 1), (2, 1), 1),     # dilation (2, 1), asymmetric
    (1, 1, 12, 9, 3, (3, 2), (1, 1), (0, 0, 0, 0), (2, 3), 1),      # one channel: the depthwise path
    (2, 4, 9, 7, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),       # groups 2
    (3, 8, 9, 10, 8, (3, 3), (2, 2), (1, 2, 1, 0), (1, 1), 4),      # groups 4, stride 2
    (1, 8, 11, 8, 12, (3, 5), (1, 2), (2, 2, 3, 3), (2, 1), 4),     # groups 4, dilated, batch 1
    (2, 6, 9, 9, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),       # depthwise
    (3, 5, 10, 7, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 5),      # depthwise, stride 2
    (2, 3, 9, 11, 6, (3, 3), (2, 1), (0, 2, 1, 2), (2, 2), 3),      # depthwise x2, dilated
    (2, 4, 7, 7, 4, (3, 3), (1, 1), (4, 0, 0, 3), (1, 1), 2),       # padding > span-1 on a side
]


def _grouped_id(c):
    return _case_id(c) + f"d{c[8]}g{c[9]}"


@pytest.mark.parametrize("case", GROUPED_CASES, ids=_grouped_id)
def test_conv2d_grouped_dilated(case):
    n, c, h, w_, o, kernel, stride, padding, dilation, groups = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x, w, b = rand(rng, n, c, h, w_), rand(rng, o, c // groups, *kernel), rand(rng, o)
    opts = dict(dilation=dilation, groups=groups)
    for bias in (b, None):
        y = NB.conv2d_forward(x, w, bias, stride, padding, **opts)
        assert is_f32c(y)
        close(y, REF64.conv2d_forward(*f64(x, w, bias), stride, padding, **opts))
    dy = rand(rng, *y.shape)
    for with_bias in (True, False):
        for need_dx in (True, False):
            got = NB.conv2d_backward(x, w, dy, stride, padding, with_bias, need_dx, **opts)
            want = REF64.conv2d_backward(*f64(x, w, dy), stride, padding, with_bias, need_dx,
                                         **opts)
            for g, r in zip(got, want):
                if r is None:
                    assert g is None
                else:
                    assert is_f32c(g)
                    close(g, r)


def test_conv2d_grouped_is_the_per_group_plain_convolution():
    """A grouped convolution equals the plain convolutions of each group concatenated (the two
    run on different kernels)."""
    rng = np.random.default_rng(15)
    x, w, b = rand(rng, 2, 6, 8, 9), rand(rng, 4, 3, 3, 3), rand(rng, 4)
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
    x, dy = rand(rng, 2, 4, 7, 6), rand(rng, 2, 4, 7, 6)
    for w, pad, opts in ((rand(rng, 4, 2, 3, 3), (1, 1, 2, 2), dict(groups=2, dilation=(1, 2))),
                         (rand(rng, 4, 1, 3, 3), (1, 1, 1, 1), dict(groups=4))):
        close(nb.conv2d_forward(x, w, None, (1, 1), pad, **opts),
              REF64.conv2d_forward(*f64(x, w, None), (1, 1), pad, **opts))
        for g, r in zip(nb.conv2d_backward(x, w, dy, (1, 1), pad, True, True, **opts),
                        REF64.conv2d_backward(*f64(x, w, dy), (1, 1), pad, True, True, **opts)):
            close(g, r)


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
    x, w, b = rand(rng, 5, 3, 9, 7), rand(rng, 4, 3, 3, 3), rand(rng, 4)
    close(nb.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1)),
          REF64.conv2d_forward(*f64(x, w, b), (1, 1), (1, 1, 1, 1)))
    dy = rand(rng, 5, 4, 9, 7)
    got = nb.conv2d_backward(x, w, dy, (1, 1), (1, 1, 1, 1), True, True)
    want = REF64.conv2d_backward(*f64(x, w, dy), (1, 1), (1, 1, 1, 1), True, True)
    for g, r in zip(got, want):
        close(g, r)


@pytest.mark.parametrize("variant", ["auto", "direct", "gemm"])
def test_conv2d_reused_buffers_keep_zero_border(variant):
    """Two layers whose padded inputs have the same shape but different padding (the scratch
    buffers are reused per shape) must not see each other's data."""
    nb = backend_with(variant)
    rng = np.random.default_rng(14)
    x, w = rand(rng, 2, 3, 6, 6), rand(rng, 4, 3, 3, 3)
    for padding in ((1, 1, 1, 1), (0, 2, 0, 2), (2, 0, 2, 0), (1, 1, 1, 1)):
        close(nb.conv2d_forward(x, w, None, (1, 1), padding),
              REF64.conv2d_forward(*f64(x, w, None), (1, 1), padding))
        dy = rand(rng, 2, 4, 6, 6)
        got = nb.conv2d_backward(x, w, dy, (1, 1), padding, True, True)
        want = REF64.conv2d_backward(*f64(x, w, dy), (1, 1), padding, True, True)
        for g, r in zip(got, want):
            close(g, r)


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


# (N, C, H, W, kernel, stride)
POOL_CASES = [
    (1, 1, 4, 4, (2, 2), (2, 2)),
    (5, 3, 9, 7, (2, 2), (2, 2)),          # odd sizes: last row/col dropped
    (2, 3, 9, 8, (3, 3), (2, 2)),          # overlapping windows
    (3, 2, 7, 10, (3, 2), (1, 2)),
    (1, 3, 11, 5, (2, 3), (3, 1)),         # stride > kernel on one axis
]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_maxpool(case):
    n, c, h, w, kernel, stride = case
    rng = np.random.default_rng(2)
    x = rand(rng, n, c, h, w)
    y, state = NB.maxpool2d_forward(x, kernel, stride)
    yr, rstate = REF32.maxpool2d_forward(x, kernel, stride)
    assert is_f32c(y)
    np.testing.assert_array_equal(y, yr)
    dy = rand(rng, *y.shape)
    dx = NB.maxpool2d_backward(dy, state)
    assert is_f32c(dx)
    close(dx, REF32.maxpool2d_backward(dy, rstate))


def test_maxpool_ties_go_to_first():
    x = np.zeros((2, 3, 6, 6), np.float32)           # every window is all ties
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = 1.0              # tie of two maxima inside one window
    dy = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) + 1
    for kernel, stride in (((2, 2), (2, 2)), ((3, 3), (1, 1)), ((2, 3), (2, 1))):
        y, state = NB.maxpool2d_forward(x, kernel, stride)
        yr, rstate = REF32.maxpool2d_forward(x, kernel, stride)
        d = np.ascontiguousarray(np.resize(dy, y.shape))
        np.testing.assert_array_equal(NB.maxpool2d_backward(d, state),
                                      REF32.maxpool2d_backward(d, rstate))
    assert state[0].dtype == np.int32


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avgpool(case):
    n, c, h, w, kernel, stride = case
    rng = np.random.default_rng(3)
    x = rand(rng, n, c, h, w)
    y = NB.avgpool2d_forward(x, kernel, stride)
    assert is_f32c(y)
    close(y, REF64.avgpool2d_forward(*f64(x), kernel, stride))
    dy = rand(rng, *y.shape)
    dx = NB.avgpool2d_backward(dy, x.shape, kernel, stride)
    assert is_f32c(dx)
    close(dx, REF64.avgpool2d_backward(*f64(dy), x.shape, kernel, stride))


# (N, C, H, W, kernel, stride, padding (top, bottom, left, right), output size)
POOL_PAD_CASES = [
    (2, 3, 7, 5, (3, 3), (2, 2), (1, 1, 1, 1), (4, 3)),      # padding 1, floor mode
    (1, 3, 7, 5, (3, 3), (2, 2), (1, 1, 1, 1), (4, 3)),      # ceil adds nothing here
    (3, 2, 7, 9, (2, 2), (2, 2), (0, 0, 0, 0), (4, 5)),      # 2x2/2 ceil on odd sizes
    (2, 3, 7, 6, (3, 2), (2, 1), (1, 1, 1, 1), (4, 7)),
    (1, 2, 5, 5, (2, 2), (2, 2), (1, 1, 1, 1), (3, 3)),
]


@pytest.mark.parametrize("case", POOL_PAD_CASES, ids=str)
def test_pooling_with_padding_and_ceil_mode(case):
    n, c, h, w, kernel, stride, padding, out = case
    rng = np.random.default_rng(5)
    x = rand(rng, n, c, h, w)
    y, state = NB.maxpool2d_forward(x, kernel, stride, padding, out)
    yr, rstate = REF32.maxpool2d_forward(x, kernel, stride, padding, out)
    assert is_f32c(y) and y.shape == (n, c) + out
    np.testing.assert_array_equal(y, yr)
    dy = rand(rng, *y.shape)
    close(NB.maxpool2d_backward(dy, state), REF32.maxpool2d_backward(dy, rstate))
    for include in (True, False):
        y = NB.avgpool2d_forward(x, kernel, stride, padding, out, include)
        assert is_f32c(y)
        close(y, REF64.avgpool2d_forward(*f64(x), kernel, stride, padding, out, include))
        dx = NB.avgpool2d_backward(dy, x.shape, kernel, stride, padding, include)
        assert is_f32c(dx)
        close(dx, REF64.avgpool2d_backward(*f64(dy), x.shape, kernel, stride, padding, include))


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


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 7, 4), (2, 64, 8, 8)], ids=str)
def test_global_avgpool(shape):
    rng = np.random.default_rng(4)
    x = rand(rng, *shape)
    y = NB.global_avgpool2d_forward(x)
    assert is_f32c(y) and y.shape == shape[:2]
    close(y, REF64.global_avgpool2d_forward(*f64(x)))
    dy = rand(rng, *y.shape)
    dx = NB.global_avgpool2d_backward(dy, x.shape)
    assert is_f32c(dx)
    close(dx, REF64.global_avgpool2d_backward(*f64(dy), x.shape))


@pytest.mark.parametrize("accumulate", [False, True])
def test_register_blocked_product_every_remainder(accumulate):
    """``blocked.abt`` walks C in 4 x 3 tiles: every count of leftover rows (0-3) and columns
    (0-2), and dot products shorter and longer than a SIMD vector, must come out right."""
    from nbcnn.backends.numba import blocked
    rng = np.random.default_rng(9)
    for n_r in (1, 4, 5, 6, 7, 8):
        for n_s in (1, 2, 3, 4, 5, 6):
            for n_t in (1, 7, 8, 19):
                a, b, c0 = rand(rng, n_r, n_t), rand(rng, n_s, n_t), rand(rng, n_r, n_s)
                c = c0.copy()
                blocked.abt(a, b, c, accumulate)
                want = a.astype(np.float64) @ b.T.astype(np.float64)
                close(c, want + c0 if accumulate else want)


@pytest.mark.parametrize("n,n_in,n_out", [(1, 13, 7), (5, 13, 7), (37, 300, 70), (6, 1100, 9)])
def test_dense(n, n_in, n_out):
    rng = np.random.default_rng(4)
    x, w, b = rand(rng, n, n_in), rand(rng, n_out, n_in), rand(rng, n_out)
    y = NB.dense_forward(x, w, b)
    assert is_f32c(y)
    close(y, REF64.dense_forward(*f64(x, w, b)))
    close(NB.dense_forward(x, w, None), REF64.dense_forward(*f64(x, w, None)))
    dy = rand(rng, n, n_out)
    got = NB.dense_backward(x, w, dy, True, True)
    want = REF64.dense_backward(*f64(x, w, dy), True, True)
    for g, r in zip(got, want):
        assert g.dtype == np.float32
        close(g, r)
    dx, _, db = NB.dense_backward(x, w, dy, False, False)
    assert dx is None and db is None


@pytest.mark.parametrize("kind", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activations(kind):
    rng = np.random.default_rng(5)
    x = rand(rng, 3, 4, 5, 7) * 3
    x[0, 0, 0, :3] = 0.0                          # the kink at zero
    y = NB.activation_forward(kind, x, 0.1)
    assert is_f32c(y)
    close(y, REF64.activation_forward(kind, *f64(x), 0.1))
    dy = rand(rng, *x.shape)
    dx = NB.activation_backward(kind, x, y, dy, 0.1)
    assert is_f32c(dx)
    close(dx, REF64.activation_backward(kind, *f64(x, y, dy), 0.1))
    with pytest.raises(ValueError):
        NB.activation_forward("swish", x, 0.0)


@pytest.mark.parametrize("n", [1, 5, 64])
def test_softmax_cross_entropy(n):
    rng = np.random.default_rng(6)
    logits = rand(rng, n, 10) * 5
    logits[0, :] += 200.0                         # large logits must not overflow
    labels = rng.integers(0, 10, n)
    loss, dlogits, correct = NB.softmax_cross_entropy(logits, labels)
    rloss, rd, rcorrect = REF64.softmax_cross_entropy(*f64(logits), labels)
    assert isinstance(loss, float) and isinstance(correct, int)
    assert loss == pytest.approx(rloss, rel=1e-5, abs=1e-6)
    assert correct == rcorrect
    assert is_f32c(dlogits)
    close(dlogits, rd)
    with pytest.raises(ValueError):
        NB.softmax_cross_entropy(logits, labels + 10)


@pytest.mark.parametrize("p,seed", [(0.5, 0), (0.25, 12345), (0.9, 2**33 + 7)])
def test_dropout_mask_matches_numpy(p, seed):
    rng = np.random.default_rng(7)
    x = rand(rng, 5, 3, 9, 7)
    y, mask = NB.dropout_forward(x, p, seed)
    ry, rmask = REF32.dropout_forward(x, p, seed)
    assert is_f32c(y) and is_f32c(mask)
    np.testing.assert_array_equal(mask, rmask)
    np.testing.assert_array_equal(y, ry)
    dy = rand(rng, *x.shape)
    np.testing.assert_array_equal(NB.dropout_backward(dy, mask), REF32.dropout_backward(dy, rmask))
    # the mask really is drawn by dropout_uniform
    u = dropout_uniform(seed, np.arange(x.size)).reshape(x.shape)
    np.testing.assert_array_equal(mask > 0, u >= np.float32(p))


@pytest.mark.parametrize("shape", [(5, 3, 9, 7), (1, 4, 6, 5)])
def test_batchnorm(shape):
    rng = np.random.default_rng(8)
    c = shape[1]
    x = rand(rng, *shape) * 2 + 1
    gamma, beta = rand(rng, c), rand(rng, c)
    rm, rv = rand(rng, c), np.abs(rand(rng, c)) + 0.5
    rm64, rv64 = rm.astype(np.float64), rv.astype(np.float64)
    y, state = NB.batchnorm2d_forward_train(x, gamma, beta, rm, rv, 0.1, 1e-5)
    yr, rstate = REF64.batchnorm2d_forward_train(*f64(x, gamma, beta), rm64, rv64, 0.1, 1e-5)
    assert is_f32c(y)
    close(y, yr)
    close(rm, rm64)                               # running statistics updated in place
    close(rv, rv64)
    dy = rand(rng, *shape)
    got = NB.batchnorm2d_backward(dy, state, gamma)
    want = REF64.batchnorm2d_backward(*f64(dy), rstate, gamma.astype(np.float64))
    for g, r in zip(got, want):
        assert is_f32c(g)
        close(g, r, atol=1e-4)
    ye = NB.batchnorm2d_forward_eval(x, gamma, beta, rm, rv, 1e-5)
    close(ye, REF64.batchnorm2d_forward_eval(*f64(x, gamma, beta, rm, rv), 1e-5))


@pytest.mark.parametrize("into", [None, 0, 1])
def test_add(into):
    rng = np.random.default_rng(0)
    a, b = rand(rng, 3, 5, 7, 2), rand(rng, 3, 5, 7, 2)
    want = a.astype(np.float64) + b
    args = [NB.from_numpy(a), NB.from_numpy(b)]
    out = None if into is None else args[into]
    got = NB.add(*args, out=out)
    assert is_f32c(got) and (out is None or got is out)
    close(got, want)
    close(NB.add(a.T, b.T.astype(np.float64)), want.T)     # converted at the boundary
    with pytest.raises(TypeError, match="add's out"):
        NB.add(a, b, out=np.zeros(a.shape))                 # float64: cannot take the sum in place


def _opt_state(rng, shape=(4, 3, 3, 3)):
    return rand(rng, *shape), rand(rng, *shape)


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.0, False, 0.01),
                                                  (0.9, False, 0.0), (0.9, True, 1e-3)])
def test_sgd_step(momentum, nesterov, wd):
    rng = np.random.default_rng(9)
    p, g = _opt_state(rng)
    v = rand(rng, *p.shape) if momentum else None
    rp, rv = p.astype(np.float64), (None if v is None else v.astype(np.float64))
    for _ in range(3):
        NB.sgd_step(p, g, v, 0.05, momentum, nesterov, wd)
        REF64.sgd_step(rp, g.astype(np.float64), rv, 0.05, momentum, nesterov, wd)
    close(p, rp)
    if v is not None:
        close(v, rv)
    with pytest.raises(TypeError):
        NB.sgd_step(p.astype(np.float64), g, None, 0.1, 0.0, False, 0.0)


@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.01, False), (0.01, True)])
def test_adam_step(wd, decoupled):
    rng = np.random.default_rng(10)
    p, g = _opt_state(rng)
    m, v = np.zeros_like(p), np.zeros_like(p)
    rp, rm, rv = p.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
    for step in range(1, 4):
        NB.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, step, wd, decoupled)
        REF64.adam_step(rp, g.astype(np.float64), rm, rv, 1e-3, 0.9, 0.999, 1e-8, step, wd,
                        decoupled)
    close(p, rp)
    close(m, rm)
    close(v, rv)


@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.01)])
def test_rmsprop_step(momentum, wd):
    rng = np.random.default_rng(11)
    p, g = _opt_state(rng)
    s = np.zeros_like(p)
    buf = np.zeros_like(p) if momentum else None
    rp, rs = p.astype(np.float64), s.astype(np.float64)
    rbuf = None if buf is None else buf.astype(np.float64)
    for _ in range(3):
        NB.rmsprop_step(p, g, s, buf, 1e-2, 0.99, 1e-8, momentum, wd)
        REF64.rmsprop_step(rp, g.astype(np.float64), rs, rbuf, 1e-2, 0.99, 1e-8, momentum, wd)
    close(p, rp)
    close(s, rs)


def _training_step_outputs():
    """A conv-relu-pool-dense-loss forward and backward; every array it produces."""
    rng = np.random.default_rng(12)
    x = rand(rng, 5, 3, 13, 11)
    w, b = rand(rng, 6, 3, 3, 3), rand(rng, 6)
    h = NB.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1))
    a = NB.activation_forward("relu", h, 0.0)
    p, st = NB.maxpool2d_forward(a, (2, 2), (2, 2))
    flat = p.reshape(5, -1)
    wd, bd = rand(rng, 10, flat.shape[1]), rand(rng, 10)
    z = NB.dense_forward(flat, wd, bd)
    loss, dz, _ = NB.softmax_cross_entropy(z, rng.integers(0, 10, 5))
    dflat, dwd, dbd = NB.dense_backward(flat, wd, dz, True, True)
    dp = NB.maxpool2d_backward(dflat.reshape(p.shape), st)
    da = NB.activation_backward("relu", h, a, dp, 0.0)
    dx, dw, db = NB.conv2d_backward(x, w, da, (1, 1), (1, 1, 1, 1), True, True)
    xb = rand(rng, 5, 6, 8, 8)
    yb, bst = NB.batchnorm2d_forward_train(xb, np.ones(6, np.float32), np.zeros(6, np.float32),
                                           np.zeros(6, np.float32), np.ones(6, np.float32),
                                           0.1, 1e-5)
    bn = NB.batchnorm2d_backward(rand(rng, *yb.shape), bst, np.ones(6, np.float32))
    grouped = []
    for wg, opts in ((rand(rng, 6, 3, 3, 3), dict(groups=2, dilation=(2, 1))),
                     (rand(rng, 6, 1, 3, 3), dict(groups=6))):                 # depthwise
        yg = NB.conv2d_forward(yb, wg, None, (1, 1), (1, 1, 1, 1), **opts)
        grouped += [yg, *NB.conv2d_backward(yb, wg, rand(rng, *yg.shape), (1, 1), (1, 1, 1, 1),
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
    """conv_forward_3x3 (a 1-channel first layer; 16 channels on 32-wide rows, forward and input
    gradient) and the stride-1 dw in chunks of several images (17 images of 14 x 14): 1 vs all
    threads give bit-identical results."""
    rng = np.random.default_rng(5)
    cases = [(rand(rng, 3, 1, 9, 7), rand(rng, 6, 1, 3, 3)),
             (rand(rng, 2, 16, 5, 32), rand(rng, 5, 16, 3, 3)),
             (rand(rng, 17, 3, 14, 14), rand(rng, 5, 3, 3, 3))]

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
    arrays = [rand(rng, 100003), rand(rng, 7, 5), rand(rng, 1)]
    top = numba.get_num_threads()
    first = NB.sum_of_squares(arrays)
    try:
        numba.set_num_threads(1)
        single = NB.sum_of_squares(arrays)
    finally:
        numba.set_num_threads(top)
    assert first == single
    assert first == pytest.approx(REF64.sum_of_squares(arrays), rel=1e-12)
