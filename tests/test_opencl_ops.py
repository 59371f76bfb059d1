"""OpenCL specifics beyond test_backend_ops.py's op-by-op comparison: every blocking the tuner may
pick, the tuner's cache, the weight gradient split over images, vector paths; device selection;
build errors.

Skipped as a whole where no OpenCL platform/device exists (install `pocl-opencl-icd`).
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import (CONV_CASES, GROUPED_CASES, REF32, case_id, check_conv, check_op, close,
                     randn)

try:
    from nbcnn.backends.opencl import (DeviceSelectionError, KernelBuildError, OpenCLBackend,
                                       OpenCLUnavailableError, build_source, list_devices)
    _BACKEND = OpenCLBackend()
except Exception as exc:                                   # noqa: BLE001 - any reason to skip
    pytest.skip(f"no usable OpenCL device here ({str(exc).splitlines()[0]}); "
                "install an OpenCL driver, e.g. `apt-get install pocl-opencl-icd`",
                allow_module_level=True)

REF = REF32


@pytest.fixture(scope="module")
def be():
    return _BACKEND


def rng(seed=0):
    return np.random.default_rng(seed)


def rand(*shape, seed=0):
    return randn(rng(seed), *shape)


def np_(be, a):
    return be.to_numpy(a)


# ---- arrays -------------------------------------------------------------------------------
def test_array_round_trip_and_helpers(be):
    a = rand(2, 3, 5, 7)
    d = be.from_numpy(a)
    assert d.dtype == np.float32 and tuple(d.shape) == a.shape
    np.testing.assert_array_equal(np_(be, d), a)
    z = be.zeros((3, 4))
    np.testing.assert_array_equal(np_(be, z), np.zeros((3, 4), np.float32))
    be.copy_into(z, be.from_numpy(np.arange(12, dtype=np.float32).reshape(3, 4)))
    np.testing.assert_array_equal(np_(be, z), np.arange(12, dtype=np.float32).reshape(3, 4))
    r = be.reshape(d, (2, 105))
    np.testing.assert_array_equal(np_(be, r), a.reshape(2, 105))
    assert be.all_finite(d)
    bad = a.copy()
    bad[1, 2, 4, 6] = np.nan
    assert not be.all_finite(be.from_numpy(bad))
    bad[1, 2, 4, 6] = np.inf
    assert not be.all_finite(be.from_numpy(bad))
    labels = be.labels_from_numpy(np.array([0, 3, 1], dtype=np.int64))
    assert labels.dtype == np.int32
    be.synchronize()
    assert "opencl" in be.device_name()
    import nbcnn.backends as backends
    np.testing.assert_array_equal(backends.to_numpy(d), a)


# ---- convolution --------------------------------------------------------------------------
@pytest.mark.parametrize("split", [False, True], ids=["one-chunk", "split-images"])
@pytest.mark.parametrize("case", GROUPED_CASES, ids=case_id)
def test_conv2d_grouped_dilated_weight_gradient_split(be, case, split, monkeypatch):
    """Every option against numpy_ref, the weight gradient both in one pass over the images and
    split into chunks of partial sums."""
    monkeypatch.setattr(be, "target_items", 1 << 20 if split else 1)
    check_conv(be, rng(1), case, rtol=2e-4, atol=2e-4, dilation=case[8], groups=case[9])


def test_conv2d_groups_mismatch(be):
    with pytest.raises(ValueError, match="groups=4"):
        be.conv2d_forward(be.zeros((1, 6, 5, 5)), be.zeros((4, 2, 3, 3)), None, (1, 1),
                          (0, 0, 0, 0), groups=4)


def test_conv2d_bad_channels(be):
    with pytest.raises(ValueError, match="channels"):
        be.conv2d_forward(be.zeros((1, 2, 5, 5)), be.zeros((3, 1, 3, 3)), None, (1, 1), (0, 0, 0, 0))


# ---- pooling ------------------------------------------------------------------------------
def test_maxpool2x2_vector_path_keeps_nan_and_first_maximum(be):
    """The 2x2 kernels' vector lanes: a NaN wins its window wherever it is (as numpy_ref's
    max); ties keep the first maximum and the gradient goes to it, as numpy_ref."""
    x = rand(2, 2, 4, 32, seed=7)
    x[1, 1, 0, 8:10] = 2.5
    x[1, 1, 1, 8] = 2.5
    y_ref, st_ref = REF.maxpool2d_forward(x, (2, 2), (2, 2))
    y, st = be.maxpool2d_forward(be.from_numpy(x), (2, 2), (2, 2))
    np.testing.assert_array_equal(np_(be, y), y_ref)
    np.testing.assert_array_equal(np_(be, st[0]), st_ref[0])
    dy = rand(*y_ref.shape, seed=8)
    np.testing.assert_array_equal(np_(be, be.maxpool2d_backward(be.from_numpy(dy), st)),
                                  REF.maxpool2d_backward(dy, st_ref))
    x[0, 0, 0, 3], x[0, 1, 1, 6], x[1, 0, 1, 17], x[1, 1, 1, 9] = np.nan, np.nan, np.nan, np.nan
    y_ref, _ = REF.maxpool2d_forward(x, (2, 2), (2, 2))
    y, st = be.maxpool2d_forward(be.from_numpy(x), (2, 2), (2, 2))
    np.testing.assert_array_equal(np_(be, y), y_ref)
    assert np.isnan(y_ref).sum() == 4


# ---- a training step composed of ops, against numpy_ref ----------------------------------
def test_manual_training_step_matches_reference(be):
    """conv -> relu -> maxpool -> dense -> loss, backward, SGD: same loss and weights as numpy."""
    r = rng(30)
    x = r.random((5, 1, 12, 10), dtype=np.float32)
    y = r.integers(0, 4, size=5)
    params = {"cw": rand(6, 1, 3, 3, seed=31) * 0.3, "cb": rand(6, seed=32) * 0.1,
              "dw": rand(4, 6 * 6 * 5, seed=33) * 0.1, "db": rand(4, seed=34) * 0.1}

    def step(bk, p, xx, yy):
        h1 = bk.conv2d_forward(xx, p["cw"], p["cb"], (1, 1), (1, 1, 1, 1))
        h2 = bk.activation_forward("relu", h1, 0.0)
        h3, st = bk.maxpool2d_forward(h2, (2, 2), (2, 2))
        flat = bk.reshape(h3, (5, 6 * 6 * 5))
        logits = bk.dense_forward(flat, p["dw"], p["db"])
        loss, dlog, correct = bk.softmax_cross_entropy(logits, yy)
        dflat, g_dw, g_db = bk.dense_backward(flat, p["dw"], dlog, True, True)
        dh2 = bk.maxpool2d_backward(bk.reshape(dflat, (5, 6, 6, 5)), st)
        dh1 = bk.activation_backward("relu", h1, h2, dh2, 0.0)
        _, g_cw, g_cb = bk.conv2d_backward(xx, p["cw"], dh1, (1, 1), (1, 1, 1, 1), True, False)
        for k, g in (("cw", g_cw), ("cb", g_cb), ("dw", g_dw), ("db", g_db)):
            bk.sgd_step(p[k], g, None, 0.1, 0.0, False, 0.0)
        return loss, correct

    ref_p = {k: v.copy() for k, v in params.items()}
    dev_p = {k: be.from_numpy(v) for k, v in params.items()}
    loss_r, corr_r = step(REF, ref_p, x, y)
    loss_d, corr_d = step(be, dev_p, be.from_numpy(x), be.labels_from_numpy(y))
    assert loss_d == pytest.approx(loss_r, rel=1e-5)
    assert corr_d == corr_r
    for k in params:
        close(np_(be, dev_p[k]), ref_p[k], rtol=1e-4, atol=1e-5)


# ---- devices and build errors -------------------------------------------------------------
def test_list_devices_rows():
    rows = list_devices()
    assert rows, "the backend exists, so at least one device must be listed"
    for row in rows:
        for key in ("id", "platform", "device", "type", "opencl_version", "compute_units"):
            assert key in row
        assert row["id"] == f"{row['platform_index']}:{row['device_index']}"


def test_pick_device_by_id():
    first = list_devices()[0]["id"]
    b = OpenCLBackend(first)
    assert b.device_id == first
    np.testing.assert_array_equal(b.to_numpy(b.from_numpy(np.ones(3))), np.ones(3, np.float32))


@pytest.mark.parametrize("spec", ["99:0", "0:99", "zero:one", "1"])
def test_bad_device_index(spec):
    with pytest.raises(DeviceSelectionError) as info:
        OpenCLBackend(spec)
    assert isinstance(info.value, OpenCLUnavailableError) and isinstance(info.value, RuntimeError)
    assert spec in str(info.value)


def test_env_var_selects_device(monkeypatch):
    monkeypatch.setenv("NBCNN_OPENCL_DEVICE", "42:0")
    with pytest.raises(DeviceSelectionError, match="NBCNN_OPENCL_DEVICE"):
        OpenCLBackend()
    first = list_devices()[0]["id"]
    monkeypatch.setenv("NBCNN_OPENCL_DEVICE", first)
    assert OpenCLBackend().device_id == first


def test_get_backend_with_device_suffix():
    from nbcnn.backends import get_backend
    first = list_devices()[0]["id"]
    b = get_backend(f"opencl:{first}")
    assert b.device_id == first and b.name == "opencl"


def test_broken_kernel_gives_build_log(be):
    src = "__kernel void broken(__global float *x) { x[0] = undefined_name + ; }"
    with pytest.raises(KernelBuildError) as info:
        build_source(be.context, src, "broken.cl")
    msg = str(info.value)
    assert "broken.cl" in msg and "undefined_name" in msg and "build log" in msg
    assert "pocl-opencl-icd" in msg
    assert info.value.build_log


# ---- every blocking variant the tuner may pick, and the tuner's cache ----------------------
from nbcnn.backends.geometry import ConvGeometry  # noqa: E402
from nbcnn.backends.opencl import tune  # noqa: E402


# the shared cases that helpers.CONV_CASES comments with these names
TUNER_CASES = [CONV_CASES[i] for i in (25, 27, 28, 29, 31, 32, 3, 12, 19, 20, 21, 23)]
assert TUNER_CASES[5] == (1, 1, 2, 2, 2, (3, 3), (2, 2), (0, 2, 0, 2))


@pytest.mark.parametrize("case", TUNER_CASES,
                         ids=["s2-pad1", "s2-asym", "k5-s2", "k3x5-s1x2", "c9-o17", "pad-only-row",
                              "k1", "k5-pad2", "pad-gt-k", "k2-asym", "n17", "wide-plane"])
def test_conv_all_variants(be, case):
    """Every blocking the tuner may choose, not only its pick: the forward (and, at stride 1,
    the input gradient it computes on the flipped kernel), the weight and bias gradients."""
    n, c, h, w, o, (kh, kw), stride, padding = case
    x, wt = rand(n, c, h, w, seed=40), rand(o, c, kh, kw, seed=41)
    y_ref = REF.conv2d_forward(x, wt, None, stride, padding)
    dy = rand(*y_ref.shape, seed=42)
    dx_ref, dw_ref, db_ref = REF.conv2d_backward(x, wt, dy, stride, padding, True, True)
    dx_, wd_, dy_ = be.from_numpy(x), be.from_numpy(wt), be.from_numpy(dy)
    g = ConvGeometry.of(x.shape, wt.shape, stride, padding)
    gt = g.transposed()
    for cand in tune.fwd_candidates(g):
        y = be._empty(y_ref.shape)
        be._conv_fwd(dx_, wd_, None, y, g, False, cand)
        close(np_(be, y), y_ref)
        if gt is not None:
            dx = be._empty(x.shape)
            be._conv_fwd(dy_, wd_, None, dx, gt, True, cand)
            close(np_(be, dx), dx_ref, atol=1e-4)
    for cand in tune.dw_candidates(g):
        for with_bias in (True, False):
            dw, db = be._conv_dw(dx_, dy_, g, with_bias, cand)
            close(np_(be, dw), dw_ref, rtol=2e-4, atol=2e-4)
            if with_bias:
                close(np_(be, db), db_ref, rtol=2e-4, atol=2e-4)
            else:
                assert db is None


def test_conv_dw_split_images_every_variant(be):
    """Few (channel, filter) blocks: the images split into chunks of partial sums, every
    weight-gradient variant (bias included)."""
    x, wt = rand(9, 1, 7, 9, seed=47), rand(3, 1, 3, 3, seed=48)
    dy = rand(9, 3, 7, 9, seed=49)
    _, dw_ref, db_ref = REF.conv2d_backward(x, wt, dy, (1, 1), (1, 1, 1, 1), True, False)
    g = ConvGeometry.of(x.shape, wt.shape, (1, 1), (1, 1, 1, 1))
    assert be._split_images(9, 1)[0] > 1
    for cand in tune.dw_candidates(g):
        dw, db = be._conv_dw(be.from_numpy(x), be.from_numpy(dy), g, True, cand)
        close(np_(be, dw), dw_ref, rtol=2e-4, atol=2e-4)
        close(np_(be, db), db_ref, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("layout", ["dot", "rows", "any"])
def test_gemm_all_variants(be, layout):
    """Every matrix-multiply kernel and blocking the tuner may choose, on the strides of each
    of the dense layer's three products, odd sizes (past one block and one vector)."""
    m, n, k = 37, 45, 70
    a, b, bias = rand(m, k, seed=43), rand(k, n, seed=44), rand(n, seed=45)
    if layout == "dot":           # A(m, k) row-major, B(k, n) = W[n, k]
        a_d, sam, sak, b_d, sbk, sbn = a, k, 1, b.T.copy(), 1, k
    elif layout == "rows":        # A(m, k) = D[k, m], B(k, n) row-major
        a_d, sam, sak, b_d, sbk, sbn = a.T.copy(), 1, m, b, n, 1
    else:                         # neither: A row-major, B(k, n) = W[n, k] with A = D[k, m]
        a_d, sam, sak, b_d, sbk, sbn = a.T.copy(), 1, m, b.T.copy(), 1, k
    cands = tune.GEMM_CANDIDATES + [tune.GEMM_SAFE] + tune.CPU_GEMM_CANDIDATES[layout]
    for cand in cands:
        for with_bias in (False, True):
            out = be._gemm(be.from_numpy(a_d), sam, sak, be.from_numpy(b_d), sbk, sbn,
                           be.from_numpy(bias) if with_bias else None, m, n, k, cand)
            close(np_(be, out), a @ b + (bias if with_bias else 0), atol=1e-4)


