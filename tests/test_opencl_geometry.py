"""ConvGeometry, the one description of a convolution the OpenCL host code and its tuner use
(no OpenCL device needed): output sizes as numpy_ref computes them, the input gradient's
transposed geometry, clear errors, and that it cannot be changed once made."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nbcnn.backends.geometry import ConvGeometry
from nbcnn.backends.numpy_ref import NumpyBackend

REF = NumpyBackend()

CASES = [
    # (x shape, w shape, stride, padding, dilation, groups)
    ((1, 1, 7, 9), (1, 1, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((2, 3, 9, 7), (10, 3, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    ((1, 3, 6, 10), (3, 3, 3, 5), (1, 2), (0, 1, 2, 0), (1, 1), 1),
    ((2, 4, 11, 8), (6, 2, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 2),
    ((1, 4, 8, 8), (4, 1, 3, 3), (2, 1), (1, 0, 1, 1), (1, 1), 4),
]


@pytest.mark.parametrize("case", CASES)
def test_output_shape_matches_numpy_ref(case):
    x_shape, w_shape, stride, padding, dilation, groups = case
    g = ConvGeometry.of(x_shape, w_shape, stride, padding, dilation, groups)
    x = np.zeros(x_shape, np.float32)
    w = np.zeros(w_shape, np.float32)
    y = REF.conv2d_forward(x, w, None, stride, padding, dilation, groups)
    assert g.y_shape == y.shape and g.x_shape == x_shape
    assert g.plain == (groups == 1 and dilation == (1, 1))


@pytest.mark.parametrize("case", CASES)
def test_transposed_is_the_input_gradient_as_a_forward(case):
    """At stride 1 the transposed geometry maps dy's shape back onto x's (and swaps the
    channels); elsewhere there is none."""
    x_shape, w_shape, stride, padding, dilation, groups = case
    g = ConvGeometry.of(x_shape, w_shape, stride, padding, dilation, groups)
    t = g.transposed()
    if stride != (1, 1) or t is None:
        assert stride != (1, 1) or max(padding) > (max(w_shape[2:]) - 1) * max(dilation)
        return
    assert t.x_shape == g.y_shape and t.y_shape == g.x_shape
    assert t.groups == g.groups and t.multiply_adds * g.oh * g.ow == g.multiply_adds * g.h * g.w


def test_errors_name_the_sizes_and_geometry_is_frozen():
    with pytest.raises(ValueError, match="input has 3 channels but the weight expects 2"):
        ConvGeometry.of((1, 3, 5, 5), (4, 2, 3, 3), (1, 1), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="groups=2"):
        ConvGeometry.of((1, 4, 5, 5), (3, 2, 3, 3), (1, 1), (0, 0, 0, 0), groups=2)
    with pytest.raises(ValueError, match="kernel 7x7 does not fit input 5x5"):
        ConvGeometry.of((1, 1, 5, 5), (1, 1, 7, 7), (1, 1), (0, 0, 0, 0))
    g = ConvGeometry.of((1, 1, 5, 5), (1, 1, 3, 3), (1, 1), (1, 1, 1, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.h = 6
    assert g.key() == "1,1,5,5,1,3,3,1,1,1"
