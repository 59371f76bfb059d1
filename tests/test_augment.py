"""Augmentation: the shift/flip op on every backend against a pad-and-crop reference, the
string form, and the same augmented batches from the same seed on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import nbcnn
from conftest import backend_or_skip, randn
from nbcnn import data, optim
from nbcnn.data.augment import Augment, epoch_generator, make_augment


def pad_crop_reference(x, dy, dx, flip):
    """The definition, one image at a time: mirror, zero-pad by the largest shift, and cut the
    window whose corner is (pad + dy, pad + dx)."""
    n, c, h, w = x.shape
    p = int(max(np.abs(dy).max(), np.abs(dx).max(), 0))
    out = np.empty_like(x)
    for k in range(n):
        img = x[k, :, :, ::-1] if flip[k] else x[k]
        padded = np.pad(img, ((0, 0), (p, p), (p, p)))
        out[k] = padded[:, p + dy[k]:p + dy[k] + h, p + dx[k]:p + dx[k] + w]
    return out


# (N, C, H, W) and per-image (dy, dx, flip): centre, borders, past the edge, non-square
CASES = [
    ((1, 1, 5, 5), [(0, 0, 0)]),
    ((1, 1, 5, 5), [(0, 0, 1)]),
    ((4, 3, 6, 9), [(-2, 2, 0), (2, -2, 1), (-2, -2, 1), (2, 2, 0)]),
    ((3, 2, 7, 4), [(6, 0, 0), (0, -4, 1), (-7, 3, 1)]),       # shifted (almost) all out
    ((5, 3, 8, 8), [(1, 0, 1), (0, 1, 0), (-1, 3, 1), (4, -4, 0), (0, 0, 1)]),
]


def _draws(case):
    shape, rows = case
    dy, dx, flip = (np.array(col, dtype=np.int32) for col in zip(*rows))
    return shape, dy, dx, flip


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_reference_matches_pad_and_crop(ref, rng, case):
    shape, dy, dx, flip = _draws(case)
    x = randn(rng, *shape)
    np.testing.assert_array_equal(ref.augment(x, dy, dx, flip), pad_crop_reference(x, dy, dx, flip))


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_fast_backends_match_reference_exactly(fast, ref, rng, case):
    shape, dy, dx, flip = _draws(case)
    x = randn(rng, *shape)
    got = fast.to_numpy(fast.augment(fast.from_numpy(x), dy, dx, flip))
    np.testing.assert_array_equal(got, ref.augment(x, dy, dx, flip))


def test_reference_matches_torch_pad_crop_flip(ref, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    shape, dy, dx, flip = _draws(CASES[4])
    x = randn(rng, *shape)
    p = 4
    want = []
    for k in range(shape[0]):
        img = torch.from_numpy(x[k:k + 1])
        if flip[k]:
            img = torch.flip(img, dims=[3])
        img = F.pad(img, (p, p, p, p))                      # zero padding, then the crop
        want.append(img[:, :, p + dy[k]:p + dy[k] + shape[2], p + dx[k]:p + dx[k] + shape[3]])
    np.testing.assert_array_equal(ref.augment(x, dy, dx, flip), torch.cat(want).numpy())


def test_zero_shift_no_flip_is_identity_and_flip_mirrors(fast, rng):
    x = randn(rng, 3, 2, 5, 7)
    zero = np.zeros(3, np.int32)
    same = fast.to_numpy(fast.augment(fast.from_numpy(x), zero, zero, zero))
    np.testing.assert_array_equal(same, x)
    mirrored = fast.to_numpy(fast.augment(fast.from_numpy(x), zero, zero, np.ones(3, np.int32)))
    np.testing.assert_array_equal(mirrored, x[..., ::-1])


def test_bad_draws_are_refused(fast, rng):
    x = fast.from_numpy(randn(rng, 2, 1, 4, 4))
    with pytest.raises(ValueError, match="one value per image"):
        fast.augment(x, np.zeros(3, np.int32), np.zeros(2, np.int32), np.zeros(2, np.int32))


# ---- the settings ----------------------------------------------------------------------------
def test_parse_and_spec_round_trip():
    assert Augment.parse("crop:4,flip") == Augment(crop=4, flip=True)
    assert Augment.parse(" Translate:2 ") == Augment(translate=2)
    assert Augment.parse("flip,crop:2,translate:1").spec() == "crop:2,flip,translate:1"
    assert make_augment("none") is None and make_augment(None) is None
    assert make_augment(Augment()) is None
    assert make_augment(Augment(flip=True)) == Augment(flip=True)


@pytest.mark.parametrize("text,word", [("crop", "whole number"), ("crop:x", "whole number"),
                                       ("translate:-1", "whole number"),
                                       ("rotate:3", "unknown part"), ("flip:1", "no argument"),
                                       ("crop:2,crop:3", "twice")])
def test_parse_errors_name_the_part(text, word):
    with pytest.raises(ValueError, match=word):
        Augment.parse(text)


def test_bad_values_and_types():
    with pytest.raises(ValueError, match="crop"):
        Augment(crop=-1)
    with pytest.raises(TypeError, match="augment must be"):
        make_augment(4)


def test_draws_stay_in_range_and_depend_on_seed_and_epoch():
    aug = Augment(crop=3, flip=True, translate=1)
    (dy, dx, flip), (ty, tx, tflip) = aug.draw(epoch_generator(5, 0), 4000)
    assert dy.min() == -3 and dy.max() == 3 and dx.min() == -3 and dx.max() == 3
    assert ty.min() == -1 and ty.max() == 1 and not tflip.any()
    assert 0.45 < flip.mean() < 0.55
    again = aug.draw(epoch_generator(5, 0), 4000)
    np.testing.assert_array_equal(again[0][0], dy)
    assert not np.array_equal(aug.draw(epoch_generator(5, 1), 4000)[0][0], dy)
    assert not np.array_equal(aug.draw(epoch_generator(6, 0), 4000)[0][0], dy)


# ---- in fit ----------------------------------------------------------------------------------
def _augmented_batches(backend_name, train):
    """Every batch the augmentation op returned during two epochs of fit, as numpy."""
    model = nbcnn.build("conv(2,3)-relu-flatten-dense(2)", input_shape=train.input_shape,
                        backend=backend_or_skip(backend_name), seed=7)
    seen, op = [], model.backend.augment

    def recording(x, dy, dx, flip):
        y = op(x, dy, dx, flip)
        seen.append(model.backend.to_numpy(y).copy())
        return y

    model.backend.augment = recording
    try:
        model.fit(train, epochs=2, batch_size=16, optimizer=optim.SGD(lr=0.01),
                  augment="crop:2,flip", validation=train[:8], verbose=False)
    finally:
        del model.backend.augment
    return seen


@pytest.fixture(scope="module")
def small_shapes():
    return data.load("shapes", split="train", n=40, size=8, classes=["cross", "circle"], seed=0)


def test_same_seed_same_augmented_batches_on_every_backend(small_shapes):
    want = _augmented_batches("numpy", small_shapes)
    assert len(want) == 2 * 3                    # 40 images, batches of 16: 3 a epoch, no val
    for name in ("numba", "opencl"):
        got = _augmented_batches(name, small_shapes)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
