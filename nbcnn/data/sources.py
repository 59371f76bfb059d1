"""What each file-backed data set is made of: file names, mirrors, checksums, classes.

Checksums come in two kinds. ``md5`` is the published checksum of the file as distributed (the
``.gz`` or the ``.tar.gz``). ``content_md5`` is the md5 of the decompressed payload (an IDX file, or
a CIFAR batch inside the tarball): redistributions often recompress (new gzip header, new tarball),
which changes ``md5`` but not the content, so either one is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "test")


@dataclass(frozen=True)
class FileSpec:
    """One published file. ``name`` is the published name (``.gz`` for the IDX files)."""

    name: str
    md5: str = ""
    content_md5: str = ""
    sha256: str = ""

    @property
    def stem(self) -> str:
        """The name without ``.gz`` (the decompressed file's name)."""
        return self.name[:-3] if self.name.endswith(".gz") else self.name


@dataclass(frozen=True)
class SetSpec:
    """A file-backed data set.

    kind ``"idx"``: ``files[split] = (images, labels)``, IDX files, gzipped or not.
    kind ``"cifar"``: ``archive`` is the tarball; ``members[split]`` the batch files inside
    ``archive_dir`` (which is also the name of the extracted folder).
    """

    name: str
    kind: str
    classes: tuple
    subdirs: tuple                    # sub-folders of a data root that may hold the files
    mirrors: tuple                    # base URLs, tried in order
    shape: tuple                      # (C, H, W)
    files: dict = field(default_factory=dict)
    archive: FileSpec | None = None
    archive_dir: str = ""
    members: dict = field(default_factory=dict)
    homepage: str = ""

    def download_files(self) -> list:
        """The files a download fetches (every split)."""
        if self.kind == "cifar":
            return [self.archive]
        return [f for split in SPLITS for f in self.files[split]]


MNIST = SetSpec(
    name="mnist",
    kind="idx",
    classes=tuple(str(i) for i in range(10)),
    subdirs=("mnist", "MNIST", "MNIST/raw", "mnist/raw"),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    shape=(1, 28, 28),
    files={
        "train": (
            FileSpec("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                     "6bbc9ace898e44ae57da46a324031adb"),
            FileSpec("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                     "a25bea736e30d166cdddb491f175f624"),
        ),
        "test": (
            FileSpec("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                     "2646ac647ad5339dbf082846283269ea"),
            FileSpec("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                     "27ae3e4e09519cfbb04c329615203637"),
        ),
    },
    homepage="http://yann.lecun.com/exdb/mnist/",
)

FASHION_MNIST = SetSpec(
    name="fashion-mnist",
    kind="idx",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # "fashion-mnist" under /usr/share/datasets is where Debian's dataset-fashion-mnist installs it.
    subdirs=("fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw",
             "fashion-mnist/raw", "fashion"),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    shape=(1, 28, 28),
    files={
        "train": (
            FileSpec("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            FileSpec("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                     "9018921c3c673c538a1fc5bad174d6f9"),
        ),
        "test": (
            FileSpec("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                     "8181f5470baa50b63fa0f6fddb340f0a"),
            FileSpec("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                     "15d484375f8d13e6eb1aabb0c3f46965"),
        ),
    },
    homepage="https://github.com/zalandoresearch/fashion-mnist",
)

CIFAR10 = SetSpec(
    name="cifar10",
    kind="cifar",
    classes=("airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"),
    subdirs=("cifar10", "cifar-10", "CIFAR10", "CIFAR-10", "cifar"),
    mirrors=(
        "https://www.cs.toronto.edu/~kriz/",
        "http://www.cs.toronto.edu/~kriz/",
    ),
    shape=(3, 32, 32),
    archive=FileSpec("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),
    archive_dir="cifar-10-batches-bin",
    members={
        "train": tuple(FileSpec(f"data_batch_{i}.bin", content_md5=m) for i, m in enumerate((
            "5dd7e06a14cb22eb9f671a540d1b7c25",
            "5ea93a67294ea407fff1d09f752e9692",
            "942cd6a4bcdd0dd3c604fbe906cb4421",
            "ae636b3ba5c66a11e91e8cb52e771fcb",
            "53f37980c15c3d472c316c40844f3f0d",
        ), start=1)),
        "test": (FileSpec("test_batch.bin", content_md5="803d5f7f4d78ea53de84dbe85f74fb6d"),),
    },
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
)

FILE_SETS = {s.name: s for s in (MNIST, FASHION_MNIST, CIFAR10)}

SHAPES_CLASSES = ("circle", "cross", "square", "triangle")

# every name load() knows, in the order names() lists them
NAMES = ("mnist", "fashion-mnist", "cifar10", "shapes")

ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
}


def canonical_name(name: str) -> str:
    """The canonical name of a data set; ValueError listing the known ones if unknown."""
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in NAMES:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(NAMES)}")
    return key


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    return split
