"""The Dataset: images x float32 (N, C, H, W) and labels y int64 (N,), with the usual chores."""

from __future__ import annotations

import numbers

import numpy as np

_CHUNK = 4096  # images per block for the statistics, to keep temporaries small


def _quota(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` across classes in proportion to ``counts`` (largest remainder), exactly."""
    n = counts.sum()
    exact = counts * (total / n) if n else counts * 0.0
    base = np.minimum(np.floor(exact).astype(np.int64), counts)
    left = total - int(base.sum())
    if left > 0:
        # the classes with the largest fractional parts (and room left) get one more
        order = np.lexsort((np.arange(len(counts)), -(exact - base)))
        for c in order:
            if left == 0:
                break
            if base[c] < counts[c]:
                base[c] += 1
                left -= 1
    return base


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class Dataset:
    """Images and labels of one split of a data set.

    ``Dataset(x, y, classes=None, name="custom", split="train")`` checks what it is given:
    x 4-D (N, C, H, W) real numbers, converted to float32, all finite; y 1-D integers (N,),
    each in ``0 .. len(classes) - 1``. ``classes`` defaults to ``"0" .. str(max(y))``.
    Arrays are kept, not copied, where they already have the right dtype. The split's name is
    ``split_name`` ("train", "test", "val"): ``split(fraction, seed)`` is the method that carves a
    validation set.
    """

    def __init__(self, x, y, classes=None, name="custom", split="train"):
        x = _check_x(x)
        y = _check_y(y, len(x))
        if classes is None:
            classes = [str(i) for i in range(int(y.max()) + 1 if y.size else 0)]
        else:
            if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
                raise TypeError(f"classes must be a list of names, got {type(classes).__name__}")
            classes = [str(c) for c in classes]
            if y.size and y.max() >= len(classes):
                bad = int(np.argmax(y >= len(classes)))
                raise ValueError(f"label y[{bad}] = {y[bad]} is out of range for "
                                 f"{len(classes)} classes (expected 0..{len(classes) - 1})")
        self.x, self.y, self.classes = x, y, classes
        self.name, self.split_name = str(name), str(split)

    @classmethod
    def _trusted(cls, x, y, classes, name, split):
        """Build without checks, for arrays already known good (loaders, slicing)."""
        self = object.__new__(cls)
        self.x, self.y, self.classes, self.name, self.split_name = x, y, list(classes), name, split
        return self

    def _like(self, x, y, split=None):
        return Dataset._trusted(x, y, self.classes, self.name, self.split_name if split is None else split)

    # --- shape and size -----------------------------------------------------------------------
    def __len__(self):
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])

    def __repr__(self):
        return (f"Dataset(name={self.name!r}, split={self.split_name!r}, n={len(self)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes})")

    def counts(self) -> np.ndarray:
        """How many examples of each class, (num_classes,) int64."""
        return np.bincount(self.y, minlength=self.num_classes)

    # --- selection ----------------------------------------------------------------------------
    def __getitem__(self, index):
        """A Dataset: ``ds[10:20]``, ``ds[idx_array]``, ``ds[bool_mask]``; ``ds[i]`` has length 1."""
        if isinstance(index, numbers.Integral) and not isinstance(index, bool):
            n = len(self)
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for a Dataset of {n} examples")
            index = slice(i % n, i % n + 1)
        elif isinstance(index, tuple):
            raise TypeError("a Dataset takes one index (a slice, an int, an index array or a "
                            "boolean mask); use ds.x[...] for pixel access")
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool:
                if index.shape != (len(self),):
                    raise IndexError(f"boolean mask of shape {index.shape} does not match "
                                     f"{len(self)} examples")
            elif not np.issubdtype(index.dtype, np.integer) and index.size:
                raise TypeError(f"index arrays must be integers or booleans, got {index.dtype}")
            else:
                index = index.astype(np.intp, copy=False)
        return self._like(self.x[index], self.y[index])

    def subset(self, n: int, seed=0, stratify: bool = True) -> "Dataset":
        """``n`` examples drawn without replacement (class proportions kept when ``stratify``)."""
        n = _check_count(n, len(self), "subset size n")
        idx = self._draw(n, seed, stratify)
        return self[np.sort(idx)]

    def split(self, fraction: float = 0.1, seed=0, stratify: bool = True):
        """``(train_part, val_part)``: a validation set of ``round(fraction * N)`` examples, the
        rest for training; disjoint, seeded, class proportions kept when ``stratify``."""
        if not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
            raise ValueError(f"fraction must be a number strictly between 0 and 1, got {fraction!r}")
        n_val = int(round(fraction * len(self)))
        if not 0 < n_val < len(self):
            raise ValueError(f"fraction {fraction} of {len(self)} examples leaves an empty part")
        val = np.zeros(len(self), dtype=bool)
        val[self._draw(n_val, seed, stratify)] = True
        return self._like(self.x[~val], self.y[~val]), self._like(self.x[val], self.y[val], "val")

    def _draw(self, n, seed, stratify):
        rng = _rng(seed)
        if not stratify:
            return rng.permutation(len(self))[:n]
        counts = self.counts()
        take = _quota(counts, n)
        order = np.argsort(self.y, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        parts = [rng.permutation(order[s:s + c])[:k] for s, c, k in zip(starts, counts, take)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # --- statistics and normalisation ---------------------------------------------------------
    def mean(self) -> np.ndarray:
        """Per-channel mean over all images and pixels, (C,) float32 (accumulated in float64)."""
        if len(self) == 0:
            raise ValueError("mean of an empty Dataset")
        total = np.zeros(self.x.shape[1], np.float64)
        for s in range(0, len(self), _CHUNK):
            total += self.x[s:s + _CHUNK].sum(axis=(0, 2, 3), dtype=np.float64)
        return (total / (self.x.size / self.x.shape[1])).astype(np.float32)

    def std(self) -> np.ndarray:
        """Per-channel population standard deviation, (C,) float32 (two passes, float64)."""
        m = self.mean().astype(np.float64)[None, :, None, None]
        total = np.zeros(self.x.shape[1], np.float64)
        for s in range(0, len(self), _CHUNK):
            d = self.x[s:s + _CHUNK] - m
            total += np.einsum("nchw,nchw->c", d, d)
        return np.sqrt(total / (self.x.size / self.x.shape[1])).astype(np.float32)

    def normalize(self, mean=None, std=None) -> "Dataset":
        """A new Dataset with ``(x - mean) / std`` per channel. Defaults to this set's own
        statistics; pass the training set's to normalise a test set the same way."""
        c = self.x.shape[1]
        mean = self.mean() if mean is None else mean
        std = self.std() if std is None else std
        out = []
        for label, v in (("mean", mean), ("std", std)):
            v = np.asarray(v, dtype=np.float32).reshape(-1)
            if v.size == 1:
                v = np.repeat(v, c)
            if v.shape != (c,):
                raise ValueError(f"{label} must have one value per channel: expected {c}, got "
                                 f"{v.size}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{label} must be finite, got {v}")
            out.append(v)
        mean, std = out
        if np.any(std <= 0):
            raise ValueError(f"std must be positive in every channel, got {std}")
        x = np.empty_like(self.x)
        for s in range(0, len(self), _CHUNK):
            np.subtract(self.x[s:s + _CHUNK], mean[None, :, None, None], out=x[s:s + _CHUNK])
            x[s:s + _CHUNK] /= std[None, :, None, None]
        return self._like(x, self.y)

    # --- iteration ----------------------------------------------------------------------------
    def batches(self, batch_size: int, shuffle: bool = True, seed=0, drop_last: bool = False):
        """Yield ``(x, y)`` mini-batches covering every example once. The order is fixed by
        ``seed`` (an int or a numpy Generator); pass e.g. ``seed=epoch`` for a new order each
        epoch. Without ``shuffle`` the batches are views in order."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        n = len(self)
        stop = n - n % batch_size if drop_last else n
        if not shuffle:
            for s in range(0, stop, batch_size):
                yield self.x[s:s + batch_size], self.y[s:s + batch_size]
            return
        order = _rng(seed).permutation(n)
        for s in range(0, stop, batch_size):
            idx = np.sort(order[s:s + batch_size])  # sorted: faster gathers, same batch contents
            yield self.x[idx], self.y[idx]

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)


def _check_count(n, limit, what):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {type(n).__name__}")
    if not 0 < n <= limit:
        raise ValueError(f"{what} must be between 1 and {limit}, got {n}")
    return int(n)


def _check_x(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) \
            or np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"x must hold real numbers (expected float32), got dtype {a.dtype}")
    if a.ndim != 4:
        hint = " (add a channel axis: x[:, None])" if a.ndim == 3 else ""
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {a.shape}{hint}")
    a = a.astype(np.float32, copy=False)
    for s in range(0, len(a), _CHUNK):
        block = a[s:s + _CHUNK]
        if not np.isfinite(block).all():
            bad = s + int(np.argmax(~np.isfinite(block).reshape(len(block), -1).all(axis=1)))
            raise ValueError(f"x must be finite: image {bad} holds NaN or infinity")
    return a


def _check_y(y, n) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"y must be 1-D (N,), got shape {a.shape}")
    if len(a) != n:
        raise ValueError(f"y has {len(a)} labels but x has {n} images")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number) \
            or np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"y must hold integer class labels (expected int64), got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.integer):
        if not (np.isfinite(a).all() and np.all(a == np.round(a))):
            raise TypeError(f"y must hold integer class labels, got non-integer {a.dtype} values")
    if a.size and a.min() < 0:
        bad = int(np.argmax(a < 0))
        raise ValueError(f"labels must be >= 0, got y[{bad}] = {a[bad]}")
    if a.size and a.max() >= 2**63:            # uint64 or float labels past int64 would wrap
        bad = int(np.argmax(a >= 2**63))
        raise ValueError(f"label y[{bad}] = {a[bad]} does not fit in int64")
    return a.astype(np.int64, copy=False)
