"""Data sets: ``load(name, split)`` gives a ``Dataset`` with x float32 (N, C, H, W) in [0, 1] and
y int64 (N,).

Names: ``mnist``, ``fashion-mnist``, ``cifar10`` (read from their standard published files) and
``shapes`` (generated, needs no file). Files are searched for in ``root=``, ``$NBCNN_DATA``, the
user cache (``~/.cache/nbcnn``) and system folders, then downloaded into the user cache unless
``download=False`` or ``NBCNN_NO_DOWNLOAD=1``. See ``nbcnn.data.locate`` for the details.
"""

from __future__ import annotations

import numpy as np

from . import cifar, idx, shapes
from .augment import Augment
from .dataset import Dataset
from .download import fetch, no_download_env
from .errors import ChecksumError, DataFormatError, DatasetNotFoundError, DownloadError
from .locate import cache_dir, locate, not_found
from .sources import FILE_SETS, NAMES, canonical_name, check_split

__all__ = [
    "Augment", "Dataset", "load", "names", "find", "fetch_set", "cache_dir",
    "DataFormatError", "ChecksumError", "DatasetNotFoundError", "DownloadError",
]


def names() -> list:
    """The names ``load`` knows."""
    return list(NAMES)


def _scale(u8: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], exactly k / 255 (correctly rounded)."""
    out = np.empty(u8.shape, np.float32)
    np.divide(u8, np.float32(255), out=out, dtype=np.float32)
    return out


def find(name: str, split: str = "train", root=None):
    """Where ``split`` of a file-backed set is (a ``locate.Location``), or None."""
    name = canonical_name(name)
    if name not in FILE_SETS:
        raise ValueError(f"{name!r} is generated, it has no files")
    return locate(FILE_SETS[name], check_split(split), root)


def fetch_set(name: str, root=None, progress: bool = True) -> list:
    """Download a file-backed set's missing files (into ``root``/<set> or the user cache)."""
    name = canonical_name(name)
    if name not in FILE_SETS:
        raise ValueError(f"{name!r} is generated, it has nothing to download")
    return fetch(FILE_SETS[name], root, progress)


def _read(spec, loc):
    if loc.kind == "idx":
        images, labels = idx.read_idx_pair(*loc.paths, num_classes=len(spec.classes))
        images = images[:, None]
    elif loc.kind == "cifar-dir":
        images, labels = cifar.read_folder(loc.paths[0], [m.name for m in spec.members[loc.split]])
    else:
        images, labels = cifar.read_tarball(loc.paths[0], [m.name for m in spec.members[loc.split]])
    return _scale(images), labels.astype(np.int64)


def load(name: str, split: str = "train", root=None, download=None, **options) -> Dataset:
    """Load one split (``"train"`` or ``"test"``) of a data set.

    ``root``: a data folder searched first (and where a download goes). ``download``: None means
    allowed unless ``NBCNN_NO_DOWNLOAD=1``. ``options`` are the set's own: for ``shapes``
    ``n``, ``size``, ``channels`` (1 or 3), ``classes``, ``seed``; the file sets take none.
    Raises DatasetNotFoundError (a FileNotFoundError) listing every place searched when the
    files are nowhere, DataFormatError naming the file when one is corrupt.
    """
    name = canonical_name(name)
    split = check_split(split)
    if name == "shapes":
        unknown = sorted(set(options) - set(shapes.OPTIONS))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)} for 'shapes'; accepted: "
                            f"{', '.join(shapes.OPTIONS)}")
        opts = dict(options)
        opts.setdefault("n", shapes.DEFAULT_N[split])
        x, y, classes = shapes.generate(split=split, **opts)
        return Dataset._trusted(x, y, classes, name, split)
    if options:
        raise TypeError(f"{name!r} takes no options, got {', '.join(sorted(options))}")

    spec = FILE_SETS[name]
    loc = locate(spec, split, root)
    if loc is None:
        allowed = (not no_download_env()) if download is None else bool(download)
        note = ("Downloading is off (download=False)." if download is not None and not allowed
                else "Downloading is off (NBCNN_NO_DOWNLOAD is set)." if not allowed else "")
        if allowed:
            try:
                fetch(spec, root)
            except (DownloadError, ChecksumError) as e:
                note = f"Downloading failed: {e}"
            loc = locate(spec, split, root)
        if loc is None:
            raise not_found(spec, split, root, note)
    x, y = _read(spec, loc)
    return Dataset._trusted(x, y, spec.classes, name, split)
