"""The Dataset API (validation, indexing, subset, split, statistics, batches) and the generated
``shapes`` set (seeded, balanced, options, not linearly trivial)."""

from __future__ import annotations

import numpy as np
import pytest

from nbcnn import data
from nbcnn.data import Dataset


def make(n=40, c=3, h=5, w=4, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, c, h, w), dtype=np.float32)
    y = rng.permutation(np.arange(n) % k).astype(np.int64)
    return Dataset(x, y, classes=[f"c{i}" for i in range(k)], name="toy")


# --- construction and validation -------------------------------------------------------------

def test_construct_from_arrays():
    x = np.zeros((6, 1, 3, 3), np.float64)
    ds = Dataset(x, [0, 1, 2, 0, 1, 2])
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.classes == ["0", "1", "2"] and ds.num_classes == 3
    assert len(ds) == 6 and ds.input_shape == (1, 3, 3)
    assert ds.name == "custom" and ds.split_name == "train"
    x32 = np.zeros((2, 1, 2, 2), np.float32)
    y64 = np.array([0, 1])
    kept = Dataset(x32, y64)
    assert kept.x is x32 and kept.y is y64  # right dtypes: no copy
    assert "num_classes=2" in repr(kept)
    # float labels holding whole numbers are accepted
    assert Dataset(x32, np.array([1.0, 0.0])).y.dtype == np.int64
    assert Dataset(x32, [0, 1], classes=("a", "b", "c")).num_classes == 3


@pytest.mark.parametrize("x,y,kw,err,pattern", [
    (np.zeros((4, 3, 3)), [0] * 4, {}, ValueError, r"4-D .*x\[:, None\]"),
    (np.zeros((4, 1, 3, 3, 1)), [0] * 4, {}, ValueError, "4-D"),
    (np.zeros((4, 1, 3, 3)), [0] * 3, {}, ValueError, "3 labels but x has 4 images"),
    (np.zeros((4, 1, 3, 3)), [[0, 1], [0, 1]], {}, ValueError, "y must be 1-D"),
    (np.zeros((4, 1, 3, 3)), [0, 1, 2, 3], {"classes": ["a", "b"]}, ValueError,
     r"y\[2\] = 2 is out of range for 2 classes"),
    (np.zeros((4, 1, 3, 3)), [0, -1, 0, 0], {}, ValueError, r"y\[1\] = -1"),
    (np.zeros((4, 1, 3, 3)), [0, 0.5, 0, 0], {}, TypeError, "non-integer"),
    (np.zeros((4, 1, 3, 3)), [0, np.nan, 0, 0], {}, TypeError, "non-integer"),
    (np.zeros((4, 1, 3, 3)), np.array([0, 2**63, 1, 0], np.uint64), {}, ValueError,
     r"y\[1\] = 9223372036854775808 does not fit in int64"),
    (np.zeros((4, 1, 3, 3)), [0, 2.0**63, 0, 0], {}, ValueError, "does not fit in int64"),
    (np.zeros((4, 1, 3, 3)), ["a", "b", "c", "d"], {}, TypeError, "integer class labels"),
    (np.zeros((4, 1, 3, 3)), [True, False, True, False], {}, TypeError, "integer class labels"),
    (np.full((4, 1, 3, 3), "x"), [0] * 4, {}, TypeError, "real numbers"),
    (np.zeros((4, 1, 3, 3), complex), [0] * 4, {}, TypeError, "real numbers"),
    (np.zeros((4, 1, 3, 3)), [0] * 4, {"classes": "abc"}, TypeError, "list of names"),
])
def test_validation_errors(x, y, kw, err, pattern):
    with pytest.raises(err, match=pattern):
        Dataset(x, y, **kw)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_name_the_image(bad):
    x = np.zeros((5000, 1, 2, 2), np.float32)  # more than one check block
    x[4321, 0, 1, 0] = bad
    with pytest.raises(ValueError, match="image 4321 holds NaN or infinity"):
        Dataset(x, np.zeros(5000, int))


# --- indexing --------------------------------------------------------------------------------

def test_indexing():
    ds = make()
    one = ds[3]
    assert isinstance(one, Dataset) and len(one) == 1
    np.testing.assert_array_equal(one.x[0], ds.x[3])
    assert ds[-1].y[0] == ds.y[-1]
    with pytest.raises(IndexError, match="out of range"):
        ds[40]
    with pytest.raises(IndexError):
        ds[-41]
    part = ds[10:20]
    assert len(part) == 10 and part.classes == ds.classes and part.name == "toy"
    np.testing.assert_array_equal(part.y, ds.y[10:20])
    idx = np.array([5, 1, 5])
    np.testing.assert_array_equal(ds[idx].x, ds.x[idx])
    np.testing.assert_array_equal(ds[[0, 2]].y, ds.y[[0, 2]])
    mask = ds.y == 2
    assert len(ds[mask]) == 10 and (ds[mask].y == 2).all()
    assert len(ds[[]]) == 0
    with pytest.raises(IndexError, match="boolean mask"):
        ds[np.ones(3, bool)]
    with pytest.raises(TypeError, match="integers or booleans"):
        ds[np.array([0.5])]
    with pytest.raises(TypeError, match="one index"):
        ds[0, 0]


