"""``nbcnn report DIR [DIR ...]``: one summary row per setting (averaged over seeds) of one or
more studies, as a table or as markdown (the README's results table is made this way)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="summarise studies' results over seeds", description=__doc__)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="study folders, e.g. results/quickstart")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")


def run(args) -> int:
    import pandas as pd

    from nbcnn import results

    runs = []
    for d in args.dirs:
        study = results.load(d)
        runs.append(study.runs if "study" in study.runs else study.runs.assign(study=study.name))
    table = results.summarize(pd.concat(runs, ignore_index=True))
    print(results.markdown(table) if args.markdown else table.to_string(index=False))
    return 0
