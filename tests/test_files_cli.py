"""Files and the command line: permissions that honour the umask, one clear line (and a non-zero
exit) for folders and files that cannot be used, a closed pipe, a step too big for memory, and a
gzip file that would inflate far beyond its size."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import nbcnn
from nbcnn import results
from nbcnn.backends.base import Backend
from nbcnn.cli import main as cli_main
from nbcnn.data import idx
from nbcnn.data.errors import DataFormatError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = """
name = "f"
save_models = true
[fixed]
dataset = "shapes"
data = { n = 60, size = 8 }
arch = "conv(2,3)-relu-flatten-dense(4)"
batch_size = 20
[grid]
seed = [0]
"""


@pytest.fixture
def grid(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text(textwrap.dedent(GRID))
    return str(path)


def one_error_line(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    out = {}
    for d, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(d, n)
            out[p] = open(p, "rb").read()
    return out


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_results_and_models_honour_the_umask(tmp_path, grid, mask):
    old = os.umask(mask)
    try:
        assert cli_main(["grid", grid, "--results", str(tmp_path / "r"), "--quiet"]) == 0
        m = nbcnn.build("flatten-dense(3)", input_shape=(1, 4, 4), backend="numpy")
        m.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    want = 0o666 & ~mask
    files = [p for p in snapshot(tmp_path / "r") if not os.path.basename(p).startswith(".")]
    assert len(files) >= 6                           # records, tables, grid files, model, ...
    for p in files + [str(tmp_path / "m.npz")]:
        assert stat.S_IMODE(os.stat(p).st_mode) == want, p


def test_a_results_path_that_is_a_file(tmp_path, grid, capsys):
    f = tmp_path / "results.txt"
    f.write_text("mine")
    assert cli_main(["grid", grid, "--results", str(f), "--quiet"]) == 2
    one_error_line(capsys, "cannot use", str(f))
    assert f.read_text() == "mine"


def test_a_results_folder_without_write_permission(tmp_path, grid, capsys, monkeypatch):
    res = tmp_path / "r"
    assert cli_main(["grid", grid, "--results", str(res), "--quiet"]) == 0
    before = snapshot(res)
    capsys.readouterr()
    if os.geteuid() != 0:
        for d, _, _ in os.walk(res):
            os.chmod(d, 0o555)
    else:                                            # root writes anywhere: refuse its lock file
        def refuse(path, *a, **kw):
            if not str(path).endswith(".lock"):
                return _open(path, *a, **kw)
            raise PermissionError(13, "Permission denied", str(path))
        monkeypatch.setattr(results, "open", refuse, raising=False)
    try:
        assert cli_main(["grid", grid, "--results", str(res), "--quiet"]) == 2
    finally:
        for d, _, _ in os.walk(res):
            os.chmod(d, 0o755)
    one_error_line(capsys, "cannot use", "Permission denied", str(res / "f"))
    assert snapshot(res) == before


_open = open


def test_records_not_writable_fails_before_training(tmp_path, grid, capsys, monkeypatch):
    import tempfile as tf
    real = tf.mkstemp

    def mkstemp(*a, dir=None, **kw):
        if dir is not None and os.path.basename(dir) == "records":
            raise PermissionError(13, "Permission denied", dir)
        return real(*a, dir=dir, **kw)
    monkeypatch.setattr(results.tempfile, "mkstemp", mkstemp)
    trained = []
    monkeypatch.setattr("nbcnn.harness.executors.run_cell", lambda *a, **kw: trained.append(a))
    assert cli_main(["grid", grid, "--results", str(tmp_path / "r"), "--quiet"]) == 2
    one_error_line(capsys, "records", "Permission denied")
    assert not trained
    assert not os.listdir(tmp_path / "r" / "f" / "models")


@pytest.mark.parametrize("command", ["grid", "train"])
def test_a_data_root_that_is_a_file(tmp_path, grid, capsys, command):
    f = tmp_path / "data.bin"
    f.write_bytes(b"x")
    argv = ([grid, "--results", str(tmp_path / "r"), "--quiet"] if command == "grid" else
            ["--dataset", "mnist", "--arch", "mnist-tiny", "--quiet"])
    assert cli_main([command, *argv, "--data-root", str(f)]) == 2
    one_error_line(capsys, str(f), "is a file, not a folder")
    assert not (tmp_path / "r").exists()


def test_plot_with_a_truncated_model(tmp_path, grid, capsys):
    res = tmp_path / "r"
    assert cli_main(["grid", grid, "--results", str(res), "--quiet"]) == 0
    model = next((res / "f" / "models").iterdir())
    model.write_bytes(model.read_bytes()[:200])
    truncated = model.read_bytes()
    capsys.readouterr()
    assert cli_main(["plot", str(res / "f")]) == 2
    one_error_line(capsys, str(model), "not a readable")
    assert model.read_bytes() == truncated


def test_a_closed_pipe_is_one_line_and_a_failure(tmp_path, grid):
    res = str(tmp_path / "r")
    assert cli_main(["grid", grid, "--results", res, "--quiet"]) == 0
    before = snapshot(res)
    read, write = os.pipe()
    os.close(read)                                   # the reader is gone before we write
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "nbcnn", "grid", grid, "--results", res,
                           "--quiet"], stdout=write, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT, env=env, timeout=120)
    os.close(write)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "already done" not in ln]
    assert lines == ["nbcnn grid: output closed before the end (broken pipe)"], proc.stderr
    after = snapshot(res)
    assert {p for p in after} == set(before)
    for p in before:                                 # the runs as they were (tables rebuilt
        if "/records/" in p or "/models/" in p:      # with the same content)
            assert after[p] == before[p]


def test_a_batch_too_big_for_memory_is_refused_with_one_that_fits(monkeypatch, capsys):
    monkeypatch.setattr(Backend, "memory_available", lambda self: 256 * 2 ** 20)
    x = np.random.default_rng(0).random((3000, 1, 28, 28), dtype=np.float32)
    y = np.arange(3000) % 10
    m = nbcnn.build("mnist-complex", input_shape=(1, 28, 28), backend="numpy")
    with pytest.raises(MemoryError, match=r"fit: a training step at batch_size 3000 needs about "
                                          r"[\d.]+ GiB, more than the 0.2 GiB .* available on "
                                          r"numpy; batch_size (\d+) or less fits") as e:
        m.fit((x, y), batch_size=3000, verbose=False)
    fits = int(str(e.value).rsplit("batch_size ", 1)[1].split()[0])
    assert 10 < fits < 3000
    m.fit((x[:fits + 1], y[:fits + 1]), epochs=0, batch_size=fits, verbose=False)   # accepted
    with pytest.raises(MemoryError, match="predict: an inference step"):
        m.predict(x, batch_size=3000)
    # the command line: one line, exit 2 (before: allocating until the process died)
    assert cli_main(["train", "--arch", "mnist-complex", "--dataset", "shapes",
                     "--batch-size", "100000", "--epochs", "1", "--quiet"]) == 2
    one_error_line(capsys, "batch_size 100000 (", "examples) needs about", "or less fits")


def test_a_gzip_idx_header_is_checked_before_inflating(tmp_path):
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    zeros = bytes(1 << 20)
    with gzip.open(bomb, "wb") as f:                 # bad magic, then 200 MB of zeros
        f.write(b"\x12\x34\x08\x03")
        for _ in range(200):
            f.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataFormatError, match="bad magic"):
            idx.read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"inflated {peak / 2 ** 20:.0f} MiB to read a 4-byte header"
    # a header promising more than the file can hold is refused before reading on
    liar = tmp_path / "liar.gz"
    liar.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"".join(
        d.to_bytes(4, "big") for d in (60000, 28, 28)) + bytes(100)))
    with pytest.raises(DataFormatError, match=r"cannot inflate to more than \d+ bytes"):
        idx.read_idx(liar)
