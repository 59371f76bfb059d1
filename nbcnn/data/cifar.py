"""CIFAR-10 "binary version": records of 1 label byte + 3072 pixel bytes (R, G, B planes, 32x32).

Read from the published tarball (``cifar-10-binary.tar.gz``, members are read in memory in one
streaming pass, nothing is extracted to disk) or from its extracted ``cifar-10-batches-bin/``.
The python version of CIFAR (pickles) is deliberately not supported.
"""

from __future__ import annotations

import os
import tarfile
import zlib

import numpy as np

from .errors import DataFormatError

IMAGE_SHAPE = (3, 32, 32)
RECORD = 1 + 3 * 32 * 32


def parse_batch(buf: bytes, path="<bytes>", num_classes: int = 10):
    """Decode one batch file: images (n, 3, 32, 32) uint8, labels (n,) uint8."""
    n, rest = divmod(len(buf), RECORD)
    if rest or n == 0:
        raise DataFormatError(path, f"size {len(buf)} bytes is not a positive whole number of "
                                    f"{RECORD}-byte CIFAR records (1 label + 3072 pixels); "
                                    f"truncated or not a CIFAR-10 binary batch")
    records = np.frombuffer(buf, dtype=np.uint8).reshape(n, RECORD)
    labels = records[:, 0]
    if labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataFormatError(path, f"label {labels[bad]} in record {bad} is out of range "
                                    f"0..{num_classes - 1}")
    images = records[:, 1:].reshape(n, *IMAGE_SHAPE)
    return images, labels


def _concat(parts):
    if len(parts) == 1:
        return parts[0]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def read_folder(folder, members, num_classes: int = 10):
    """Read and concatenate the batch files ``members`` of an extracted folder."""
    folder = os.fspath(folder)
    parts = []
    for name in members:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DataFormatError(folder, f"missing batch file {name}")
        with open(path, "rb") as f:
            parts.append(parse_batch(f.read(), path, num_classes))
    return _concat(parts)


def read_members(tar_path, members) -> dict:
    """The bytes of the members (matched by base name) of a tarball, in one streaming pass."""
    tar_path = os.fspath(tar_path)
    wanted = set(members)
    found = {}
    seen = []
    try:
        with tarfile.open(tar_path, "r|*", bufsize=1 << 20) as tf:
            for info in tf:
                base = info.name.rsplit("/", 1)[-1]
                seen.append(info.name)
                if info.isfile() and base in wanted and base not in found:
                    found[base] = tf.extractfile(info).read()
                    if len(found[base]) != info.size:
                        raise DataFormatError(tar_path, f"member {info.name} is truncated")
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DataFormatError(tar_path, f"corrupt or truncated tar archive ({e})") from None
    missing = [m for m in members if m not in found]
    if missing:
        raise DataFormatError(tar_path, f"tarball has no member {', '.join(missing)} "
                                        f"(members: {', '.join(seen) or 'none'})")
    return found


def read_tarball(tar_path, members, num_classes: int = 10):
    """Read and concatenate the batch files ``members`` straight from the tarball."""
    blobs = read_members(tar_path, members)
    return _concat([parse_batch(blobs[m], f"{os.fspath(tar_path)}:{m}", num_classes)
                    for m in members])
