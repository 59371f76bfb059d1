"""Where data files are looked for, in order:

1. ``root=`` given to ``load`` (its sub-folders, then the folder itself);
2. ``$NBCNN_DATA`` (one folder, or several joined with ``os.pathsep``);
3. the user cache, ``$XDG_CACHE_HOME/nbcnn`` or ``~/.cache/nbcnn`` (where downloads go);
4. system folders (``/usr/share/datasets``: Debian's ``dataset-fashion-mnist`` puts
   Fashion-MNIST in ``/usr/share/datasets/fashion-mnist/``).

Inside a root, a set lives in one of its sub-folders (``mnist/``, ``MNIST/raw/``,
``fashion-mnist/``, ``cifar10/`` ...; see ``sources``). CIFAR-10 may also sit at the top of any
root (its file names are unique); MNIST-like files (whose names are the same for MNIST and
Fashion-MNIST) are taken from the top of a root only when it was given as ``root=``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetNotFoundError
from .sources import SetSpec

SYSTEM_DIRS = ("/usr/share/datasets", "/usr/local/share/datasets")


def cache_dir() -> Path:
    """The user cache folder for nbcnn data (honours ``XDG_CACHE_HOME``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nbcnn"


def check_root(root) -> None:
    """Refuse a ``root=`` (``--data-root``) that is a file: data sets live in folders. (A folder
    that does not exist yet is fine: a download creates it.)"""
    if root is not None:
        path = os.path.expanduser(os.fspath(root))
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotADirectoryError(f"data root {path} is a file, not a folder")


def search_roots(root=None) -> list:
    """``[(label, Path), ...]`` in search order."""
    roots = []
    if root is not None:
        check_root(root)
        roots.append(("root=", Path(os.path.expanduser(os.fspath(root)))))
    for part in os.environ.get("NBCNN_DATA", "").split(os.pathsep):
        if part.strip():
            roots.append(("$NBCNN_DATA", Path(os.path.expanduser(part.strip()))))
    roots.append(("user cache", cache_dir()))
    roots.extend(("system", Path(d)) for d in SYSTEM_DIRS)
    return roots


def candidate_folders(spec: SetSpec, label: str, root: Path) -> list:
    folders = [root / sub for sub in spec.subdirs]
    if label == "root=" or spec.kind == "cifar":
        folders.append(root)
    return folders


def download_dir(spec: SetSpec, root=None) -> Path:
    """Where a download of ``spec`` is written: under ``root`` if given, else the user cache."""
    base = Path(os.path.expanduser(os.fspath(root))) if root is not None else cache_dir()
    return base / spec.subdirs[0]


@dataclass
class Location:
    """Where one split of a set was found.

    kind ``"idx"``: ``paths = [images, labels]``; ``"cifar-dir"``: ``paths = [folder]`` holding
    the batch files; ``"cifar-tar"``: ``paths = [tarball]``.
    """

    name: str
    split: str
    kind: str
    paths: list
    root_label: str
    folder: Path

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.paths)


def idx_names(stem: str) -> list:
    """Accepted names of an IDX file: published ``.gz``, decompressed, and the dotted variant
    (``train-images.idx3-ubyte``) some redistributions use."""
    dotted = stem.replace("-idx", ".idx", 1)
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def _first_file(folder: Path, names) -> Path | None:
    for n in names:
        p = folder / n
        if p.is_file():
            return p
    return None


def _probe(spec: SetSpec, split: str, folder: Path):
    """(kind, paths) if ``folder`` holds the split, else None."""
    if not folder.is_dir():
        return None
    if spec.kind == "idx":
        paths = [_first_file(folder, idx_names(f.stem)) for f in spec.files[split]]
        return ("idx", paths) if all(paths) else None
    members = [m.name for m in spec.members[split]]
    for sub in (folder / spec.archive_dir, folder):
        if all((sub / m).is_file() for m in members):
            return "cifar-dir", [sub]
    tar = folder / spec.archive.name
    if tar.is_file():
        return "cifar-tar", [tar]
    return None


def locate(spec: SetSpec, split: str, root=None) -> Location | None:
    """The first place holding ``split`` of ``spec``, or None."""
    for label, r in search_roots(root):
        for folder in candidate_folders(spec, label, r):
            hit = _probe(spec, split, folder)
            if hit:
                return Location(spec.name, split, hit[0], hit[1], label, folder)
    return None


def expected_files(spec: SetSpec, split: str) -> str:
    if spec.kind == "idx":
        return " and ".join(f"{f.stem}[.gz]" for f in spec.files[split])
    return f"{spec.archive.name} or an extracted {spec.archive_dir}/"


def not_found(spec: SetSpec, split: str, root=None, download_note: str = "") -> DatasetNotFoundError:
    """The error for a set that is nowhere: every place searched and how to get the files."""
    lines = [f"data set {spec.name!r} ({split}) not found: looked for "
             f"{expected_files(spec, split)} in these folders, in order:"]
    searched = []
    for label, r in search_roots(root):
        folders = candidate_folders(spec, label, r)
        searched.extend(folders)
        lines.append(f"  - {r}  ({label}; sub-folders {', '.join(s + '/' for s in spec.subdirs)}"
                     f"{' and the folder itself' if r in folders else ''})")
    if download_note:
        lines.append(download_note)
    urls = [m + f.name for f in spec.download_files() for m in spec.mirrors[:1]]
    if root is not None:                    # the user chose a folder: the files go there
        place = f"{download_dir(spec, root)}/"
        fetch = f"nbcnn data fetch {spec.name} --root {root}"
    else:
        place = (f"{download_dir(spec)}/ or <dir>/{spec.subdirs[0]}/ and set NBCNN_DATA=<dir> "
                 f"(or pass root=<dir>)")
        fetch = f"nbcnn data fetch {spec.name}"
    lines.append(
        f"To get it: run `{fetch}` on a machine with network access, or download "
        f"{', '.join(urls)} (see {spec.homepage}) into {place}.")
    return DatasetNotFoundError("\n".join(lines), searched)
