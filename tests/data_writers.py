"""Writers of small data files in the real published formats, for the data tests.

IDX (the MNIST format): magic ``00 00 08 03`` for images (N, H, W) uint8 and ``00 00 08 01`` for
labels (N,) uint8, then big-endian uint32 sizes, then the bytes; gzipped or raw, in the folder
layouts the locator accepts. CIFAR-10 binary: records of 1 label byte + 3072 pixel bytes
(1024 R, 1024 G, 1024 B), as ``cifar-10-batches-bin/`` and inside ``cifar-10-binary.tar.gz``.

Every writer returns what it wrote (the uint8 arrays), so a test can compare a reader's output
with exactly those bytes.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

#: the file stems of an MNIST-like split
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: how many examples each split gets by default (small: the tests stay fast)
IDX_SIZES = {"train": 30, "test": 20}

CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_TAR = "cifar-10-binary.tar.gz"
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")


# --- IDX -------------------------------------------------------------------------------------

def idx_bytes(arr: np.ndarray, magic: int | None = None, dims=None) -> bytes:
    """An uint8 array as IDX bytes. ``magic`` and ``dims`` override the header (for corrupt files)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | arr.ndim
    dims = arr.shape if dims is None else dims
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + arr.tobytes()


def random_images(rng, n: int, h: int = 28, w: int = 28) -> np.ndarray:
    """(n, h, w) uint8 covering the whole 0..255 range (so every byte value is read back)."""
    images = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
    flat = images.reshape(-1)
    flat[:256] = np.arange(256, dtype=np.uint8)  # every value at least once
    return images


def balanced_labels(rng, n: int, num_classes: int = 10) -> np.ndarray:
    return rng.permutation(np.arange(n) % num_classes).astype(np.uint8)


def write_bytes(path, data: bytes, gz: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def idx_name(stem: str, gz: bool, dotted: bool = False) -> str:
    if dotted:
        stem = stem.replace("-idx", ".idx", 1)
    return stem + (".gz" if gz else "")


def write_idx_split(folder, split: str, rng=None, n: int | None = None, gz: bool = True,
                    dotted: bool = False, images=None, labels=None, num_classes: int = 10):
    """Write one MNIST-like split (images + labels IDX files) into ``folder``.

    Returns ``(images (N, 28, 28) uint8, labels (N,) uint8, [images_path, labels_path])``.
    """
    rng = np.random.default_rng(0 if split == "train" else 1) if rng is None else rng
    n = IDX_SIZES[split] if n is None else n
    images = random_images(rng, n) if images is None else np.asarray(images, np.uint8)
    labels = balanced_labels(rng, len(images), num_classes) if labels is None \
        else np.asarray(labels, np.uint8)
    img_stem, lab_stem = IDX_STEMS[split]
    folder = Path(folder)
    p_img = write_bytes(folder / idx_name(img_stem, gz, dotted), idx_bytes(images), gz)
    p_lab = write_bytes(folder / idx_name(lab_stem, gz, dotted), idx_bytes(labels), gz)
    return images, labels, [p_img, p_lab]


def write_idx_set(folder, gz: bool = True, dotted: bool = False, seed: int = 0):
    """Both splits of an MNIST-like set into ``folder``: ``{split: (images, labels, paths)}``."""
    rng = np.random.default_rng(seed)
    return {s: write_idx_split(folder, s, rng, gz=gz, dotted=dotted) for s in ("train", "test")}


# --- CIFAR-10 binary -------------------------------------------------------------------------

def cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Records of 1 label byte + 3072 pixel bytes (R plane, G plane, B plane, rows first)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.uint8)
    assert images.shape[1:] == (3, 32, 32) and len(images) == len(labels)
    rec = np.empty((len(images), 1 + 3072), np.uint8)
    rec[:, 0] = labels
    rec[:, 1:] = images.reshape(len(images), 3072)
    return rec.tobytes()


