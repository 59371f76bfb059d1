"""IDX files (the MNIST format), gzipped or not.

Layout: two zero bytes, a type code, the number of dimensions ``nd``, then ``nd`` big-endian
uint32 sizes, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from .errors import DataFormatError

# type code -> big-endian dtype
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
#: deflate never packs more than 1032 bytes into one (its best case: long runs of one byte), so a
#: gzip file of n bytes cannot inflate to more than about 1032 * n
DEFLATE_MAX_RATIO = 1032


def read_file_bytes(path) -> bytes:
    """The file's bytes, decompressed if it is gzip (told by its magic, not its name)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataFormatError(path, f"corrupt or truncated gzip data ({e})") from None


def parse_idx(buf: bytes, path="<bytes>") -> np.ndarray:
    """Decode an IDX payload into a native-endian array; DataFormatError naming ``path``."""
    n = len(buf)
    if n < 4:
        raise DataFormatError(path, f"not an IDX file: {n} bytes, shorter than the 4-byte magic")
    if buf[0] != 0 or buf[1] != 0 or buf[2] not in IDX_TYPES:
        raise DataFormatError(
            path, f"not an IDX file: bad magic {buf[:4].hex()} (expected 0000 then a type code "
                  f"in {sorted(hex(k) for k in IDX_TYPES)} and the number of dimensions)")
    dtype = IDX_TYPES[buf[2]]
    nd = buf[3]
    header = 4 + 4 * nd
    if nd == 0:
        raise DataFormatError(path, "IDX header declares 0 dimensions")
    if n < header:
        raise DataFormatError(path, f"truncated IDX header: {nd} dimensions need {header} bytes, "
                                    f"file has {n}")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=nd, offset=4))
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow on absurd headers
    got = n - header
    if got < expected:
        raise DataFormatError(path, f"truncated: header says {' x '.join(map(str, dims))} values "
                                    f"({expected} bytes) but only {got} data bytes follow")
    if got > expected:
        raise DataFormatError(path, f"sizes disagree with the header: {' x '.join(map(str, dims))} "
                                    f"values need {expected} bytes but {got} data bytes follow")
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _header_size(head: bytes) -> int | None:
    """Bytes of the IDX header that starts ``head`` (its first 4 bytes), None if not IDX."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_TYPES or not head[3]:
        return None
    return 4 + 4 * head[3]


def read_gzip_idx_bytes(path) -> bytes:
    """The IDX payload of a gzip file, inflating no more than its header promises: the header
    is read first (from the first bytes of the stream) and checked, against what a gzip file of
    this size can hold too, so a small file that inflates to gigabytes is refused before."""
    path = os.fspath(path)
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(4)
            size = _header_size(head)
            if size is None:
                return head                       # parse_idx says what is wrong with it
            head += f.read(size - 4)
            if len(head) < size:
                return head
            dims = [int(d) for d in np.frombuffer(head, dtype=">u4", count=head[3], offset=4)]
            expected = math.prod(dims) * IDX_TYPES[head[2]].itemsize
            bound = DEFLATE_MAX_RATIO * os.path.getsize(path)
            if expected > bound:
                raise DataFormatError(
                    path, f"header says {' x '.join(map(str, dims))} values ({expected} bytes) "
                          f"but a gzip file of {os.path.getsize(path)} bytes cannot inflate to "
                          f"more than {bound} bytes: truncated or not an IDX file")
            body = f.read(expected + 1)           # one more: is there data past the values?
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataFormatError(path, f"corrupt or truncated gzip data ({e})") from None
    if len(body) > expected:
        raise DataFormatError(path, f"sizes disagree with the header: {' x '.join(map(str, dims))}"
                                    f" values need {expected} bytes but more data bytes follow")
    return head + body


def read_idx(path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw). Read-only view for uint8 data, no copy. A gzip file's
    header is checked before the rest is inflated (``read_gzip_idx_bytes``)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        gz = f.read(2) == GZIP_MAGIC
    buf = read_gzip_idx_bytes(path) if gz else read_file_bytes(path)
    return parse_idx(buf, path)


def read_idx_pair(images_path, labels_path, num_classes: int):
    """Images (N, H, W) uint8 and labels (N,) uint8 of an MNIST-like split, checked together."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(images_path, f"expected 3-D uint8 images (N, H, W), got "
                                           f"{images.ndim}-D {images.dtype}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataFormatError(labels_path, f"expected 1-D uint8 labels, got {labels.ndim}-D "
                                           f"{labels.dtype}")
    if len(images) != len(labels):
        raise DataFormatError(labels_path, f"{len(labels)} labels but {images_path} has "
                                           f"{len(images)} images")
    if labels.size and labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataFormatError(labels_path, f"label {labels[bad]} at index {bad} is out of range "
                                           f"0..{num_classes - 1}")
    return images, labels
