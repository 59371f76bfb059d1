"""``nbcnn plot DIR``: draw a study's figures (PNG) from ``DIR/runs.csv``, ``epochs.csv`` and the
saved models and predictions: learning curves, time per epoch, accuracy against time, throughput,
and for one run (``--key``, default the best test accuracy) its confusion matrix, first-layer
filters and feature maps. ``--headlines``: also, for each architecture and setting the study
compares with a published number (``nbcnn report --published``), its learning curves alone and
the confusion matrix of its median-seed run."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a study's figures", description=__doc__,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="a study's results folder, e.g. results/quickstart")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write (default DIR/figures)")
    p.add_argument("--key", default=None, help="run (key or unique prefix) for the per-run figures")
    p.add_argument("--format", default="png", choices=["png", "pdf", "svg"])
    p.add_argument("--dpi", type=int, default=120)
    p.add_argument("--headlines", action="store_true",
                   help="also the figures of each row compared with a published number")


def run(args) -> int:
    import matplotlib
    matplotlib.use("Agg")
    from nbcnn import plots

    paths = plots.plot_study(args.dir, out=args.out, key=args.key, fmt=args.format, dpi=args.dpi)
    if getattr(args, "headlines", False):      # (a Namespace made without the option)
        paths += plots.plot_headlines(args.dir, out=args.out, fmt=args.format, dpi=args.dpi)
    for p in paths:
        print(p)
    if not paths:
        print(f"{args.dir}: nothing to draw (no finished runs)")
    return 0
