"""Where data files are found (root= > $NBCNN_DATA > user cache > system folders > download),
what a missing set says, downloads from a local HTTP server (mirrors, checksums, no partial
files), and ``nbcnn data list | fetch | verify``. Never contacts a real host."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import socket
import threading

import numpy as np
import pytest

from data_writers import (CIFAR_TAR, cifar_batches, concat_split, isolate, scaled,
                          write_cifar_folder, write_cifar_tarball, write_idx_set)
from nbcnn import cli, data
from nbcnn.data import ChecksumError, DatasetNotFoundError, DownloadError, sources
from nbcnn.data.checksums import recorded, verify_location
from nbcnn.data.download import download_file


@pytest.fixture
def env(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


# --- search order ----------------------------------------------------------------------------

def test_search_order(env, tmp_path, monkeypatch):
    places = {
        "root=": tmp_path / "given",
        "$NBCNN_DATA": tmp_path / "envdata",
        "user cache": env["cache"],
        "system": env["system"],
    }
    written = {label: write_idx_set(p / "mnist", seed=i) for i, (label, p) in enumerate(places.items())}
    monkeypatch.setenv("NBCNN_DATA", str(places["$NBCNN_DATA"]))

    def loaded_from(root=None):
        ds = data.load("mnist", "test", root=root)
        loc = data.find("mnist", "test", root=root)
        images = written[loc.root_label]["test"][0]
        np.testing.assert_array_equal(ds.x[:, 0], scaled(images))
        return loc.root_label

    assert loaded_from(places["root="]) == "root="
    assert loaded_from() == "$NBCNN_DATA"
    monkeypatch.delenv("NBCNN_DATA")
    assert loaded_from() == "user cache"
    for f in (env["cache"] / "mnist").iterdir():
        f.unlink()
    assert loaded_from() == "system"


def test_nbcnn_data_holds_several_folders(env, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    write_idx_set(b / "MNIST" / "raw", seed=7)
    monkeypatch.setenv("NBCNN_DATA", os.pathsep.join(["", str(a), str(b)]))
    loc = data.find("mnist", "train")
    assert loc.root_label == "$NBCNN_DATA" and loc.folder == b / "MNIST" / "raw"
    write_idx_set(a / "mnist", seed=8)
    assert data.find("mnist", "train").folder == a / "mnist"


def test_cache_honours_xdg_then_home(env, monkeypatch):
    assert data.cache_dir() == env["cache"]
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == env["home"] / ".cache" / "nbcnn"
    write_idx_set(env["home"] / ".cache" / "nbcnn" / "mnist")
    assert data.find("mnist", "train").root_label == "user cache"


def test_root_given_as_str_and_with_tilde(env):
    write_idx_set(env["home"] / "mydata" / "mnist")
    assert len(data.load("mnist", "train", root="~/mydata")) == 30
    assert len(data.load("mnist", "train", root=str(env["home"] / "mydata"))) == 30


def test_missing_set_lists_every_place_and_how_to_get_it(env, tmp_path, monkeypatch):
    monkeypatch.setenv("NBCNN_DATA", str(tmp_path / "envdata"))
    with pytest.raises(DatasetNotFoundError) as ei:
        data.load("mnist", "test", root=tmp_path / "given")
    err = ei.value
    assert isinstance(err, FileNotFoundError)
    msg = str(err)
    for place in (tmp_path / "given", tmp_path / "envdata", env["cache"], env["system"]):
        assert str(place) in msg
    # in search order
    assert msg.index(str(tmp_path / "given")) < msg.index(str(tmp_path / "envdata")) \
        < msg.index(str(env["cache"])) < msg.index(str(env["system"]))
    assert "t10k-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "NBCNN_NO_DOWNLOAD" in msg
    # root= was given: the advice puts the files there, not in the user cache
    assert f"nbcnn data fetch mnist --root {tmp_path / 'given'}" in msg
    assert f"into {tmp_path / 'given' / 'mnist'}/" in msg
    assert f"into {env['cache']}" not in msg
    searched = [str(p) for p in err.searched]
    assert str(tmp_path / "given" / "mnist") in searched and str(tmp_path / "given") in searched
    assert str(env["cache"] / "mnist") in searched


def test_missing_without_root_proposes_the_cache_or_nbcnn_data(env):
    with pytest.raises(DatasetNotFoundError) as ei:
        data.load("mnist", "test")
    msg = str(ei.value)
    assert "`nbcnn data fetch mnist`" in msg
    assert f"into {env['cache'] / 'mnist'}/ or <dir>/mnist/ and set NBCNN_DATA=<dir>" in msg


def test_missing_with_download_false_says_so(env, monkeypatch):
    monkeypatch.delenv("NBCNN_NO_DOWNLOAD")
    with pytest.raises(DatasetNotFoundError, match=r"download=False") as ei:
        data.load("cifar10", "train", download=False)
    assert CIFAR_TAR in str(ei.value)


def test_an_incomplete_split_is_not_found(env, tmp_path):
    written = write_idx_set(tmp_path / "d" / "mnist")
    written["test"][2][1].unlink()  # test labels gone
    assert data.find("mnist", "train", root=tmp_path / "d") is not None
    with pytest.raises(DatasetNotFoundError):
        data.load("mnist", "test", root=tmp_path / "d")


def test_bad_names_and_splits(env):
    with pytest.raises(ValueError, match="unknown data set 'imagenet'; known: mnist"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="split must be one of"):
        data.load("mnist", split="validation")
    with pytest.raises(TypeError, match="takes no options"):
        data.load("mnist", n=10)
    with pytest.raises(ValueError, match="generated"):
        data.find("shapes")


# --- downloads from a local server ------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server in a thread: ``(base_url_for(folder), stop)``; serves ``tmp_path/www``."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        yield www, base
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


def serve_mnist(www, monkeypatch, mirrors, bad_md5=()):
    """Generated MNIST .gz files in ``www/good/``, the spec patched to their checksums and to
    ``mirrors``. Files named in ``bad_md5`` get wrong published checksums."""
    written = write_idx_set(www / "good", seed=11)
    spec = sources.FILE_SETS["mnist"]
    files = {}
    for split in ("train", "test"):
        files[split] = tuple(
            dataclasses.replace(f, md5=("0" * 32 if f.name in bad_md5 else md5(p)), content_md5="")
            for f, p in zip(spec.files[split], written[split][2]))
    monkeypatch.setitem(sources.FILE_SETS, "mnist",
                        dataclasses.replace(spec, mirrors=tuple(mirrors), files=files))
    return written


@pytest.mark.parametrize("first", ["404", "refused"])
def test_download_falls_back_to_the_second_mirror(env, tmp_path, monkeypatch, server, first):
    www, base = server
    (www / "empty").mkdir()
    bad = base + "empty/" if first == "404" else closed_port_url()
    written = serve_mnist(www, monkeypatch, [bad, base + "good/"])
    monkeypatch.delenv("NBCNN_NO_DOWNLOAD")
    target = tmp_path / "target"
    ds = data.load("mnist", "test", root=target)  # downloads both splits into target/mnist
    images, labels, paths = written["test"]
    np.testing.assert_array_equal(ds.x[:, 0], scaled(images))
    np.testing.assert_array_equal(ds.y, labels)
    got = sorted(p.name for p in (target / "mnist").iterdir())
    assert got == sorted(p.name for s in ("train", "test") for p in written[s][2])
    for p in paths:
        assert (target / "mnist" / p.name).read_bytes() == p.read_bytes()
    # the download was recorded as verified
    ok, how = recorded(target / "mnist" / paths[0].name)
    assert ok and "download" in how


def test_download_goes_to_the_user_cache(env, tmp_path, monkeypatch, server):
    www, base = server
    serve_mnist(www, monkeypatch, [base + "good/"])
    got = data.fetch_set("mnist", progress=False)
    assert len(got) == 4 and all(p.parent == env["cache"] / "mnist" for p in got)
    assert data.find("mnist", "train").root_label == "user cache"
    assert data.fetch_set("mnist", progress=False) == []  # nothing left to fetch


def test_checksum_mismatch_leaves_nothing_behind(env, tmp_path, monkeypatch, server):
    www, base = server
    serve_mnist(www, monkeypatch, [base + "good/"], bad_md5={"t10k-images-idx3-ubyte.gz"})
    target = tmp_path / "target"
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte.gz") as ei:
        data.fetch_set("mnist", root=target, progress=False)
    assert "wrong checksum" in str(ei.value)
    names = os.listdir(target / "mnist")
    assert "t10k-images-idx3-ubyte.gz" not in names
    assert not [n for n in names if n.endswith(".part") or n.startswith(".")]


def test_checksum_mismatch_through_load_is_not_found(env, tmp_path, monkeypatch, server):
    www, base = server
    serve_mnist(www, monkeypatch, [base + "good/"], bad_md5={"train-labels-idx1-ubyte.gz"})
    with pytest.raises(DatasetNotFoundError, match="Downloading failed.*checksum"):
        data.load("mnist", "train", root=tmp_path / "target", download=True)


def test_every_mirror_failing_lists_each(env, tmp_path, monkeypatch, server):
    www, base = server
    (www / "empty").mkdir()
    spec = dataclasses.replace(sources.FILE_SETS["mnist"],
                               mirrors=(base + "empty/", closed_port_url()))
    monkeypatch.setitem(sources.FILE_SETS, "mnist", spec)
    with pytest.raises(DownloadError) as ei:
        data.fetch_set("mnist", root=tmp_path / "t", progress=False)
    assert len(ei.value.attempts) == 2
    assert "404" in str(ei.value) or "Not Found" in str(ei.value)
    assert not os.listdir(tmp_path / "t" / "mnist")


def test_bad_first_mirror_checksum_then_good_second(env, tmp_path, server):
    www, base = server
    (www / "a").mkdir()
    (www / "b").mkdir()
    (www / "a" / "f.bin").write_bytes(b"tampered")
    (www / "b" / "f.bin").write_bytes(b"genuine")
    spec = sources.FileSpec("f.bin", md5=hashlib.md5(b"genuine").hexdigest())
    dest = tmp_path / "t" / "f.bin"
    download_file([base + "a/f.bin", base + "b/f.bin"], dest, spec, progress=False)
    assert dest.read_bytes() == b"genuine"
    assert os.listdir(dest.parent) == ["f.bin"]


def test_cifar_tarball_download_checked_by_members(env, tmp_path, monkeypatch, server):
    www, base = server
    batches = cifar_batches(seed=4)
    _, tar = write_cifar_tarball(www / CIFAR_TAR, batches)
    spec = sources.FILE_SETS["cifar10"]
    members = {s: tuple(dataclasses.replace(m, content_md5=hashlib.md5(
        _records(batches, m.name)).hexdigest()) for m in spec.members[s]) for s in spec.members}
    # the archive's own md5 is the published one (it differs): the members' md5s decide
    monkeypatch.setitem(sources.FILE_SETS, "cifar10", dataclasses.replace(
        spec, mirrors=(closed_port_url(), base), members=members))
    monkeypatch.delenv("NBCNN_NO_DOWNLOAD")
    ds = data.load("cifar10", "test")
    np.testing.assert_array_equal(ds.x, scaled(concat_split(batches, "test")[0]))
    assert (env["cache"] / "cifar10" / CIFAR_TAR).read_bytes() == tar.read_bytes()

    # one member differing from its published md5: rejected, nothing left
    bad = dict(members)
    bad["test"] = (dataclasses.replace(members["test"][0], content_md5="0" * 32),)
    monkeypatch.setitem(sources.FILE_SETS, "cifar10", dataclasses.replace(
        spec, mirrors=(base,), members=bad))
    with pytest.raises(ChecksumError, match="test_batch.bin differ"):
        data.fetch_set("cifar10", root=tmp_path / "t", progress=False)
    assert os.listdir(tmp_path / "t" / "cifar10") == []


def _records(batches, name):
    from data_writers import cifar_records
    return cifar_records(*batches[name])


# --- checksums of found files ----------------------------------------------------------------

def test_verify_accepts_decompressed_content_md5(env, tmp_path, monkeypatch):
    written = write_idx_set(tmp_path / "d" / "mnist", gz=True)
    raw = write_idx_set(tmp_path / "r" / "mnist", gz=False)
    spec = sources.FILE_SETS["mnist"]
    import gzip
    files = {s: tuple(dataclasses.replace(f, content_md5=hashlib.md5(gzip.decompress(
        p.read_bytes())).hexdigest()) for f, p in zip(spec.files[s], written[s][2]))
        for s in spec.files}
    spec = dataclasses.replace(spec, files=files)
    for root in (tmp_path / "d", tmp_path / "r"):
        loc = data.find("mnist", "train", root=root)
        rows = verify_location(spec, loc)
        assert [ok for _, ok, _ in rows] == [True, True], rows
    assert raw  # the raw files are the same content, so their plain md5 is the content md5


def test_verify_cifar_folder_and_tarball(env, tmp_path):
    write_cifar_folder(tmp_path / "d", layout="nested")
    write_cifar_tarball(tmp_path / "t" / CIFAR_TAR)
    spec = sources.FILE_SETS["cifar10"]
    rows = verify_location(spec, data.find("cifar10", "train", root=tmp_path / "d"))
    assert len(rows) == 5 and not any(ok for _, ok, _ in rows)
    rows = verify_location(spec, data.find("cifar10", "test", root=tmp_path / "t"))
    assert len(rows) == 1 and not rows[0][1] and "differ" in rows[0][2]


# --- the command line ------------------------------------------------------------------------

def test_cli_list(env, tmp_path, monkeypatch, capsys):
    write_idx_set(tmp_path / "d" / "mnist")
    write_cifar_folder(tmp_path / "d")
    assert cli.main(["data", "--root", str(tmp_path / "d"), "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in ("mnist", "fashion-mnist", "cifar10", "shapes"):
        assert any(line.startswith(name + " ") for line in lines), out
    mnist = [line for line in lines if line.startswith("mnist ")]
    assert len(mnist) == 2 and all("not verified yet" in line for line in mnist)
    assert all("missing" in line for line in lines if line.startswith("fashion-mnist"))
    assert sum("missing" in line for line in lines if line.startswith("cifar10")) == 0
    assert "generated" in [line for line in lines if line.startswith("shapes")][0]


def test_cli_verify_generated_files_mismatch(env, tmp_path, capsys):
    write_idx_set(tmp_path / "d" / "mnist")
    assert cli.main(["data", "verify", "mnist", "--root", str(tmp_path / "d")]) == 1
    out = capsys.readouterr().out
    assert out.count("BAD") == 4 and "train-images-idx3-ubyte.gz" in out
    # the result is remembered (in the user cache) and shown by list
    assert (env["cache"] / "verified.json").is_file()
    assert cli.main(["data", "list", "--root", str(tmp_path / "d")]) == 0
    assert "CHECKSUM MISMATCH" in capsys.readouterr().out


def test_cli_verify_matching_files(env, tmp_path, monkeypatch, capsys):
    written = write_idx_set(tmp_path / "d" / "mnist")
    spec = sources.FILE_SETS["mnist"]
    files = {s: tuple(dataclasses.replace(f, md5=md5(p)) for f, p in
                      zip(spec.files[s], written[s][2])) for s in spec.files}
    monkeypatch.setitem(sources.FILE_SETS, "mnist", dataclasses.replace(spec, files=files))
    assert cli.main(["data", "verify", "mnist", "--root", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().out.count("ok ") == 4
    cli.main(["data", "list", "--root", str(tmp_path / "d")])
    assert "verified (published md5)" in capsys.readouterr().out


def test_cli_verify_missing_set(env, capsys):
    assert cli.main(["data", "verify", "mnist"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_fetch_with_downloads_off(env, tmp_path, capsys):
    assert cli.main(["data", "fetch", "mnist", "--root", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "NBCNN_NO_DOWNLOAD" in err and "mnist" in err
    assert not (tmp_path / "t" / "mnist").exists() or not os.listdir(tmp_path / "t" / "mnist")


def test_cli_fetch_failing_mirrors_is_a_clear_error(env, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NBCNN_NO_DOWNLOAD")
    spec = dataclasses.replace(sources.FILE_SETS["mnist"], mirrors=(closed_port_url(),))
    monkeypatch.setitem(sources.FILE_SETS, "mnist", spec)
    assert cli.main(["data", "fetch", "mnist", "--root", str(tmp_path / "t")]) == 2
    assert "could not download" in capsys.readouterr().err


def test_cli_fetch_when_present_fetches_nothing(env, tmp_path, capsys):
    write_idx_set(tmp_path / "d" / "mnist")
    assert cli.main(["data", "fetch", "mnist", "--root", str(tmp_path / "d")]) == 0
    assert "already" in capsys.readouterr().out


def test_cli_generated_set_has_no_files(env, capsys):
    assert cli.main(["data", "verify", "shapes"]) == 2
    assert "generated" in capsys.readouterr().err


def test_cli_verify_cifar_tarball_checked_once(env, tmp_path, capsys):
    write_cifar_tarball(tmp_path / "d" / CIFAR_TAR)
    assert cli.main(["data", "verify", "cifar10", "--root", str(tmp_path / "d")]) == 1
    out = capsys.readouterr().out
    assert out.count("BAD") == 1 and CIFAR_TAR in out


def test_cli_verify_cifar_folder(env, tmp_path, capsys):
    write_cifar_folder(tmp_path / "d", layout="top")
    assert cli.main(["data", "verify", "cifar10", "--root", str(tmp_path / "d")]) == 1
    assert capsys.readouterr().out.count("BAD") == 6


def test_cli_list_shows_verified_state_of_a_cifar_folder(env, tmp_path, capsys):
    write_cifar_folder(tmp_path / "d", layout="nested")
    cli.main(["data", "verify", "cifar10", "--root", str(tmp_path / "d")])
    capsys.readouterr()
    cli.main(["data", "list", "--root", str(tmp_path / "d")])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cifar10")]
    assert len(lines) == 2 and all("CHECKSUM MISMATCH" in line for line in lines), lines