# --- subset and split ------------------------------------------------------------------------

def test_subset_seeded_and_stratified():
    ds = make(n=400, k=4)
    a, b = ds.subset(100, seed=1), ds.subset(100, seed=1)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, ds.subset(100, seed=2).x)
    assert a.counts().tolist() == [25, 25, 25, 25]
    # drawn without replacement, from the set
    rows = {r.tobytes() for r in ds.x.reshape(len(ds), -1)}
    sub_rows = [r.tobytes() for r in a.x.reshape(len(a), -1)]
    assert len(set(sub_rows)) == 100 and set(sub_rows) <= rows
    # unequal classes keep their proportions
    y = np.r_[np.zeros(300, int), np.ones(100, int)]
    skew = Dataset(np.zeros((400, 1, 1, 1), np.float32), y)
    assert skew.subset(40, seed=0).counts().tolist() == [30, 10]
    assert len(ds.subset(7, stratify=False)) == 7
    for bad, err in ((0, ValueError), (401, ValueError), (2.5, TypeError)):
        with pytest.raises(err, match="subset size"):
            ds.subset(bad)


def test_split_disjoint_sized_seeded_stratified():
    ds = make(n=200, k=4)
    ds.x[:, 0, 0, 0] = np.arange(200)  # an id per example
    train, val = ds.split(0.25, seed=3)
    assert len(train) == 150 and len(val) == 50
    ids_t, ids_v = set(train.x[:, 0, 0, 0].tolist()), set(val.x[:, 0, 0, 0].tolist())
    assert not ids_t & ids_v and len(ids_t | ids_v) == 200
    assert val.counts().tolist() == [13, 12, 13, 12] or sorted(val.counts()) == [12, 12, 13, 13]
    assert val.split_name == "val" and train.split_name == "train" and val.classes == ds.classes
    again = ds.split(0.25, seed=3)[1]
    np.testing.assert_array_equal(again.x, val.x)
    assert not np.array_equal(ds.split(0.25, seed=4)[1].x, val.x)
    assert len(ds.split(0.1, stratify=False)[1]) == 20
    for bad in (0, 1, 1.5, -0.1, "0.1"):
        with pytest.raises(ValueError, match="fraction"):
            ds.split(bad)
    with pytest.raises(ValueError, match="empty part"):
        make(n=4).split(0.01)


# --- statistics and normalisation ------------------------------------------------------------

