"""Checks of what users hand to ``Sequential`` (counts, data sets, images), with messages that say
what was given and what was expected. Kept apart from ``model.py`` so every entry point
(``fit``, ``evaluate``, ``predict``) asks the same questions in the same words."""

from __future__ import annotations

import numbers
import sys
import warnings

import numpy as np

#: images are expected in [0, 1]; values beyond this magnitude are taken as unscaled
#: (e.g. uint8 pixels 0..255), far from what the initial weights and learning rates assume
UNSCALED_ABOVE = 10.0


class InputRangeWarning(UserWarning):
    """Images far outside [0, 1]: training will likely be slow or diverge."""


def count(value, what: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``: any integer type (int, np.int64, ...), not bool nor
    float. Raises ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{what} must be {need}, got {type(value).__name__} {value!r}")
    return int(value)


def not_empty(n: int, what: str, call: str) -> None:
    """Refuse a data set of no examples (``call``: the method, e.g. 'fit')."""
    if n == 0:
        raise ValueError(f"{call}: {what} is empty (0 examples); nothing to "
                         f"{'train on' if call == 'fit' else 'evaluate'}")


def warn_if_unscaled(x: np.ndarray, what: str) -> None:
    """Warn when images are far outside [0, 1] (integer pixels, or floats that were not
    scaled): nbcnn's initial weights and default learning rates assume [0, 1]."""
    if x.size == 0:
        return
    big = float(np.abs(x).max())
    if big > UNSCALED_ABOVE or (np.issubdtype(x.dtype, np.integer) and big > 1):
        warnings.warn(f"{what}: values up to {big:g} ({x.dtype}); images are expected in [0, 1] "
                      "(divide uint8 pixels by 255)", InputRangeWarning,
                      stacklevel=_first_caller_outside_nbcnn())


def _first_caller_outside_nbcnn() -> int:
    """The ``stacklevel`` of the innermost caller that is not nbcnn's own code (so a warning
    points at the user's line, however deep inside fit or predict it was raised)."""
    level, frame = 1, sys._getframe(1)      # level 1: the function that calls warnings.warn
    while frame is not None and frame.f_globals.get("__name__", "").startswith("nbcnn"):
        frame, level = frame.f_back, level + 1
    return level


def check_layout(shape: tuple, what: str) -> None:
    """Refuse a channels-last batch (N, H, W, C) given to a model that takes its input shape from
    the data: the last axis is 1 or 3 and the second is not. A true (N, C, H, W) batch of that
    form can still be used by building the model with ``input_shape`` first."""
    if len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3):
        raise ValueError(f"{what} has shape {tuple(shape)}: this looks like channels last "
                         f"(N, H, W, C); nbcnn expects (N, C, H, W), e.g. x.transpose(0, 3, 1, 2) "
                         f"gives {(shape[0], shape[3], shape[1], shape[2])}. If it really is "
                         f"(N, C, H, W), build the model with input_shape={tuple(shape[1:])}")


#: a training step keeps about this many float arrays the size of the activations alive at once
#: (each layer's output for the backward pass, the gradient flowing back, and scratch such as
#: padded copies and im2col buffers); inference about this many. Calibrated on mnist-complex at
#: batch 256: the numpy backend's measured peak (tracemalloc) is within a few % of the estimate,
#: the Numba backend's about half of it
TRAINING_COPIES, INFERENCE_COPIES = 3, 2
#: the share of the available memory a step may plan to use
MEMORY_SHARE = 0.8


def step_bytes(model, batch_size: int, training: bool) -> int:
    """A rough estimate of the memory one step at ``batch_size`` takes: the activations of every
    layer (``TRAINING_COPIES`` or ``INFERENCE_COPIES`` of them, float32) plus the parameters
    with their gradients and two optimizer buffers."""
    shape, per_example = model.input_shape, int(np.prod(model.input_shape))
    for layer in model.layers:
        shape = layer.output_shape(shape)
        per_example += int(np.prod(shape))
    copies = TRAINING_COPIES if training else INFERENCE_COPIES
    return 4 * (batch_size * per_example * copies + model.count_params() * (4 if training else 1))


def check_memory(model, batch_size: int, n: int, training: bool, call: str) -> None:
    """Refuse a batch size whose step (on ``min(batch_size, n)`` examples) would not fit in the
    backend's memory, saying which does (instead of allocating until the machine swaps or the
    process is killed)."""
    free = model.backend.memory_available()
    if not free:
        return
    budget = MEMORY_SHARE * free
    step = min(batch_size, n)
    need = step_bytes(model, step, training)
    if need <= budget:
        return
    one = step_bytes(model, 1, training) - step_bytes(model, 0, training)
    fits = int((budget - step_bytes(model, 0, training)) // one)
    gib = 2 ** 30
    advice = (f"batch_size {fits} or less fits" if fits >= 1 else
              "not even batch_size 1 fits")
    examples = f" ({step} examples)" if step < batch_size else ""
    raise MemoryError(f"{call}: {'a training' if training else 'an inference'} step at batch_size "
                      f"{batch_size}{examples} needs about {need / gib:.1f} GiB, more than the "
                      f"{budget / gib:.1f} GiB ({MEMORY_SHARE:.0%} of {free / gib:.1f} GiB) "
                      f"available on {model.backend.name}; {advice}")
