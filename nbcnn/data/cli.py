"""``nbcnn data list | fetch NAME | verify NAME``: where the data sets are, and are they intact."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="list, fetch or verify data sets", description=__doc__)
    p.add_argument("--root", default=None, help="data folder searched first (and where fetch writes)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="each set: where it was found, or that it is missing")
    fetch = actions.add_parser("fetch", help="download a set's missing files (checksums verified)",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fetch.add_argument("name")
    verify = actions.add_parser("verify", help="check a found set's files against the published checksums")
    verify.add_argument("name")


def _status(path) -> str:
    from .checksums import recorded
    seen = recorded(path)
    if seen is None:
        return "not verified yet (nbcnn data verify)"
    ok, how = seen
    return f"verified ({how})" if ok else f"CHECKSUM MISMATCH ({how})"


def run(args) -> int:
    from . import FILE_SETS, cache_dir, canonical_name, fetch_set, find, names
    from .checksums import record, verify_location
    from .sources import SPLITS

    if args.action == "list":
        print(f"search order: root=, $NBCNN_DATA, {cache_dir()}, system folders, then download\n")
        for name in names():
            if name not in FILE_SETS:
                print(f"{name:14s} generated on demand (no files)")
                continue
            for split in SPLITS:
                loc = find(name, split, args.root)
                if loc is None:
                    print(f"{name:14s} {split:5s}  missing (nbcnn data fetch {name})")
                else:
                    statuses = sorted({_status(p) for p in loc.paths})
                    print(f"{name:14s} {split:5s}  {loc.describe()}  [{'; '.join(statuses)}]")
        return 0

    name = canonical_name(args.name)
    if name not in FILE_SETS:
        raise ValueError(f"{name!r} is generated: it has no files to {args.action}")
    if args.action == "fetch":
        paths = fetch_set(name, args.root)
        print("\n".join(f"have {p}" for p in paths) or f"{name}: nothing to fetch")
        return 0

    bad = 0
    for split in SPLITS:
        loc = find(name, split, args.root)
        if loc is None:
            raise FileNotFoundError(f"{name} {split}: not found; run 'nbcnn data list' to see where "
                                    f"it was searched, or 'nbcnn data fetch {name}'")
        for path, ok, how in verify_location(FILE_SETS[name], loc):
            record(path, ok, how)
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'}  {path}  ({how})")
    return 1 if bad else 0