def test_autotune_picks_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(tune, "MIN_TUNE_FLOP", 0)
    b = OpenCLBackend(autotune=True)
    x, wt = rand(2, 3, 9, 10, seed=45), rand(5, 3, 3, 3, seed=46)
    y = b.conv2d_forward(b.from_numpy(x), b.from_numpy(wt), None, (1, 1), (1, 1, 1, 1))
    close(b.to_numpy(y), REF.conv2d_forward(x, wt, None, (1, 1), (1, 1, 1, 1)))
    path = tune.cache_path()
    assert path.is_file() and str(path).startswith(str(tmp_path))
    import json
    saved = json.loads(path.read_text())[b.tuning.device_key]
    g = ConvGeometry.of(x.shape, wt.shape, (1, 1), (1, 1, 1, 1))
    key = f"conv_fwd:{g.key()}"
    choice = {k: v for k, v in saved[key].items() if k != tune.AMONG}
    assert choice in tune.fwd_candidates(g)
    assert saved[key][tune.AMONG] == tune._digest(tune.fwd_candidates(g))
    assert b.tuning.chosen()[key] == choice
    # a new backend reuses the saved choice without timing again
    b2 = OpenCLBackend(autotune=True)
    assert b2.tuning.conv_fwd(g, lambda cand: pytest.fail("timed again")) == choice
    # ... unless the candidates changed (a newer nbcnn's kernels): then it times them again
    monkeypatch.setattr(tune, "FWD_CANDIDATES", tune.FWD_CANDIDATES[:2])
    timed = []
    assert OpenCLBackend(autotune=True).tuning.conv_fwd(g, timed.append) in tune.fwd_candidates(g)
    assert len(timed) >= len(tune.fwd_candidates(g))


