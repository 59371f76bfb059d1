"""nbcnn.data: interrupted downloads leave nothing that looks complete; shapes is learnable by a
shift-invariant model though not by a linear one."""

from __future__ import annotations

import hashlib
import http.server
import threading

import numpy as np
import pytest

from nbcnn import data
from nbcnn.data import download
from nbcnn.data.sources import FileSpec

PAYLOAD = bytes(range(256)) * 64
SPEC = FileSpec("blob.bin", md5=hashlib.md5(PAYLOAD).hexdigest())


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


class _ShortHandler(http.server.BaseHTTPRequestHandler):
    """Promises the whole payload, sends half, hangs up."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def short_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShortHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_connection_dropped_mid_download_leaves_nothing(tmp_path, short_server):
    dest = tmp_path / "dl" / "blob.bin"
    with pytest.raises(data.DownloadError) as e:
        download.download_file([short_server + "blob.bin"], dest, SPEC, progress=False,
                               timeout=5)
    assert "blob.bin" in str(e.value)
    assert _leftovers(dest.parent) == []


def test_dropped_mirror_then_good_one(tmp_path, short_server):
    good = tmp_path / "www" / "blob.bin"
    good.parent.mkdir()
    good.write_bytes(PAYLOAD)
    dest = tmp_path / "dl" / "blob.bin"
    got = download.download_file([short_server + "blob.bin", good.as_uri()], dest, SPEC,
                                 progress=False, timeout=5)
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["blob.bin"]


class _Stream:
    """A response that yields one chunk, then fails with ``error``."""

    headers = {}

    def __init__(self, error):
        self.error, self.sent = error, False

    def read(self, n):
        if not self.sent:
            self.sent = True
            return PAYLOAD[:1000]
        raise self.error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("error", [KeyboardInterrupt(), ConnectionResetError("reset by peer")])
def test_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch, error):
    monkeypatch.setattr(download, "_open", lambda url, timeout: _Stream(error))
    dest = tmp_path / "dl" / "blob.bin"
    with pytest.raises((KeyboardInterrupt, data.DownloadError)):
        download.download_file(["http://mirror.invalid/blob.bin"], dest, SPEC, progress=False)
    assert _leftovers(dest.parent) == []


# --- shapes: hard for a linear model, easy for a shift-invariant one ---------------------------

def _ridge_accuracy(ftr, ytr, fte, yte, lam=100.0):
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    a = np.hstack([(ftr - mu) / sd, np.ones((len(ftr), 1))])
    b = np.hstack([(fte - mu) / sd, np.ones((len(fte), 1))])
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ np.eye(ytr.max() + 1)[ytr])
    return float(((b @ w).argmax(1) == yte).mean())


def _spectrum(ds):
    """Log magnitude of the 2-D Fourier transform: blind to where the shape is."""
    img = ds.x[:, 0] - ds.x[:, 0].mean(axis=(1, 2), keepdims=True)
    mag = np.abs(np.fft.rfft2(img))
    mag /= mag.sum(axis=(1, 2), keepdims=True)
    return np.log(mag.reshape(len(ds), -1) + 1e-4)


def test_shapes_learnable_beyond_linear():
    train, test = data.load("shapes", "train"), data.load("shapes", "test")
    flat = lambda ds: ds.x.reshape(len(ds), -1)  # noqa: E731
    linear = _ridge_accuracy(flat(train), train.y, flat(test), test.y)
    invariant = _ridge_accuracy(_spectrum(train), train.y, _spectrum(test), test.y)
    print(f"shapes, 4 classes: linear on pixels {linear:.3f}, linear on |FFT| {invariant:.3f}")
    assert linear < 0.5
    assert invariant > linear + 0.15
