"""The real MNIST, CIFAR-10 and Fashion-MNIST files, where this machine has them: known sizes,
class counts and statistics. Found through ``$NBCNN_DATA`` (CI points it at ``../shared/data``
when that exists; so do these tests when it is unset) and the system folders (Debian's
``dataset-fashion-mnist``). Skipped, with the reason, where the files are absent. Nothing is
downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from nbcnn import cli, data

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _root():
    """``root=`` for the loads: None when $NBCNN_DATA is set (it is searched), else the shared
    folder next to the project if it exists."""
    if os.environ.get("NBCNN_DATA", "").strip():
        return None
    return SHARED.resolve() if SHARED.is_dir() else None


def _load_or_skip(name, split):
    root = _root()
    if data.find(name, split, root=root) is None:
        first = "$NBCNN_DATA" if root is None else str(root)
        pytest.skip(f"real {name} ({split}) files not found here (searched {first}, the user "
                    f"cache and system folders; set NBCNN_DATA to a folder holding them)")
    return data.load(name, split, root=root, download=False)


@pytest.fixture(scope="module")
def mnist():
    return {s: _load_or_skip("mnist", s) for s in ("train", "test")}


@pytest.fixture(scope="module")
def cifar10_test():
    return _load_or_skip("cifar10", "test")


@pytest.fixture(scope="module")
def cifar10_train():
    return _load_or_skip("cifar10", "train")


@pytest.fixture(scope="module")
def fashion():
    return {s: _load_or_skip("fashion-mnist", s) for s in ("train", "test")}


def _check_images(ds, shape):
    assert ds.x.shape[1:] == shape and ds.input_shape == shape
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0


def test_mnist(mnist):
    train, test = mnist["train"], mnist["test"]
    assert len(train) == 60000 and len(test) == 10000
    _check_images(train, (1, 28, 28))
    _check_images(test, (1, 28, 28))
    assert test.counts().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train.counts().sum() == 60000 and train.counts().min() > 5000
    # every value is k / 255 for a byte k
    k = test.x[:100] * np.float32(255)
    np.testing.assert_array_equal(k, np.round(k))


def test_fashion_mnist(fashion):
    train, test = fashion["train"], fashion["test"]
    assert len(train) == 60000 and len(test) == 10000
    _check_images(train, (1, 28, 28))
    assert train.counts().tolist() == [6000] * 10
    assert test.counts().tolist() == [1000] * 10
    assert train.classes[0] == "T-shirt/top"


def test_cifar10_test(cifar10_test):
    test = cifar10_test
    assert len(test) == 10000
    _check_images(test, (3, 32, 32))
    assert test.counts().tolist() == [1000] * 10
    assert test.classes[0] == "airplane" and test.classes[9] == "truck"


# reading the train split decompresses the whole tarball (seconds): slow
@pytest.mark.slow
def test_cifar10_train(cifar10_train):
    train = cifar10_train
    assert len(train) == 50000
    _check_images(train, (3, 32, 32))
    assert train.counts().tolist() == [5000] * 10


@pytest.mark.slow
def test_cifar10_channel_statistics(cifar10_train):
    """The published per-channel statistics: also proves the channel order is R, G, B."""
    train = cifar10_train
    np.testing.assert_allclose(train.mean(), [0.4914, 0.4822, 0.4465], atol=1e-3)
    np.testing.assert_allclose(train.std(), [0.2470, 0.2435, 0.2616], atol=1e-3)


def test_verify_mnist(monkeypatch, tmp_path, capsys):
    root = _root()
    if data.find("mnist", "train", root=root) is None:
        pytest.skip("real mnist files not found here (set NBCNN_DATA)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the verified record goes here
    argv = ["data", "verify", "mnist"] + (["--root", str(root)] if root else [])
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("ok ") == 4 and "BAD" not in out


@pytest.mark.slow
def test_verify_cifar10(monkeypatch, tmp_path, capsys):
    root = _root()
    if data.find("cifar10", "train", root=root) is None:
        pytest.skip("real cifar10 files not found here (set NBCNN_DATA)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    argv = ["data", "verify", "cifar10"] + (["--root", str(root)] if root else [])
    assert cli.main(argv) == 0
    assert "BAD" not in capsys.readouterr().out
