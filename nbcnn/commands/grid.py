"""``nbcnn grid FILE``: run a study's grid of cells, resumably, into ``results/<study>/``."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("grid", help="run an experiment grid (a TOML file)", description=__doc__,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("file", metavar="FILE", help="grid file, e.g. experiments/quickstart.toml")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="results folder (default: the grid's 'results', else 'results')")
    p.add_argument("--dry-run", action="store_true",
                   help="check the file and print the cells as a table; run nothing")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                   help="run only the cells with this setting (repeatable: different keys must "
                        "all match, one key given twice matches either); 'key=PREFIX' picks cells "
                        "by their key")
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local: on this machine, as many cells at once as pays (see --workers); "
                        "dask: one task per cell")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running Dask scheduler (implies --executor dask)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="cells run at once (local) or workers of the local Dask cluster; default "
                        "local: one per core (a lone cell gets every core); dask: cores / threads "
                        "per cell")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads per cell of the local executor (default: see --workers; a "
                        "cell's own 'threads' setting wins)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="folder searched first for data files")
    p.add_argument("--plot", action="store_true", help="draw the figures when done "
                   "(also when the grid file says plot = true)")
    p.add_argument("--force", action="store_true",
                   help="run into a results folder whose runs have other fixed settings "
                        "(mixing studies that are not comparable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from nbcnn import harness
    from nbcnn.data.locate import check_root

    grid = harness.load_grid(args.file)
    check_root(args.data_root)          # before any cell runs, not once per failed cell
    for name in ("workers", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if args.dry_run:
        table = harness.plan(grid, args.results, args.only)
        print(f"{grid.name}: {len(table)} cells"
              + (f" of {len(grid.cells)}" if len(table) != len(grid.cells) else "")
              + f" -> {harness.study_dir(grid, args.results)}")
        if grid.description:
            print(grid.description.strip())
        print(table.to_string(index=False))
        progress = harness.progress_line(table)
        if progress:
            print(progress)
        if args.executor == "local" and not args.scheduler:
            from nbcnn.harness.executors import plan_local
            todo = {k for k, st in zip(table["key"], table["status"]) if st != "ok"}
            cells = [c for c in harness.filter_cells(grid.cells, args.only, grid.path)
                     if c.key in todo]
            for group, at_once, threads in plan_local(cells, args.workers, args.threads):
                print(f"local executor: {len(group)} cell(s), {at_once} at once, "
                      f"{threads} thread(s) each")
        return 0
    runs = harness.run_grid(grid, args.results, only=args.only, executor=args.executor,
                            scheduler=args.scheduler, workers=args.workers,
                            threads=args.threads, data_root=args.data_root,
                            verbose=not args.quiet, force=args.force)
    folder = harness.study_dir(grid, args.results)
    print()
    print(harness.summary(runs, grid))
    print(f"\ntables: {folder}/runs.csv, {folder}/epochs.csv")
    if args.plot or grid.plot:
        import matplotlib
        matplotlib.use("Agg")
        from nbcnn import plots
        paths = plots.plot_study(folder)
        print(f"figures: {', '.join(paths) if paths else 'none'}")
    failed = int((runs["status"] != "ok").sum())
    if failed:
        print(f"{failed} of {len(runs)} runs failed; run the same command again to retry them",
              file=sys.stderr)
        refused = runs.get("checkpoint_refused")
        for key, path in zip(runs["key"], refused if refused is not None else []):
            if isinstance(path, str) and path:
                print(f"[{key}] its checkpoint {path} was refused and will be again: delete it "
                      "to restart that cell from its first epoch", file=sys.stderr)
        return 1
    return 0
