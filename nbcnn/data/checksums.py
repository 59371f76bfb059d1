"""Checksums of data files, and a small JSON record of which local files were verified.

Hashing CIFAR-10 takes seconds, so loads do not hash: ``nbcnn data verify`` (and every download)
does, and records the result keyed by path, size and modification time in
``<user cache>/verified.json``; ``nbcnn data list`` shows it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import zlib

from .cifar import read_members
from .errors import DataFormatError
from .idx import GZIP_MAGIC
from .locate import cache_dir
from .sources import FileSpec, SetSpec, SPLITS

_BLOCK = 1 << 20


def file_digests(path) -> tuple:
    """(md5, sha256) hex digests of a file's bytes."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def is_gzip(path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def gunzip_md5(path) -> str:
    """md5 of a gzip file's decompressed content."""
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                md5.update(block)
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(path, f"corrupt or truncated gzip data ({e})") from None
    return md5.hexdigest()


def check_file(path, spec: FileSpec, members=()) -> tuple:
    """``(ok, how)``: does ``path`` match ``spec``'s published md5/sha256, or (for a
    recompressed copy) the md5 of its decompressed content? For an archive, ``members`` (FileSpecs
    with ``content_md5``) are checked when the archive's own md5 differs."""
    md5, sha = file_digests(path)
    if spec.md5 and md5 == spec.md5:
        return True, "published md5"
    if spec.sha256 and sha == spec.sha256:
        return True, "published sha256"
    if members:
        try:
            blobs = read_members(path, [m.name for m in members])
        except DataFormatError as e:
            return False, f"archive md5 {md5} differs from the published {spec.md5} and {e.problem}"
        bad = [m.name for m in members
               if hashlib.md5(blobs[m.name], usedforsecurity=False).hexdigest() != m.content_md5]
        if bad:
            return False, f"member(s) {', '.join(bad)} differ from the published md5"
        return True, "md5 of every member"
    if spec.content_md5:
        if is_gzip(path):
            try:
                inner = gunzip_md5(path)
            except DataFormatError as e:
                return False, e.problem
            if inner == spec.content_md5:
                return True, "md5 of decompressed content"
            return False, (f"md5 {md5} matches no published one; decompressed md5 {inner}, "
                           f"expected {spec.content_md5}")
        if md5 == spec.content_md5:
            return True, "md5 of the decompressed file"
    expected = " or ".join(x for x in (spec.md5, spec.content_md5) if x)
    return False, f"md5 {md5} matches no published one (expected {expected})"


def verify_location(spec: SetSpec, loc) -> list:
    """``[(path, ok, how), ...]`` for the files of one found split (see locate.Location)."""
    if loc.kind == "idx":
        return [(p, *check_file(p, f)) for p, f in zip(loc.paths, spec.files[loc.split])]
    if loc.kind == "cifar-tar":
        members = [m for s in SPLITS for m in spec.members[s]]
        return [(loc.paths[0], *check_file(loc.paths[0], spec.archive, members))]
    rows = []
    for m in spec.members[loc.split]:
        p = loc.paths[0] / m.name
        md5 = file_digests(p)[0]
        ok = md5 == m.content_md5
        rows.append((p, ok, "published md5" if ok else f"md5 {md5}, expected {m.content_md5}"))
    return rows


# --- the record of verified files ------------------------------------------------------------

def _stamps_path():
    return cache_dir() / "verified.json"


def _read_stamps() -> dict:
    try:
        with open(_stamps_path(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _key(path):
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns


def record(path, ok: bool, how: str) -> None:
    """Remember a checksum result for ``path`` (ignored if the cache is not writable)."""
    try:
        real, size, mtime = _key(path)
        stamps = _read_stamps()
        stamps[real] = {"size": size, "mtime_ns": mtime, "ok": bool(ok), "how": how}
        target = _stamps_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".verified-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(stamps, f, indent=1, sort_keys=True)
        os.replace(tmp, target)
    except OSError:
        pass


def recorded(path):
    """The recorded ``(ok, how)`` for ``path`` if it has not changed since, else None."""
    try:
        real, size, mtime = _key(path)
    except OSError:
        return None
    s = _read_stamps().get(real)
    if isinstance(s, dict) and s.get("size") == size and s.get("mtime_ns") == mtime:
        return bool(s.get("ok")), str(s.get("how", ""))
    return None