def test_autotune_cache_keyed_by_device_and_driver(monkeypatch, tmp_path):
    """A choice is reused only by the same platform, device and driver version: a new driver
    (or a cached choice no longer among the candidates) times every candidate again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(tune, "MIN_TUNE_FLOP", 0)
    b = OpenCLBackend(autotune=True)
    dev = b.device
    assert b.tuning.device_key.endswith(dev.driver_version.strip())
    assert dev.name.strip() in b.tuning.device_key
    g = ConvGeometry.of((2, 3, 9, 10), (5, 3, 3, 3), (1, 1), (1, 1, 1, 1))
    timed = []
    first = b.tuning.conv_fwd(g, lambda cand: timed.append(dict(cand)))
    assert first in tune.fwd_candidates(g)
    assert {tuple(sorted(c.items())) for c in timed} == \
        {tuple(sorted(c.items())) for c in tune.fwd_candidates(g)}    # every candidate timed
    # same device and driver: reused, nothing timed
    same = OpenCLBackend(autotune=True)
    assert same.tuning.conv_fwd(g, lambda cand: pytest.fail("timed again")) == first
    # a new driver version: its own entry, tuned afresh
    newer = OpenCLBackend(autotune=True)
    newer.tuning.device_key = b.tuning.device_key + ".1"
    timed.clear()
    assert newer.tuning.conv_fwd(g, lambda cand: timed.append(cand)) in tune.fwd_candidates(g)
    assert len(timed) >= len(tune.fwd_candidates(g))
    import json
    data = json.loads(tune.cache_path().read_text())
    assert {b.tuning.device_key, newer.tuning.device_key} <= set(data)
    # a stored choice that is not a candidate any more re-tunes
    data[b.tuning.device_key][f"conv_fwd:{g.key()}"] = {"OB": 3, "PX": 5}
    tune.cache_path().write_text(json.dumps(data))
    stale = OpenCLBackend(autotune=True)
    timed.clear()
    assert stale.tuning.conv_fwd(g, lambda cand: timed.append(cand)) in tune.fwd_candidates(g)
    assert timed
    assert any(line.startswith("tuned conv_fwd:") for line in stale.tuning.describe())


def test_untuned_defaults_are_candidates_on_cpu_and_gpu(be, monkeypatch):
    """The defaults without tuning are among the tested candidates, for this device and for
    the GPU branch (forced: is_gpu), so the paths only large devices take run here too."""
    g = ConvGeometry.of((2, 32, 9, 10), (64, 32, 3, 3), (1, 1), (1, 1, 1, 1))
    small = [ConvGeometry.of((2, 1, 28, 28), (8, 1, 3, 3), (1, 1), (1, 1, 1, 1)),  # rows dw
             ConvGeometry.of((2, 64, 4, 4), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1))]  # plane fwd
    for gpu in (False, True):
        monkeypatch.setattr(be, "is_gpu", gpu)
        for width in (1, 8, 16):          # a device's preferred vector width picks the blocking
            monkeypatch.setattr(be.tuning, "vector_width", width)
            for geo in [g] + small:
                assert be.tuning._default_fwd(geo) in tune.fwd_candidates(geo)
                assert be.tuning._default_dw(geo) in tune.dw_candidates(geo)
        for layout in ("dot", "rows", "any"):
            t = be.tuning._default_gemm((64, 128, 1024), layout)
            assert t in be.tuning.gemm_ok + tune.CPU_GEMM_CANDIDATES[layout]
        x, w = rand(2, 32, 9, 10, seed=50), rand(64, 32, 3, 3, seed=51)
        y = be.conv2d_forward(be.from_numpy(x), be.from_numpy(w), None, (1, 1), (1, 1, 1, 1))
        close(np_(be, y), REF.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1)), atol=1e-4)


def test_maxpool_backward_tiled_path_matches_gather_kernel():
    """stride == kernel takes maxpool2d_bwd_tiled; it must equal the general gather kernel,
    including inputs that are not a multiple of the window (the uncovered edge gets zeros),
    padding and ceil mode's cut last window."""
    import numpy as np
    import pytest
    try:
        from nbcnn.backends.opencl import OpenCLBackend
        be = OpenCLBackend()
    except Exception as exc:                      # noqa: BLE001
        pytest.skip(f"no OpenCL: {exc}")
    rng = np.random.default_rng(3)
    for shape, k, pads, out in (((2, 3, 7, 9), 2, (0, 0, 0, 0), None),
                                ((1, 2, 8, 8), 2, (0, 0, 0, 0), None),
                                ((2, 3, 5, 37), 2, (0, 0, 0, 0), None),     # 2x2: full + tail
                                ((1, 2, 6, 32), 2, (0, 0, 0, 0), None),     # 2x2: full blocks
                                ((2, 1, 10, 11), 3, (0, 0, 0, 0), None),
                                ((2, 3, 7, 9), 2, (0, 0, 0, 0), (4, 5)),       # ceil mode
                                ((2, 2, 9, 10), 3, (1, 1, 1, 1), (4, 4))):     # padded, ceil
        x = be.from_numpy(rng.standard_normal(shape).astype(np.float32))
        y, state = be.maxpool2d_forward(x, (k, k), (k, k), pads, out)
        dy = be.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32))
        got = be.to_numpy(be.maxpool2d_backward(dy, state))
        arg, x_shape, _, _, _ = state
        n, c, h, w = x_shape
        ref = be._empty(x_shape)
        defines = {"PAD_T": pads[0], "PAD_L": pads[2]} if any(pads) else None
        be._launch(be._kernel("pool", "maxpool2d_bwd", defines), (w, h, n * c), None, dy, arg,
                   ref, h, w, y.shape[2], y.shape[3], k, k, k, k)
        np.testing.assert_array_equal(got, be.to_numpy(ref))