def random_cifar(rng, n: int):
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    # distinct planes: R bright, G mid, B dark in the first image, so a channel swap shows
    if n:
        images[0, 0], images[0, 1], images[0, 2] = 250, 128, 5
    return images, balanced_labels(rng, n)


def cifar_batches(seed: int = 0, per_batch: int = 4):
    """``{member name: (images (n, 3, 32, 32) uint8, labels (n,) uint8)}`` for the 6 batches."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in CIFAR_TRAIN + (CIFAR_TEST,):
        out[name] = random_cifar(rng, per_batch + (name == CIFAR_TEST))
    return out


def meta_text() -> bytes:
    return ("\n".join(CIFAR_CLASSES) + "\n\n").encode()


def write_cifar_folder(root, batches=None, layout: str = "nested", skip=()):
    """Write the extracted ``cifar-10-batches-bin/`` under ``root``.

    ``layout``: ``"nested"`` puts it at ``root/cifar10/cifar-10-batches-bin``, ``"top"`` at
    ``root/cifar-10-batches-bin``, ``"flat"`` writes the batch files straight into ``root/cifar10``.
    Returns the batches written (see ``cifar_batches``) and the folder holding them.
    """
    batches = cifar_batches() if batches is None else batches
    root = Path(root)
    folder = {"nested": root / "cifar10" / CIFAR_DIR, "top": root / CIFAR_DIR,
              "flat": root / "cifar10"}[layout]
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in batches.items():
        if name not in skip:
            (folder / name).write_bytes(cifar_records(images, labels))
    (folder / "batches.meta.txt").write_bytes(meta_text())
    return batches, folder


def write_cifar_tarball(path, batches=None, skip=(), raw=None):
    """Write ``cifar-10-binary.tar.gz`` (members under ``cifar-10-batches-bin/``) at ``path``.

    ``raw`` maps member names to bytes written instead of the records (for corrupt members).
    """
    batches = cifar_batches() if batches is None else batches
    raw = raw or {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        dir_info = tarfile.TarInfo(CIFAR_DIR)
        dir_info.type = tarfile.DIRTYPE
        dir_info.mode = 0o755
        tf.addfile(dir_info)
        members = [("batches.meta.txt", meta_text())]
        members += [(name, raw.get(name, cifar_records(*arrays) if arrays is not None else b""))
                    for name, arrays in batches.items()]
        for name, data in members:
            if name in skip:
                continue
            info = tarfile.TarInfo(f"{CIFAR_DIR}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return batches, path


def concat_split(batches, split: str):
    """The images and labels a reader should return for ``split``, in member order."""
    names = CIFAR_TRAIN if split == "train" else (CIFAR_TEST,)
    return (np.concatenate([batches[n][0] for n in names]),
            np.concatenate([batches[n][1] for n in names]))


def scaled(u8: np.ndarray) -> np.ndarray:
    """What a loader must turn bytes into: u8 / 255 in float32."""
    return np.asarray(u8, np.uint8).astype(np.float32) / np.float32(255)


# --- an isolated environment for the search path --------------------------------------------

def isolate(monkeypatch, tmp_path, system=None) -> dict:
    """Point HOME, XDG_CACHE_HOME and the system folders into ``tmp_path``, unset NBCNN_DATA,
    forbid downloads. Returns the folders: ``home``, ``cache`` (the nbcnn user cache), ``system``."""
    import importlib
    locate = importlib.import_module("nbcnn.data.locate")  # nbcnn.data.locate is also a function
    home, xdg = tmp_path / "home", tmp_path / "xdg-cache"
    system = tmp_path / "system" if system is None else Path(system)
    for d in (home, xdg, system):
        d.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.delenv("NBCNN_DATA", raising=False)
    monkeypatch.setenv("NBCNN_NO_DOWNLOAD", "1")
    monkeypatch.setattr(locate, "SYSTEM_DIRS", (str(system),))
    return {"home": home, "cache": xdg / "nbcnn", "system": system}
