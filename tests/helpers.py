"""One backend-against-reference check for the op tests, and the case lists they share.

``check_op(backend, "conv2d_forward", x, w, b, stride, padding)`` runs the op on the backend
under test (numpy inputs converted with its ``from_numpy``) and on the float64 numpy reference
(inputs converted to float64 copies), then compares every output with ``close``: one tolerance
rule for float32 against float64 (rtol, and atol scaled by the reference's magnitude). Nested
tuples are walked, ``None`` must stay ``None``, integers and integer arrays must be equal,
outputs named in ``opaque`` (a backend's private state) are not compared but come back in
``Checked`` so the backward can take them. A failure names the backend, the op, the case and the
output index.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from nbcnn.backends.base import pool_output_size
from nbcnn.backends.numpy_ref import NumpyBackend

REF64 = NumpyBackend(np.float64)       # the oracle: float32 kernels are compared to float64
REF32 = NumpyBackend(np.float32)       # for checks that must be bit-identical (masks, maxima)
RTOL, ATOL = 1e-4, 1e-5


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def close(got, want, rtol=RTOL, atol=ATOL, what=""):
    """float32 closeness to a (float64) reference, atol scaled by the reference's magnitude."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.nanmax(np.abs(want)))) if want.size and not np.isnan(want).all() \
        else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


class Both(NamedTuple):
    """An input that differs between the two sides (a state one of them returned)."""
    got: Any
    want: Any


class Checked(NamedTuple):
    got: Any            # the backend's outputs, as it returned them
    want: Any           # the reference's outputs
    args: list          # the backend's inputs after the call (in-place updates included)
    ref_args: list      # the reference's inputs after the call

    def both(self, index=None):
        """Output ``index`` (the only one if None) of both sides, to pass on to the next op."""
        if index is None:
            return Both(self.got, self.want)
        return Both(self.got[index], self.want[index])

    def both_input(self, index):
        """Input ``index`` of both sides after the call (a state the op updated in place)."""
        return Both(self.args[index], self.ref_args[index])


def _to_backend(backend, value):
    if isinstance(value, list):
        return [_to_backend(backend, v) for v in value]
    if isinstance(value, Both):
        return value.got
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return backend.from_numpy(value.copy())
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        return backend.labels_from_numpy(value)
    return value


def _to_ref(ref, value):
    if isinstance(value, list):
        return [_to_ref(ref, v) for v in value]
    if isinstance(value, Both):
        return value.want
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(ref.dtype)             # a copy: in-place ops update their own
    return value


def compare(backend, got, want, what, rtol=RTOL, atol=ATOL, exact=False):
    """Compare one output (walking tuples) of ``backend`` with the reference's."""
    if want is None:
        assert got is None, f"{what}: expected None, got {type(got).__name__}"
    elif got is None:
        assert False, f"{what}: got None, expected {type(want).__name__}"
    elif isinstance(want, (tuple, list)):
        assert len(got) == len(want), f"{what}: {len(got)} outputs, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            compare(backend, g, w, f"{what}[{i}]", rtol, atol, exact)
    elif isinstance(want, (bool, int, np.integer)):
        assert isinstance(got, int) and got == want, f"{what}: {got!r} != {want!r}"
    elif isinstance(want, float):
        assert isinstance(got, float), f"{what}: {type(got).__name__} is not a float"
        close(got, want, rtol, atol, what)
    else:
        g = got if isinstance(got, np.ndarray) else backend.to_numpy(got)
        if backend.name == "numba" and want.dtype.kind == "f":
            assert g.dtype == np.float32 and g.flags.c_contiguous, \
                f"{what}: numba output {g.dtype}, C-contiguous {g.flags.c_contiguous}"
        if exact or want.dtype.kind != "f":
            np.testing.assert_array_equal(g, np.asarray(want, g.dtype), err_msg=what)
        else:
            close(g, want, rtol, atol, what)


