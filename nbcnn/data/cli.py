"""``nbcnn data list | fetch NAME | verify NAME``.

``add_parser(subparsers)`` registers the ``data`` sub-command on the main argparse parser;
``run(args)`` executes it and returns the exit status. ``python -m nbcnn.data ...`` runs it alone.
"""

from __future__ import annotations

import argparse
import sys

from tqdm.auto import tqdm

from . import checksums
from .download import fetch
from .errors import ChecksumError, DataFormatError, DownloadError
from .locate import cache_dir, download_dir, locate
from .sources import FILE_SETS, NAMES, SPLITS, canonical_name


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="list, download and verify data sets",
                              description="List, download and verify the data sets.")
    p.add_argument("--root", metavar="DIR", default=None,
                   help="a data folder searched first, and where fetch writes "
                        "(default: search $NBCNN_DATA, the user cache, system folders; "
                        "fetch writes to the user cache)")
    sub = p.add_subparsers(dest="data_command", metavar="{list,fetch,verify}")
    sub.required = True
    sub.add_parser("list", help="each data set: where it was found, or that it is missing, "
                                "and its checksum status")
    for cmd, text in (("fetch", "download a data set's missing files (with checksum check)"),
                      ("verify", "check the checksums of a data set's files")):
        q = sub.add_parser(cmd, help=text)
        q.add_argument("name", help=f"one of {', '.join(FILE_SETS)}, or 'all'")
        q.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _targets(name: str) -> list:
    if name == "all":
        return list(FILE_SETS)
    name = canonical_name(name)
    if name not in FILE_SETS:
        raise ValueError(f"{name!r} is generated from a seed; it has no files")
    return [name]


def _status(path) -> str:
    rec = checksums.recorded(path)
    if rec is None:
        return "checksum not verified"
    return f"checksum ok ({rec[1]})" if rec[0] else f"CHECKSUM FAILED ({rec[1]})"


def cmd_list(args, out) -> int:
    print(f"user cache: {cache_dir()}", file=out)
    for name in NAMES:
        if name not in FILE_SETS:
            print(f"{name}: generated, needs no file", file=out)
            continue
        spec = FILE_SETS[name]
        print(f"{name}:", file=out)
        for split in SPLITS:
            loc = locate(spec, split, args.root)
            if loc is None:
                print(f"  {split}: missing (`nbcnn data fetch {name}` downloads it to "
                      f"{download_dir(spec, args.root)})", file=out)
                continue
            print(f"  {split}: found via {loc.root_label}", file=out)
            for p in loc.paths:
                print(f"    {p}: {_status(p)}", file=out)
    return 0


def cmd_fetch(args, out) -> int:
    rc = 0
    for name in _targets(args.name):
        spec = FILE_SETS[name]
        locs = [locate(spec, s, args.root) for s in SPLITS]
        if all(locs):
            print(f"{name}: already present ({', '.join(loc.describe() for loc in locs)})",
                  file=out)
            continue
        try:
            got = fetch(spec, args.root, progress=not args.quiet)
        except (DownloadError, ChecksumError, OSError) as e:
            print(f"{name}: download failed: {e}", file=out)
            rc = 1
            continue
        print(f"{name}: fetched {', '.join(map(str, got)) or 'nothing'} "
              f"into {download_dir(spec, args.root)}", file=out)
    return rc


def cmd_verify(args, out) -> int:
    rc = 0
    for name in _targets(args.name):
        spec = FILE_SETS[name]
        done = set()
        for split in SPLITS:
            loc = locate(spec, split, args.root)
            if loc is None:
                print(f"{name} {split}: missing", file=out)
                rc = 1
                continue
            key = tuple(map(str, loc.paths))
            if key in done:
                continue  # both splits come from one tarball
            done.add(key)
            with tqdm(total=1, desc=f"{name} {split}", disable=args.quiet, leave=False) as bar:
                try:
                    rows = checksums.verify_location(spec, loc)
                except (DataFormatError, OSError) as e:
                    rows = [(getattr(e, "path", loc.describe()), False, str(e))]
                bar.update(1)
            for path, ok, how in rows:
                checksums.record(path, ok, how)
                print(f"{name} {split}: {path}: {'ok' if ok else 'FAILED'} ({how})", file=out)
                rc |= 0 if ok else 1
    return rc


def run(args, out=None) -> int:
    out = out or sys.stdout
    try:
        return {"list": cmd_list, "fetch": cmd_fetch, "verify": cmd_verify}[
            args.data_command](args, out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nbcnn")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    return run(args)
