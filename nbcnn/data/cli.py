"""``nbcnn data list | fetch NAME | verify NAME``: where the data sets are, and are they intact."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="list, fetch or verify data sets", description=__doc__)
    root_help = "data folder searched first (and where fetch writes)"
    p.add_argument("--root", default=None, help=root_help)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lister = actions.add_parser("list", help="each set: where it was found, or that it is missing")
    fetch = actions.add_parser("fetch", help="download a set's missing files (checksums verified)")
    fetch.add_argument("name")
    verify = actions.add_parser("verify", help="check a found set's files against the published checksums")
    verify.add_argument("name")
    # --root is accepted after the action too (nbcnn data verify mnist --root DIR); SUPPRESS keeps
    # a value given before the action when it is not repeated after it
    for action in (lister, fetch, verify):
        action.add_argument("--root", default=argparse.SUPPRESS, help=root_help)


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
    from .download import no_download_env
    from .errors import DownloadError
    from .locate import download_dir
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
                    files = loc.paths
                    if loc.kind == "cifar-dir":  # verify records each batch file, not the folder
                        files = [loc.paths[0] / m.name for m in FILE_SETS[name].members[split]]
                    statuses = sorted({_status(p) for p in files})
                    print(f"{name:14s} {split:5s}  {loc.describe()}  [{'; '.join(statuses)}]")
        return 0

    name = canonical_name(args.name)
    if name not in FILE_SETS:
        raise ValueError(f"{name!r} is generated: it has no files to {args.action}")
    if args.action == "fetch":
        found = [find(name, split, args.root) for split in SPLITS]
        if all(found):
            print(f"{name}: already present, nothing to fetch")
            for loc in found:
                print(f"  {loc.split:5s} {loc.describe()}")
            return 0
        if no_download_env():
            raise RuntimeError(
                f"cannot fetch {name}: downloading is off (NBCNN_NO_DOWNLOAD is set). Unset it on "
                f"a machine with network access, or copy the files into "
                f"{download_dir(FILE_SETS[name], args.root)}/ (see 'nbcnn data list')")
        try:
            paths = fetch_set(name, args.root)
        except DownloadError as e:  # an OSError: the command's error handler wants RuntimeError
            raise RuntimeError(str(e)) from e
        print("\n".join(f"have {p}" for p in paths) or f"{name}: nothing to fetch")
        return 0

    bad = 0
    checked = set()
    for split in SPLITS:
        loc = find(name, split, args.root)
        if loc is None:
            raise FileNotFoundError(f"{name} {split}: not found; run 'nbcnn data list' to see where "
                                    f"it was searched, or 'nbcnn data fetch {name}'")
        if loc.kind == "cifar-tar":  # one archive holds both splits: hash it once
            if loc.paths[0] in checked:
                continue
            checked.add(loc.paths[0])
        for path, ok, how in verify_location(FILE_SETS[name], loc):
            record(path, ok, how)
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'}  {path}  ({how})")
    return 1 if bad else 0