def test_arrays_of_a_seen_shape_are_independent_arrays(be):
    """``_empty`` makes arrays of a shape it has seen by copying a template: each must be a
    whole array of its own (own buffer, no events), as the constructor's are."""
    first = be.from_numpy(np.ones((3, 5), np.float32))
    second, third = be._empty((3, 5)), be._empty((3, 5))
    assert second.base_data is not third.base_data is not first.base_data
    second.fill(2.0)
    third.fill(3.0)
    for a, v in ((first, 1.0), (second, 2.0), (third, 3.0)):
        assert a.shape == (3, 5) and a.strides == (20, 4) and a.flags.c_contiguous
        np.testing.assert_array_equal(a.get(), np.full((3, 5), v, np.float32))
    assert be._empty((0, 4)).shape == (0, 4)                 # no template for an empty array
    assert be._empty((2,), np.int32).dtype == np.int32


@pytest.mark.parametrize("shape", [(5, 3, 7, 9), (3, 2, 8, 8), (2, 6, 1, 1)])
def test_batchnorm_gpu_and_cpu_kernels_agree(be, monkeypatch, shape):
    """Batch norm has work-group kernels for GPUs and channel / plane kernels for CPU devices:
    both (the GPU one forced here) against the reference: training forward and backward, and
    the evaluation forward."""
    c = shape[1]
    x, dy = rand(*shape, seed=60) * 2 + 1, rand(*shape, seed=61)
    gamma, beta = rand(c, seed=62), rand(c, seed=63)
    rm, rv = rand(c, seed=64), np.abs(rand(c, seed=65)) + 0.5
    want_rm, want_rv = rm.copy(), rv.copy()
    y_ref, state = REF.batchnorm2d_forward_train(x, gamma, beta, want_rm, want_rv, 0.1, 1e-5)
    grads_ref = REF.batchnorm2d_backward(dy, state, gamma)
    for gpu in (False, True):
        monkeypatch.setattr(be, "is_gpu", gpu)
        d_rm, d_rv = be.from_numpy(rm), be.from_numpy(rv)
        y, st = be.batchnorm2d_forward_train(be.from_numpy(x), be.from_numpy(gamma),
                                             be.from_numpy(beta), d_rm, d_rv, 0.1, 1e-5)
        close(np_(be, y), y_ref, rtol=2e-4, atol=2e-5)
        close(np_(be, d_rm), want_rm, rtol=2e-4, atol=2e-5)
        close(np_(be, d_rv), want_rv, rtol=2e-4, atol=2e-5)
        for got, want in zip(be.batchnorm2d_backward(be.from_numpy(dy), st, be.from_numpy(gamma)),
                             grads_ref):
            close(np_(be, got), want, rtol=1e-3, atol=1e-4)
        y_eval = be.batchnorm2d_forward_eval(be.from_numpy(x), be.from_numpy(gamma),
                                             be.from_numpy(beta), be.from_numpy(rm),
                                             be.from_numpy(rv), 1e-5)
        close(np_(be, y_eval), REF.batchnorm2d_forward_eval(x, gamma, beta, rm, rv, 1e-5),
              rtol=2e-4, atol=2e-5)