def check_op(backend, op, *inputs, case="", ref=REF64, rtol=RTOL, atol=ATOL, exact=False,
             opaque=(), mutated=(), **kwargs):
    """Run ``op`` on ``backend`` and on ``ref`` with the same ``inputs`` and compare.

    inputs: float numpy arrays (given to the backend through ``from_numpy``, to the reference as
    copies in its dtype), integer arrays (labels, through ``labels_from_numpy``), ``Both`` (a
    state each side returned earlier) or anything else, passed as is. opaque: indices of outputs
    not compared (states private to a backend). mutated: indices of inputs the op updates in
    place, compared after the call. exact: bit-identical instead of ``close``.
    """
    what = f"{backend.name}.{op}[{case}]" if case else f"{backend.name}.{op}"
    args = [_to_backend(backend, v) for v in inputs]
    ref_args = [_to_ref(ref, v) for v in inputs]
    got = getattr(backend, op)(*args, **kwargs)
    want = getattr(ref, op)(*ref_args, **kwargs)
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), \
            f"{what}: {type(got).__name__} of {len(got)}, expected a tuple of {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            if i not in opaque:
                compare(backend, g, w, f"{what} output {i}", rtol, atol, exact)
    else:
        compare(backend, got, want, f"{what} output", rtol, atol, exact)
    for i in mutated:
        compare(backend, args[i], ref_args[i], f"{what} input {i} (updated in place)", rtol,
                atol, exact)
    return Checked(got, want, args, ref_args)


def check_steps(backend, op, arrays, args_of_step, steps=3, case="", rtol=RTOL, atol=ATOL):
    """An optimizer step ``op(*arrays, *args_of_step(t))`` applied ``steps`` times on both
    sides (t = 1, 2, ...); every array (parameter, gradient, state) compared at the end."""
    what = f"{backend.name}.{op}[{case}]" if case else f"{backend.name}.{op}"
    on = [_to_backend(backend, a) for a in arrays]
    on_ref = [_to_ref(REF64, a) for a in arrays]
    for t in range(1, steps + 1):
        getattr(backend, op)(*on, *args_of_step(t))
        getattr(REF64, op)(*on_ref, *args_of_step(t))
    for i, (g, w) in enumerate(zip(on, on_ref)):
        compare(backend, g, w, f"{what} array {i} after {steps} steps", rtol, atol)


