"""Degenerate data and settings get clear errors (or a warning), never a crash deep inside or a
silent wrong number."""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest

import nbcnn
from nbcnn.harness import GridError, parse_grid
from nbcnn.validation import InputRangeWarning

ARCH = "conv(2,3)-relu-flatten-dense(3)"


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 6, 6), dtype=np.float32), rng.integers(0, 3, n)


def model():
    return nbcnn.build(ARCH, input_shape=(1, 6, 6), backend="numpy", seed=0)


def test_fit_and_evaluate_refuse_an_empty_data_set():
    x, y = data()
    with pytest.raises(ValueError, match=r"fit: data is empty \(0 examples\)"):
        model().fit((x[:0], y[:0]), verbose=False)
    with pytest.raises(ValueError, match=r"fit: validation is empty"):
        model().fit((x, y), validation=(x[:0], y[:0]), verbose=False)
    with pytest.raises(ValueError, match=r"evaluate: data is empty"):
        model().evaluate((x[:0], y[:0]))
    unbuilt = nbcnn.build(ARCH, input_shape=None, backend="numpy")
    with pytest.raises(ValueError, match="empty"):              # not a shape error
        unbuilt.fit((np.zeros((0, 1, 6, 6), np.float32), np.zeros(0, int)), verbose=False)


@pytest.mark.parametrize("call,bad", [("evaluate", -1), ("evaluate", 0), ("predict", 0),
                                      ("predict", -3), ("predict", 2.0), ("fit", 0),
                                      ("fit", True)])
def test_bad_batch_sizes_are_refused_by_name(call, bad):
    x, y = data()
    m = model()
    run = {"evaluate": lambda: m.evaluate((x, y), batch_size=bad),
           "predict": lambda: m.predict(x, batch_size=bad),
           "fit": lambda: m.fit((x, y), batch_size=bad, verbose=False)}[call]
    with pytest.raises(ValueError, match=rf"{call}: batch_size must be a positive integer, "
                                         rf"got \w+ {bad!r}"):
        run()


def test_numpy_integers_are_counts():
    x, y = data()
    m = model()
    history = m.fit((x, y), epochs=np.int64(2), batch_size=np.int64(5), verbose=False)
    assert len(history) == 2
    assert m.predict(x, batch_size=np.int32(4)).shape == (12, 3)
    assert 0 <= m.evaluate((x, y), batch_size=np.uint8(5))["accuracy"] <= 1
    with pytest.raises(ValueError, match=r"fit: epochs must be an integer >= 0, got int -1"):
        m.fit((x, y), epochs=-1, verbose=False)


def test_unscaled_images_warn_that_images_are_expected_in_0_1():
    x, y = data()
    m = model()
    pixels = (x * 255).astype(np.uint8)
    with pytest.warns(InputRangeWarning, match=r"values up to 2\d\d \(uint8\); images are "
                                               r"expected in \[0, 1\]"):
        m.fit((pixels, y), verbose=False)
    with pytest.warns(InputRangeWarning, match=r"float32") as caught:
        m.predict(x * 255)
    assert caught[0].filename == __file__                  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.fit((x, y), verbose=False)                           # [0, 1]: no warning
        m.predict((x - 0.5) * 6)                               # standardised: no warning


def test_a_channels_last_batch_given_to_an_unbuilt_model_is_called_out():
    rng = np.random.default_rng(0)
    nhwc = rng.random((16, 16, 16, 3), dtype=np.float32)
    y = rng.integers(0, 3, 16)
    unbuilt = nbcnn.build(ARCH, input_shape=None, backend="numpy")
    with pytest.raises(ValueError, match=r"\(16, 16, 16, 3\).*channels last.*"
                                         r"transpose\(0, 3, 1, 2\) gives \(16, 3, 16, 16\)"):
        unbuilt.fit((nhwc, y), verbose=False)
    assert not unbuilt.built
    unbuilt.fit((nhwc.transpose(0, 3, 1, 2), y), verbose=False)   # NCHW: fine
    assert unbuilt.input_shape == (3, 16, 16)
    # a model built for that shape takes it as (N, C, H, W), as told
    built = nbcnn.build(ARCH, input_shape=(16, 16, 3), backend="numpy")
    built.fit((nhwc, y), verbose=False)


GRID = """
name = "g"
[fixed]
arch = "mnist-tiny"
{fixed}
[grid]
{grid}
"""


def grid(fixed="", axes='seed = [0]'):
    return textwrap.dedent(GRID.format(fixed=fixed, grid=axes))


def test_a_data_option_no_cell_uses_is_refused():
    with pytest.raises(GridError, match=r"'data.n' is an option of the shapes data set, but no "
                                        r"cell uses it \(data sets here: mnist\)"):
        parse_grid(grid('dataset = "mnist"\ndata = { n = 100 }'), "g.toml")
    # crossing data sets: the option applies to the shapes cells, and is kept there
    g = parse_grid(grid("data = { n = 100 }", 'dataset = ["shapes", "mnist"]'), "g.toml")
    assert [c.settings.get("data.n") for c in g.cells] == [100, None]