def test_mean_std_per_channel():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5000, 3, 4, 4)) * np.array([2, 3, 4])[None, :, None, None]
         + np.array([1, -1, 0.5])[None, :, None, None]).astype(np.float32)
    ds = Dataset(x, np.zeros(5000, int))
    np.testing.assert_allclose(ds.mean(), x.mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(ds.std(), x.std(axis=(0, 2, 3), dtype=np.float64), rtol=1e-6)
    assert ds.mean().shape == (3,) and ds.mean().dtype == np.float32
    with pytest.raises(ValueError, match="empty"):
        ds[[]].mean()


def test_normalize_returns_a_new_set():
    ds = make(n=64)
    before = ds.x.copy()
    norm = ds.normalize()
    assert norm is not ds and norm.x is not ds.x
    np.testing.assert_array_equal(ds.x, before)
    np.testing.assert_allclose(norm.mean(), 0, atol=1e-5)
    np.testing.assert_allclose(norm.std(), 1, atol=1e-5)
    np.testing.assert_array_equal(norm.y, ds.y)
    other = ds.normalize(mean=[0.5, 0.5, 0.5], std=0.25)
    np.testing.assert_allclose(other.x, (before - 0.5) / 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="one value per channel"):
        ds.normalize(mean=[0.1, 0.2])
    with pytest.raises(ValueError, match="positive"):
        ds.normalize(std=[1, 0, 1])
    with pytest.raises(ValueError, match="finite"):
        ds.normalize(mean=[np.nan, 0, 0])


# --- batches ---------------------------------------------------------------------------------

def test_batches_cover_every_example_once():
    ds = make(n=50)
    ds.x[:, 0, 0, 0] = np.arange(50)
    got = list(ds.batches(16, seed=0))
    assert [len(b[1]) for b in got] == [16, 16, 16, 2] == [len(b[0]) for b in got]
    assert ds.num_batches(16) == 4
    ids = np.concatenate([b[0][:, 0, 0, 0] for b in got])
    assert sorted(ids.tolist()) == list(range(50))
    for bx, by in got:  # labels travel with their images
        np.testing.assert_array_equal(by, ds.y[bx[:, 0, 0, 0].astype(int)])
    again = np.concatenate([b[0][:, 0, 0, 0] for b in ds.batches(16, seed=0)])
    np.testing.assert_array_equal(ids, again)
    other = np.concatenate([b[0][:, 0, 0, 0] for b in ds.batches(16, seed=1)])
    assert not np.array_equal(ids, other)
    rng_seeded = np.concatenate([b[0][:, 0, 0, 0] for b in
                                 ds.batches(16, seed=np.random.default_rng(0))])
    np.testing.assert_array_equal(ids, rng_seeded)


def test_batches_drop_last_and_in_order():
    ds = make(n=50)
    dropped = list(ds.batches(16, drop_last=True))
    assert [len(y) for _, y in dropped] == [16, 16, 16] and ds.num_batches(16, drop_last=True) == 3
    ordered = list(ds.batches(20, shuffle=False))
    np.testing.assert_array_equal(np.concatenate([y for _, y in ordered]), ds.y)
    assert len(list(ds.batches(100))) == 1
    assert list(ds.batches(64, drop_last=True)) == []
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size"):
            list(ds.batches(bad))


# --- shapes ----------------------------------------------------------------------------------

def test_shapes_defaults():
    ds = data.load("shapes", "train", n=200)
    assert ds.x.shape == (200, 1, 28, 28) and ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.classes == ["circle", "cross", "square", "triangle"]
    assert ds.name == "shapes" and ds.split_name == "train"
    assert ds.x.min() >= 0 and ds.x.max() <= 1 and np.isfinite(ds.x).all()
    assert ds.counts().tolist() == [50, 50, 50, 50]
    assert len(data.load("shapes", "test")) == 500
    assert "shapes" in data.names()


def test_shapes_seeded():
    a = data.load("shapes", "train", n=40, seed=3)
    b = data.load("shapes", "train", n=40, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    c = data.load("shapes", "train", n=40, seed=4)
    assert not np.array_equal(a.x, c.x)
    t = data.load("shapes", "test", n=40, seed=3)
    assert not np.array_equal(a.x, t.x)
    # no test image is a copy of a train image
    train_rows = {r.tobytes() for r in data.load("shapes", "train", n=200).x.reshape(200, -1)}
    assert not {r.tobytes() for r in data.load("shapes", "test", n=200).x.reshape(200, -1)} \
        & train_rows


@pytest.mark.parametrize("n,k", [(10, 4), (41, 4), (9, 2)])
def test_shapes_balanced(n, k):
    classes = ["circle", "cross", "square", "triangle"][:k]
    counts = data.load("shapes", "train", n=n, classes=classes).counts()
    assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_shapes_options():
    ds = data.load("shapes", "test", n=30, size=16, channels=3, classes=["square", "circle"], seed=1)
    assert ds.x.shape == (30, 3, 16, 16) and ds.input_shape == (3, 16, 16)
    assert ds.classes == ["square", "circle"] and set(ds.y.tolist()) == {0, 1}
    assert ds.x.min() >= 0 and ds.x.max() <= 1
    # colour images are coloured, not grey copies
    assert not np.allclose(ds.x[:, 0], ds.x[:, 1])
    s = data.load("shapes", n=8, classes="triangle, cross")
    assert s.classes == ["triangle", "cross"]
    big = data.load("shapes", n=4, size=64)
    assert big.x.shape == (4, 1, 64, 64)


@pytest.mark.parametrize("opts,err,pattern", [
    ({"n": 0}, ValueError, "n must be >= 1"),
    ({"n": 2.5}, TypeError, "n must be an integer"),
    ({"n": True}, TypeError, "n must be an integer"),
    ({"size": 4}, ValueError, "size must be between 8 and 1024"),
    ({"channels": 2}, ValueError, "channels must be 1 or 3"),
    ({"channels": 4}, ValueError, "channels"),
    ({"classes": ["hexagon"]}, ValueError, "unknown shapes class"),
    ({"classes": []}, ValueError, "non-empty"),
    ({"classes": ["circle", "circle"]}, ValueError, "without repeats"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
    ({"colour": "red"}, TypeError, "unknown option.*colour.*accepted"),
])
def test_shapes_bad_options(opts, err, pattern):
    with pytest.raises(err, match=pattern):
        data.load("shapes", **opts)


def _linear_accuracy(train, test):
    """One-vs-rest least squares on raw pixels (plus a bias), fit on train, scored on test."""
    def design(ds):
        flat = ds.x.reshape(len(ds), -1).astype(np.float64)
        return np.hstack([flat, np.ones((len(ds), 1))])
    a = design(train)
    targets = np.eye(train.num_classes)[train.y] * 2 - 1
    # normal equations with a tiny ridge: the least-squares fit, fast and well posed
    w = np.linalg.solve(a.T @ a + 1e-3 * np.eye(a.shape[1]), a.T @ targets)
    return float(((design(test) @ w).argmax(axis=1) == test.y).mean())


def test_shapes_not_linearly_trivial():
    train = data.load("shapes", "train", n=3000, seed=0)
    test = data.load("shapes", "test", n=1000, seed=0)
    acc = _linear_accuracy(train, test)
    print(f"linear least squares on shapes: {acc:.3f}")
    assert acc < 0.8, f"shapes is nearly linearly separable ({acc:.1%})"
    assert acc > 0.2  # and the check itself works (better than nothing on the training data)
    assert _linear_accuracy(train, train) > acc
