"""Sequential.load trusts nothing in a model file: each damaged or forged file is refused with an
error that names the file and the array or config field."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import nbcnn

ARCH = "conv(3,3,same)-batchnorm-relu-residual(conv(3,3,same)-batchnorm,conv(3,1))-flatten-dense(2)"


@pytest.fixture
def saved(tmp_path):
    """(path, arrays) of a freshly saved residual model."""
    model = nbcnn.build(ARCH, input_shape=(2, 4, 4), backend="numpy", seed=0)
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return path, arrays


def _write(path, arrays):
    with open(path, "wb") as f:           # np.savez on a name would append '.npz'
        np.savez(f, **arrays)
    return path


def _refused(path, *fragments):
    with pytest.raises(ValueError) as info:
        nbcnn.Sequential.load(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert re.search(fragment, message), (fragment, message)


def test_the_saved_file_loads(saved):
    path, _ = saved
    assert nbcnn.Sequential.load(path).spec() == ARCH


def test_a_missing_array(saved):
    path, arrays = saved
    del arrays["weight:3.body.0.weight"]
    _refused(_write(path, arrays), r"array 'weight:3\.body\.0\.weight' is missing")


def test_an_extra_array(saved):
    path, arrays = saved
    arrays["weight:7.weight"] = np.zeros((2, 48), np.float32)
    _refused(_write(path, arrays), r"unexpected array 'weight:7\.weight'")
    arrays.pop("weight:7.weight")
    arrays["notes"] = np.zeros(3, np.float32)
    _refused(_write(path, arrays), r"unexpected array 'notes'")


def test_a_wrong_shape(saved):
    path, arrays = saved
    arrays["weight:3.shortcut.0.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    _refused(_write(path, arrays), r"array 'weight:3\.shortcut\.0\.weight' has shape \(3, 3, 3, 3\), "
                                   r"expected \(3, 3, 1, 1\)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(saved, bad):
    path, arrays = saved
    arrays["weight:1.running_var"] = arrays["weight:1.running_var"].copy()
    arrays["weight:1.running_var"][1] = bad
    _refused(_write(path, arrays), r"array 'weight:1\.running_var' holds NaN or infinite values")


def test_a_non_float_array(saved):
    path, arrays = saved
    arrays["weight:5.bias"] = np.zeros(2, np.int64)
    _refused(_write(path, arrays), r"array 'weight:5\.bias' has dtype int64")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_truncated_file(saved, keep):
    path, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])
    _refused(path, "truncated or corrupt")


def test_a_corrupt_array(saved):
    path, _ = saved
    raw = bytearray(path.read_bytes())
    at = raw.index(b"\x93NUMPY", raw.index(b"weight:0.weight")) + 200  # inside its data
    raw[at:at + 8] = b"\xff" * 8                # the member's CRC no longer matches
    path.write_bytes(bytes(raw))
    _refused(path, r"array 'weight:0\.weight' cannot be read", "truncated or corrupt")


def test_not_an_archive(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(b"hello, not a zip file at all")
    _refused(path, "not a readable nbcnn model file")
    np.save(tmp_path / "one.npy", np.zeros(3))
    _refused(tmp_path / "one.npy", r"one \.npy array")


def _with_config(path, arrays, edit):
    config = json.loads(str(arrays["config"]))
    edit(config)
    arrays["config"] = np.array(json.dumps(config))
    return _write(path, arrays)


@pytest.mark.parametrize("edit,fragments", [
    (lambda c: c.pop("layers"), [r"config field 'layers' is missing"]),
    (lambda c: c.pop("input_shape"), [r"config field 'input_shape' is missing"]),
    (lambda c: c.update(input_shape="2x4x4"), [r"'input_shape' must be a list of positive ints"]),
    (lambda c: c.update(input_shape=[2, 0, 4]), [r"'input_shape' must be a list of positive ints"]),
    (lambda c: c.update(seed="zero"), [r"config field 'seed' must be a non-negative int"]),
    (lambda c: c.update(layers={}), [r"config field 'layers' must be a non-empty list"]),
    (lambda c: c["layers"].__setitem__(2, "relu"),
     [r"config field 'layers\[2\]' must be an object with the keys 'type' and 'config'"]),
    (lambda c: c["layers"][2].pop("config"), [r"'layers\[2\]' must be an object with the keys"]),
    (lambda c: c["layers"][0].update(type="Conv3D"),
     [r"config field 'layers\[0\]\.type': unknown layer type 'Conv3D'"]),
    (lambda c: c["layers"][0]["config"].update(filters="3"),
     [r"config field 'layers\[0\]\.config' \(Conv2D\): Conv2D: filters must be a positive int"]),
    (lambda c: c["layers"][0]["config"].update(kernel_size=[3]),
     [r"'layers\[0\]\.config' \(Conv2D\):.*kernel_size"]),
    (lambda c: c["layers"][0]["config"].update(colour="red"),
     [r"'layers\[0\]\.config' \(Conv2D\):.*unexpected keyword argument 'colour'"]),
    (lambda c: c["layers"][1].update(config=[0.1]), [r"'layers\[1\]\.config' must be an object"]),
    (lambda c: c["layers"][3]["config"]["body"][0].update(type=7),
     [r"config field 'layers\[3\]\.config\.body\[0\]\.type': unknown layer type 7"]),
    (lambda c: c["layers"][3]["config"].pop("shortcut"),
     [r"'layers\[3\]\.config' of a Residual must have the keys 'body' and 'shortcut'"]),
    (lambda c: c["layers"][3]["config"].update(body=[]),
     [r"'layers\[3\]\.config' \(Residual\): Residual: the body needs at least one layer"]),
    (lambda c: c["layers"][3]["config"]["shortcut"][0]["config"].update(filters=5),
     [r"do not fit its input_shape \[2, 4, 4\]", r"\(N, 3, 4, 4\) but the shortcut gives "
                                                 r"\(N, 5, 4, 4\)"]),
], ids=lambda v: "" if callable(v) else re.sub(r"\W+", "-", v[0])[:40])
def test_malformed_config(saved, edit, fragments):
    path, arrays = saved
    _refused(_with_config(path, arrays, edit), *fragments)


def test_config_that_is_not_json(saved):
    path, arrays = saved
    arrays["config"] = np.array('{"format": "nbcnn.Sequential", "layers": [')
    _refused(_write(path, arrays), r"entry 'config' is not valid JSON")
    arrays["config"] = np.zeros(3)
    _refused(_write(path, arrays), r"entry 'config' must hold one JSON string")
    arrays["config"] = np.array('["a list"]')
    _refused(_write(path, arrays), r"not an nbcnn model file \(format 'list'\)")


def test_a_missing_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        nbcnn.Sequential.load(tmp_path / "nothing.npz")
