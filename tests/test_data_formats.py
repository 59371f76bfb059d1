"""IDX and CIFAR-10 binary readers on small generated files: exact round trips in every layout the
locator accepts, and corrupt files rejected with an error that names the file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from data_writers import (CIFAR_DIR, CIFAR_TAR, CIFAR_TEST, CIFAR_TRAIN, IDX_STEMS, cifar_batches,
                          cifar_records, concat_split, idx_bytes, isolate, random_images, scaled,
                          write_bytes, write_cifar_folder, write_cifar_tarball, write_idx_set)
from nbcnn import data
from nbcnn.data import DataFormatError, cifar, idx


@pytest.fixture
def env(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


def check_loaded(ds, u8, labels, shape):
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.x.shape == (len(labels), *shape) and ds.y.shape == (len(labels),)
    np.testing.assert_array_equal(ds.x, scaled(u8).reshape(ds.x.shape))
    np.testing.assert_array_equal(ds.y, labels.astype(np.int64))
    assert ds.x.min() >= 0 and ds.x.max() <= 1


# --- IDX round trips -------------------------------------------------------------------------

@pytest.mark.parametrize("sub,gz,dotted,via", [
    ("mnist", True, False, "root"),          # the published .gz names
    ("mnist", False, False, "root"),         # decompressed
    ("MNIST/raw", False, False, "root"),     # torchvision's layout
    ("mnist/raw", True, True, "root"),       # dotted names (train-images.idx3-ubyte)
    ("", True, False, "root"),               # straight in the root= folder
    ("mnist", True, False, "env"),           # under $NBCNN_DATA
    ("mnist", False, False, "cache"),        # in the user cache
])
def test_idx_layouts_round_trip(env, tmp_path, monkeypatch, sub, gz, dotted, via):
    base = {"root": tmp_path / "d", "env": tmp_path / "d", "cache": env["cache"]}[via]
    written = write_idx_set(base / sub if sub else base, gz=gz, dotted=dotted)
    root = base if via == "root" else None
    if via == "env":
        monkeypatch.setenv("NBCNN_DATA", str(base))
    for split in ("train", "test"):
        images, labels, paths = written[split]
        ds = data.load("mnist", split, root=root)
        check_loaded(ds, images[:, None], labels, (1, 28, 28))
        assert ds.name == "mnist" and ds.split_name == split and ds.num_classes == 10
        loc = data.find("mnist", split, root=root)
        assert [p.resolve() for p in loc.paths] == [p.resolve() for p in paths]


def test_fashion_mnist_reads_the_same_format(env, tmp_path):
    written = write_idx_set(tmp_path / "d" / "fashion-mnist", seed=5)
    ds = data.load("fashion_mnist", "test", root=tmp_path / "d")
    images, labels, _ = written["test"]
    check_loaded(ds, images[:, None], labels, (1, 28, 28))
    assert ds.name == "fashion-mnist" and ds.classes[9] == "Ankle boot"


def test_fashion_mnist_in_the_system_folder(env):
    write_idx_set(env["system"] / "fashion-mnist")
    loc = data.find("fashion-mnist", "train")
    assert loc.root_label == "system" and loc.folder == env["system"] / "fashion-mnist"
    # an MNIST-like file at the top of a shared folder is ambiguous: not taken for mnist
    write_idx_set(env["system"])
    assert data.find("mnist", "train") is None


def test_gz_detected_by_magic_not_name(tmp_path):
    arr = random_images(np.random.default_rng(0), 3)
    p = write_bytes(tmp_path / "images-idx3-ubyte", idx_bytes(arr), gz=True)  # gz, no .gz name
    np.testing.assert_array_equal(idx.read_idx(p), arr)
    q = write_bytes(tmp_path / "plain.gz", idx_bytes(arr), gz=False)           # .gz name, raw
    np.testing.assert_array_equal(idx.read_idx(q), arr)


def test_idx_absurd_header_sizes(tmp_path):
    # 2**32-1 x 2**32-1 x 16 overflows an int64 product: still a clear "truncated"
    p = write_bytes(tmp_path / "x", b"\x00\x00\x08\x03" + bytes.fromhex("ffffffff" * 2 + "00000010")
                    + bytes(16))
    with pytest.raises(DataFormatError, match=r"truncated: header says 4294967295 x 4294967295 x 16 "
                                              r"values \(295147905041913872400 bytes\)"):
        idx.read_idx(p)


def test_idx_other_dtypes_are_big_endian(tmp_path):
    vals = np.array([[1, -2, 70000], [3, 4, -5]], dtype=">i4")
    p = write_bytes(tmp_path / "x.idx", b"\x00\x00\x0c\x02" + (2).to_bytes(4, "big")
                    + (3).to_bytes(4, "big") + vals.tobytes())
    got = idx.read_idx(p)
    np.testing.assert_array_equal(got, vals.astype(np.int32))
    assert got.dtype == np.int32


# --- IDX corruption: each error names the file -----------------------------------------------

def _write_pair(folder, images_blob=None, labels_blob=None, n=6):
    rng = np.random.default_rng(3)
    images, labels = random_images(rng, n), (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    pi = folder / (IDX_STEMS["train"][0] + ".gz")
    pl = folder / (IDX_STEMS["train"][1] + ".gz")
    write_bytes(pi, idx_bytes(images) if images_blob is None else images_blob, gz=True)
    write_bytes(pl, idx_bytes(labels) if labels_blob is None else labels_blob, gz=True)
    return pi, pl, images, labels


def _good_images(n=6):
    return random_images(np.random.default_rng(3), n)


@pytest.mark.parametrize("case,which,pattern", [
    ("bad magic", "images", r"bad magic"),
    ("labels magic on images", "images", r"3-D uint8 images"),
    ("truncated", "images", r"truncated"),
    ("extra bytes", "images", r"sizes disagree with the header"),
    ("header too short", "images", r"truncated IDX header"),
    ("empty", "labels", r"shorter than the 4-byte magic"),
    ("label count", "labels", r"5 labels but .*has 6 images"),
    ("label out of range", "labels", r"label 10 at index 2 is out of range 0\.\.9"),
    ("bad magic labels", "labels", r"bad magic"),
])
def test_corrupt_idx_names_the_file(env, tmp_path, case, which, pattern):
    imgs = _good_images()
    blob = idx_bytes(imgs)
    images_blob = labels_blob = None
    if case == "bad magic":
        images_blob = b"\x12\x34" + blob[2:]
    elif case == "labels magic on images":
        images_blob = idx_bytes(imgs.reshape(-1), magic=0x00000801)
        labels_blob = idx_bytes(np.zeros(6 * 28 * 28, np.uint8))
    elif case == "truncated":
        images_blob = blob[:-100]
    elif case == "extra bytes":
        images_blob = idx_bytes(imgs, dims=(5, 28, 28))
    elif case == "header too short":
        images_blob = blob[:10]
    elif case == "empty":
        labels_blob = b""
    elif case == "label count":
        labels_blob = idx_bytes(np.zeros(5, np.uint8))
    elif case == "label out of range":
        labels_blob = idx_bytes(np.array([0, 1, 10, 3, 4, 5], np.uint8))
    elif case == "bad magic labels":
        labels_blob = b"\x00\x01\x08\x01" + idx_bytes(np.zeros(6, np.uint8))[4:]
    folder = tmp_path / "d" / "mnist"
    pi, pl, _, _ = _write_pair(folder, images_blob, labels_blob)
    with pytest.raises(DataFormatError, match=pattern) as ei:
        data.load("mnist", "train", root=tmp_path / "d")
    named = pi if which == "images" else pl
    assert ei.value.path == str(named)
    assert str(named) in str(ei.value)


def test_truncated_gzip_names_the_file(env, tmp_path):
    folder = tmp_path / "d" / "mnist"
    pi, _, _, _ = _write_pair(folder)
    pi.write_bytes(pi.read_bytes()[:-40])
    with pytest.raises(DataFormatError, match="corrupt or truncated gzip") as ei:
        data.load("mnist", "train", root=tmp_path / "d")
    assert str(pi) in str(ei.value)


def test_corrupt_gzip_stream_names_the_file(tmp_path):
    blob = bytearray(gzip.compress(idx_bytes(_good_images()), mtime=0))
    blob[20:40] = b"\xff" * 20
    p = tmp_path / "x.gz"
    p.write_bytes(bytes(blob))
    with pytest.raises(DataFormatError) as ei:
        idx.read_idx(p)
    assert str(p) in str(ei.value)


# --- CIFAR-10 round trips --------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["nested", "top", "flat", "tar-sub", "tar-top"])
def test_cifar_layouts_round_trip(env, tmp_path, layout):
    root = tmp_path / "d"
    batches = cifar_batches(seed=1)
    if layout.startswith("tar"):
        where = root / "cifar10" if layout == "tar-sub" else root
        write_cifar_tarball(where / CIFAR_TAR, batches)
    else:
        write_cifar_folder(root, batches, layout)
    for split in ("train", "test"):
        images, labels = concat_split(batches, split)
        ds = data.load("cifar10", split, root=root)
        check_loaded(ds, images, labels, (3, 32, 32))
        assert ds.name == "cifar10" and ds.classes[0] == "airplane"
    loc = data.find("cifar10", "train", root=root)
    assert loc.kind == ("cifar-tar" if layout.startswith("tar") else "cifar-dir")


def test_cifar_channel_order_is_rgb(env, tmp_path):
    # one image: R plane 250, G plane 128, B plane 5, written byte by byte in the record layout
    record = bytes([7]) + bytes([250]) * 1024 + bytes([128]) * 1024 + bytes([5]) * 1024
    folder = tmp_path / "d" / "cifar10" / CIFAR_DIR
    folder.mkdir(parents=True)
    for name in CIFAR_TRAIN:
        (folder / name).write_bytes(record)
    (folder / CIFAR_TEST).write_bytes(record)
    ds = data.load("cifar10", "test", root=tmp_path / "d")
    assert ds.y.tolist() == [7]
    np.testing.assert_array_equal(ds.x[0, :, 0, 0], np.float32([250, 128, 5]) / np.float32(255))
    assert len(data.load("cifar10", "train", root=tmp_path / "d")) == 5


def test_cifar_row_major_pixels(tmp_path):
    img = np.arange(3 * 32 * 32, dtype=np.uint32).astype(np.uint8).reshape(1, 3, 32, 32)
    images, labels = cifar.parse_batch(cifar_records(img, [3]))
    np.testing.assert_array_equal(images, img)
    assert images[0, 0, 1, 0] == 32  # second row starts at byte 32 of the R plane


def test_extracted_folder_preferred_over_tarball_in_same_place(env, tmp_path):
    root = tmp_path / "d"
    write_cifar_folder(root, cifar_batches(seed=1), "nested")
    write_cifar_tarball(root / "cifar10" / CIFAR_TAR, cifar_batches(seed=2))
    assert data.find("cifar10", "test", root=root).kind == "cifar-dir"


# --- CIFAR-10 corruption ---------------------------------------------------------------------

def test_cifar_truncated_batch_names_the_file(env, tmp_path):
    _, folder = write_cifar_folder(tmp_path / "d", cifar_batches())
    bad = folder / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataFormatError, match="not a positive whole number") as ei:
        data.load("cifar10", "train", root=tmp_path / "d")
    assert ei.value.path == str(bad)


def test_cifar_empty_batch_names_the_file(env, tmp_path):
    _, folder = write_cifar_folder(tmp_path / "d", cifar_batches())
    (folder / CIFAR_TEST).write_bytes(b"")
    with pytest.raises(DataFormatError) as ei:
        data.load("cifar10", "test", root=tmp_path / "d")
    assert str(folder / CIFAR_TEST) in str(ei.value)


def test_cifar_label_out_of_range_folder(env, tmp_path):
    batches = cifar_batches()
    images, labels = batches["data_batch_2.bin"]
    labels = labels.copy()
    labels[1] = 12
    batches["data_batch_2.bin"] = (images, labels)
    _, folder = write_cifar_folder(tmp_path / "d", batches)
    with pytest.raises(DataFormatError, match=r"label 12 in record 1 is out of range 0\.\.9") as ei:
        data.load("cifar10", "train", root=tmp_path / "d")
    assert ei.value.path == str(folder / "data_batch_2.bin")


def test_cifar_label_out_of_range_tarball(env, tmp_path):
    batches = cifar_batches()
    images, labels = batches[CIFAR_TEST]
    batches[CIFAR_TEST] = (images, np.full_like(labels, 12))
    _, tar = write_cifar_tarball(tmp_path / "d" / CIFAR_TAR, batches)
    with pytest.raises(DataFormatError, match="label 12") as ei:
        data.load("cifar10", "test", root=tmp_path / "d")
    assert str(tar) in str(ei.value) and CIFAR_TEST in str(ei.value)


def test_cifar_tarball_missing_member(env, tmp_path):
    _, tar = write_cifar_tarball(tmp_path / "d" / CIFAR_TAR, skip=("data_batch_4.bin",))
    with pytest.raises(DataFormatError, match="no member data_batch_4.bin") as ei:
        data.load("cifar10", "train", root=tmp_path / "d")
    assert ei.value.path == str(tar)
    # the test split is complete and still loads
    assert len(data.load("cifar10", "test", root=tmp_path / "d")) == 5


def test_cifar_tarball_truncated_member(env, tmp_path):
    records = cifar_records(*cifar_batches()[CIFAR_TEST])
    _, tar = write_cifar_tarball(tmp_path / "d" / CIFAR_TAR, raw={CIFAR_TEST: records[:-5]})
    with pytest.raises(DataFormatError) as ei:
        data.load("cifar10", "test", root=tmp_path / "d")
    assert str(tar) in str(ei.value)


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_cifar_truncated_tarball(env, tmp_path, cut):
    _, tar = write_cifar_tarball(tmp_path / "d" / CIFAR_TAR)
    blob = tar.read_bytes()
    tar.write_bytes(blob[:int(len(blob) * cut)])
    with pytest.raises(DataFormatError, match="corrupt or truncated") as ei:
        data.load("cifar10", "test", root=tmp_path / "d")
    assert ei.value.path == str(tar)


def test_cifar_not_a_tarball(env, tmp_path):
    tar = tmp_path / "d" / CIFAR_TAR
    tar.parent.mkdir(parents=True)
    tar.write_bytes(b"this is not a tarball at all" * 50)
    with pytest.raises(DataFormatError) as ei:
        data.load("cifar10", "train", root=tmp_path / "d")
    assert ei.value.path == str(tar)