def check_conv(be, rng, case, rtol=1e-4, atol=1e-5, **opts):
    """conv2d forward with and without bias, backward with every (bias, need_dx)."""
    n, c, h, w, o, kernel, stride, padding = case[:8]
    x, wt, b = randn(rng, n, c, h, w), randn(rng, o, c // opts.get("groups", 1), *kernel), \
        randn(rng, o)
    name = case_id(case)
    y = check_op(be, "conv2d_forward", x, wt, b, stride, padding, case=name, **opts).want
    check_op(be, "conv2d_forward", x, wt, None, stride, padding, case=name, **opts)
    dy = randn(rng, *y.shape)
    for bias in (True, False):
        for need_dx in (True, False):
            check_op(be, "conv2d_backward", x, wt, dy, stride, padding, bias, need_dx,
                     case=f"{name} bias={bias} need_dx={need_dx}", rtol=rtol, atol=atol, **opts)


def case_id(case):
    """A readable test id from a case tuple."""
    return "-".join("x".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in case)


# ---- the shared case lists (odd shapes: stride 2, padding, non-square, C > 1, batch 1) --------

# (N, C, H, W, O, kernel, stride, padding (top, bottom, left, right))
CONV_CASES = [
    (1, 1, 7, 7, 2, (3, 3), (1, 1), (0, 0, 0, 0)),
    (5, 3, 9, 6, 4, (3, 3), (2, 2), (1, 1, 1, 1)),
    (2, 3, 8, 11, 5, (5, 5), (1, 1), (2, 2, 2, 2)),
    (3, 1, 6, 5, 3, (1, 1), (1, 1), (0, 0, 0, 0)),
    (2, 2, 7, 8, 3, (3, 3), (2, 1), (0, 1, 0, 1)),
    (1, 3, 10, 7, 6, (5, 3), (2, 2), (0, 0, 1, 1)),
    (5, 3, 6, 6, 9, (3, 3), (1, 1), (1, 1, 1, 1)),
    (2, 16, 9, 9, 17, (3, 3), (1, 1), (1, 1, 1, 1)),
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
    (17, 3, 14, 13, 5, (3, 3), (1, 1), (1, 1, 1, 1)),    # numba stride-1 dw: 8 chunks of 2 + 1
    (3, 2, 9, 7, 6, (3, 3), (1, 1), (1, 0, 1, 2)),       # numba short window: 4 + 2 filters
    (2, 5, 17, 18, 6, (3, 3), (1, 1), (1, 1, 1, 1)),     # numba wide plane: dx 4 + 1
    (1, 1, 7, 9, 1, (1, 1), (1, 1), (0, 0, 0, 0)),
    (5, 3, 9, 7, 10, (3, 3), (2, 2), (1, 1, 1, 1)),      # s2-pad1
    (1, 3, 8, 11, 9, (5, 5), (1, 1), (0, 0, 0, 0)),
    (5, 1, 10, 13, 8, (3, 3), (2, 2), (0, 1, 0, 1)),     # s2-asym
    (2, 3, 11, 6, 5, (5, 5), (2, 2), (2, 2, 2, 2)),      # k5-s2
    (1, 3, 6, 10, 3, (3, 5), (1, 2), (0, 1, 2, 0)),      # k3x5-s1x2
    (2, 2, 12, 12, 3, (2, 2), (3, 3), (0, 0, 0, 0)),
    (3, 9, 6, 6, 17, (3, 3), (1, 1), (1, 1, 1, 1)),      # c9-o17: past one OpenCL OB block
    (1, 1, 2, 2, 2, (3, 3), (2, 2), (0, 2, 0, 2)),       # pad-only-row: a row of only padding
    (1, 2, 5, 37, 3, (3, 3), (2, 2), (1, 1, 1, 1)),      # OpenCL strided dx: 16-wide phase rows
    (2, 3, 6, 20, 2, (1, 1), (2, 2), (0, 0, 0, 0)),      # ... 8-wide, a 1x1 kernel's empty phases
    (3, 7, 10, 11, 9, (1, 1), (1, 1), (0, 0, 0, 0)),     # numba 1x1 GEMM: panels + last columns
    (2, 6, 16, 20, 5, (1, 1), (2, 2), (0, 0, 0, 0)),     # ... strided: a panel + 1-vector tiles
    (1, 530, 3, 2, 6, (1, 1), (1, 1), (0, 0, 0, 0)),     # ... over channels in two k blocks
]

# (N, C, H, W, O, kernel, stride, padding, dilation, groups): grouped, dilated and depthwise
GROUPED_CASES = [
    (2, 3, 9, 8, 4, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),       # dilation 2
    (1, 4, 10, 7, 6, (3, 3), (2, 1), (1, 0, 2, 1), (2, 1), 2),      # dilation (2, 1), groups 2
    (3, 8, 9, 9, 8, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4),       # groups 4, stride 2
    (2, 6, 8, 11, 6, (3, 3), (2, 2), (1, 2, 1, 0), (1, 1), 6),      # depthwise, stride 2
    (1, 4, 9, 7, 8, (5, 3), (1, 1), (4, 4, 1, 1), (2, 1), 4),       # depthwise x2, dilated
    (2, 3, 11, 9, 4, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),      # dilation 2, groups 1
    (3, 4, 10, 13, 5, (3, 3), (2, 1), (1, 2, 0, 1), (2, 1), 1),     # dilation (2, 1), asymmetric
    (1, 1, 12, 9, 3, (3, 2), (1, 1), (0, 0, 0, 0), (2, 3), 1),      # one channel: depthwise path
    (2, 4, 9, 7, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),       # groups 2
    (3, 8, 9, 10, 8, (3, 3), (2, 2), (1, 2, 1, 0), (1, 1), 4),      # groups 4, stride 2
    (1, 8, 11, 8, 12, (3, 5), (1, 2), (2, 2, 3, 3), (2, 1), 4),     # groups 4, dilated, batch 1
    (2, 4, 13, 17, 40, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),    # 20 filters a group: OB 8
    (2, 6, 9, 9, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),       # depthwise
    (3, 5, 10, 7, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 5),      # depthwise, stride 2
    (2, 3, 9, 11, 6, (3, 3), (2, 1), (0, 2, 1, 2), (2, 2), 3),      # depthwise x2, dilated
    (2, 4, 7, 7, 4, (3, 3), (1, 1), (4, 0, 0, 3), (1, 1), 2),       # padding > span-1 on a side
]

# (N, C, H, W, kernel, stride)
POOL_CASES = [
    (1, 1, 4, 4, (2, 2), (2, 2)),
    (5, 3, 7, 9, (3, 3), (2, 2)),
    (2, 2, 6, 5, (2, 3), (1, 2)),
    (1, 3, 5, 5, (3, 3), (1, 1)),
    (3, 4, 9, 8, (2, 2), (3, 3)),
    (5, 3, 9, 7, (2, 2), (2, 2)),          # odd sizes: last row/col dropped
    (2, 3, 9, 8, (3, 3), (2, 2)),          # overlapping windows
    (3, 2, 7, 10, (3, 2), (1, 2)),
    (1, 3, 11, 5, (2, 3), (3, 1)),         # stride > kernel on one axis
    (1, 1, 6, 8, (2, 2), (2, 2)),
    (5, 3, 7, 9, (2, 2), (2, 2)),
    (2, 3, 9, 7, (3, 3), (2, 2)),
    (2, 2, 9, 10, (2, 3), (3, 2)),         # gaps between windows, non-square
    (1, 3, 5, 5, (5, 5), (1, 1)),
    (2, 3, 7, 35, (2, 2), (2, 2)),         # OpenCL 2x2 vector blocks of 8 windows and a tail
    (2, 3, 6, 28, (2, 2), (2, 2)),         # OpenCL 2x2: the short last block shifted back
    (1, 2, 7, 20, (2, 2), (2, 2)),         # ... with an odd last row
]

# PyTorch's pooling options: (N, C, H, W, kernel, stride, padding (ph, pw), ceil_mode)
POOL_PAD_CASES = [
    (2, 3, 7, 5, (3, 3), (2, 2), (1, 1), False),
    (1, 3, 7, 5, (3, 3), (2, 2), (1, 1), True),     # ceil adds nothing here
    (3, 2, 7, 9, (2, 2), (2, 2), (0, 0), True),     # 2x2/2 on odd sizes: a half last window
    (2, 2, 5, 5, (2, 2), (2, 2), (1, 1), True),     # ceil's extra window would start in padding
    (2, 3, 7, 6, (3, 2), (2, 1), (1, 1), True),
    (1, 2, 6, 8, (3, 2), (1, 2), (1, 0), False),
    (2, 4, 8, 7, (3, 3), (3, 3), (1, 1), True),     # stride == kernel, padded
    (1, 1, 3, 3, (4, 4), (2, 2), (0, 0), True),     # window larger than the input
    (1, 2, 5, 5, (2, 2), (2, 2), (1, 1), False),
]


def pool_args(case):
    """x's shape and the op arguments (kernel, stride, padding, output_size), as a layer
    resolves them."""
    n, c, h, w, kernel, stride, (ph, pw), ceil = case
    out = tuple(pool_output_size(size, k, s, p, p, ceil)
                for size, k, s, p in zip((h, w), kernel, stride, (ph, pw)))
    return (n, c, h, w), (kernel, stride, (ph, ph, pw, pw), out)


GLOBAL_POOL_SHAPES = [(1, 1, 1, 1), (1, 3, 7, 5), (5, 4, 8, 8), (2, 17, 3, 6), (3, 5, 7, 4),
                      (2, 64, 8, 8)]
# (N, in, out)
DENSE_CASES = [(1, 7, 3), (5, 33, 10), (64, 130, 17), (1, 13, 7), (5, 13, 7), (37, 300, 70),
               (6, 1100, 9), (1, 1, 1), (5, 3, 10), (7, 37, 13), (64, 300, 70), (33, 65, 129),
               (600, 50, 6), (3, 40, 530)]      # the backward's k (images, outputs) past KC
ACTIVATION_SHAPES = [(3, 2, 5, 7), (3, 4, 5, 7), (5, 3, 7, 9)]
# (N, classes, how the logits are made hard: "big" one 80, "shift" row 0 + 200, "tie" row 1)
LOSS_CASES = [(1, 10, "big"), (7, 3, "big"), (64, 10, "big"), (1, 10, "shift"),
              (5, 10, "shift"), (64, 10, "shift"), (1, 10, "plain"), (5, 3, "tie"),
              (200, 10, "tie"), (67, 17, "tie")]
# (p, seed)
DROPOUT_CASES = [(0.3, 12345), (0.5, 0), (0.25, 12345), (0.9, 2 ** 33 + 7), (0.0, 7),
                 (0.9, 2 ** 40 + 3)]
BATCHNORM_SHAPES = [(1, 3, 4, 5), (5, 2, 3, 3), (8, 16, 7, 7), (5, 3, 9, 7), (1, 4, 6, 5),
                    (5, 3, 7, 9), (1, 1, 4, 5), (2, 6, 1, 1),
                    (3, 2, 8, 8),                  # OpenCL CPU kernels: whole 16-float vectors
                    (9, 130, 1, 1), (40, 64, 1, 1)]   # a dense layer's outputs: channel blocks
# (momentum, nesterov, weight decay)
SGD_CASES = [(0.0, False, 0.0), (0.9, False, 1e-2), (0.9, True, 0.0), (0.0, False, 1e-2),
             (0.9, False, 0.0), (0.9, True, 1e-3), (0.9, True, 1e-2), (0.5, False, 5e-3)]
# (lr, weight decay, decoupled)
ADAM_CASES = [(1e-3, 0.0, False), (1e-3, 1e-2, False), (1e-3, 1e-2, True), (1e-2, 0.0, False),
              (1e-2, 1e-2, False), (1e-2, 1e-2, True)]
# (momentum, weight decay)
RMSPROP_CASES = [(0.0, 0.0), (0.9, 1e-2)]
