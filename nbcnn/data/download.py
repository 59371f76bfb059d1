"""Downloads: mirrors tried in order, progress bar, checksum checked before the file is named.

A download goes to a hidden ``.<name>.*.part`` file next to its target and is renamed
(``os.replace``, atomic) only once its checksum matches, so an interrupted or corrupt download never
leaves a file that looks complete.
"""

from __future__ import annotations

import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .checksums import check_file, record
from .errors import ChecksumError, DownloadError
from .locate import download_dir, idx_names
from .sources import FileSpec, SetSpec, SPLITS

TIMEOUT = 30  # seconds without data before a mirror counts as failed
_CHUNK = 1 << 16


def no_download_env() -> bool:
    """True when ``NBCNN_NO_DOWNLOAD`` forbids downloads (any value but '', '0', 'false', 'no')."""
    return os.environ.get("NBCNN_NO_DOWNLOAD", "").strip().lower() not in ("", "0", "false", "no")


def _open(url: str, timeout: float):
    """Open ``url`` (http, https or file). A seam for tests."""
    req = urllib.request.Request(url, headers={"User-Agent": "nbcnn-data"})
    return urllib.request.urlopen(req, timeout=timeout)


def _copy(resp, out, desc: str, progress: bool) -> int:
    length = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
    total = int(length) if length and length.isdigit() else None
    written = 0
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
              disable=not progress, leave=False) as bar:
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            out.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    if total is not None and written != total:
        raise OSError(f"connection closed after {written} of {total} bytes")
    return written


def download_file(urls, dest, spec: FileSpec, members=(), progress: bool = True,
                  timeout: float = TIMEOUT) -> Path:
    """Fetch the first of ``urls`` that works and whose checksum matches ``spec`` into ``dest``.

    Raises ChecksumError if every mirror served a file with the wrong checksum, DownloadError
    (listing each mirror's failure) otherwise. Nothing is left at ``dest`` on failure.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempts, mismatches = [], 0
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, _open(url, timeout) as resp:
                _copy(resp, out, dest.name, progress)
            ok, how = check_file(tmp, spec, members)
            if not ok:
                mismatches += 1
                attempts.append((url, f"checksum mismatch: {how}"))
                continue
            os.replace(tmp, dest)
            record(dest, True, f"{how} (checked at download)")
            return dest
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError):  # the status code says most (404, 403...)
                attempts.append((url, f"HTTP {e.code} {e.reason}"))
            else:
                reason = getattr(e, "reason", None) or e
                attempts.append((url, f"{type(e).__name__}: {reason}"))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lines = "\n".join(f"  - {u}: {r}" for u, r in attempts) or "  (no mirrors)"
    if attempts and mismatches == len(attempts):
        raise ChecksumError(dest, f"every mirror served a file with the wrong checksum:\n{lines}")
    raise DownloadError(f"could not download {dest.name}:\n{lines}", attempts)


def _present(folder: Path, f: FileSpec) -> bool:
    return any((folder / n).is_file() for n in idx_names(f.stem))


def fetch(spec: SetSpec, root=None, progress: bool = True, timeout: float = TIMEOUT) -> list:
    """Download the files of ``spec`` that are not yet in its download folder (``root``/<set>
    or the user cache). Returns the paths of the files fetched."""
    folder = download_dir(spec, root)
    got = []
    if spec.kind == "cifar":
        target = folder / spec.archive.name
        if not target.is_file():
            members = [m for s in SPLITS for m in spec.members[s]]
            got.append(download_file([m + spec.archive.name for m in spec.mirrors], target,
                                     spec.archive, members, progress, timeout))
        return got
    for f in spec.download_files():
        if not _present(folder, f):
            got.append(download_file([m + f.name for m in spec.mirrors], folder / f.name, f,
                                     (), progress, timeout))
    return got
