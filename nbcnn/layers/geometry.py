"""Turning user-facing sizes (3, (3, 5), "same", "valid") into the backends' plain tuples."""

from __future__ import annotations

import math

from ..backends.geometry import conv_output_size


def pair(value, what: str) -> tuple[int, int]:
    """An int or a pair of ints as (height, width), each >= 1."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{what} must be an int or a pair of ints, got {value!r}")
    if min(value) < 1:
        raise ValueError(f"{what} must be >= 1, got {value!r}")
    return int(value[0]), int(value[1])


def resolve_padding(padding, size, kernel, stride, dilation=(1, 1)) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding.

    ``"valid"`` is no padding. ``"same"`` gives ceil(size / stride) outputs, splitting the padding
    evenly and putting an odd extra row/column at the bottom/right (TensorFlow's and PyTorch's
    rule); a dilated kernel counts with its span (k-1)*d + 1. An int pads all sides; (ph, pw)
    pads top/bottom by ph and left/right by pw; (top, bottom, left, right) pads each side.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            pads = []
            for n, k, s, d in zip(size, kernel, stride, dilation):
                total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        raise ValueError(f"padding must be an int, a pair, a 4-tuple, 'same' or 'valid', "
                         f"got {padding!r}")
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = (padding, padding)
    if (not isinstance(padding, (tuple, list)) or len(padding) not in (2, 4)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in padding)):
        raise TypeError(f"padding must be an int, a pair, a 4-tuple (top, bottom, left, right), "
                        f"'same' or 'valid', got {padding!r}")
    if min(padding) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    if len(padding) == 2:
        ph, pw = padding
        return (ph, ph, pw, pw)
    return tuple(int(v) for v in padding)


def windowed_output(what, size, kernel, stride, padding=(0, 0, 0, 0)) -> tuple[int, int]:
    """Output (height, width) of a sliding window; ValueError when the window does not fit."""
    top, bottom, left, right = padding
    padded = (size[0] + top + bottom, size[1] + left + right)
    if padded[0] < kernel[0] or padded[1] < kernel[1]:
        raise ValueError(f"{what}: kernel {kernel[0]}x{kernel[1]} is larger than the padded "
                         f"input {padded[0]}x{padded[1]} (input {size[0]}x{size[1]})")
    return (conv_output_size(size[0], kernel[0], stride[0], top, bottom),
            conv_output_size(size[1], kernel[1], stride[1], left, right))


def expect_rank(what: str, input_shape, rank: int, layout: str) -> None:
    """ValueError unless one example has ``rank`` axes (layout names them, e.g. 'C, H, W')."""
    if len(input_shape) != rank:
        hint = " (add Flatten first)" if rank == 1 else ""
        raise ValueError(f"{what}: expected input of shape (N, {layout}){hint}, "
                         f"got per-example shape {tuple(input_shape)}")
