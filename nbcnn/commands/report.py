"""``nbcnn report DIR [DIR ...]``: one summary row per setting (averaged over seeds) of one or
more studies, as a table or as markdown (the README's results table is made this way).
``--published``: instead, each study's results next to the published numbers it reproduces
(``nbcnn/published.py``: source, published, ours as mean +- sd over seeds, epochs, seconds per
epoch, the CPU, met or not and by how much), and the compute each study took."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="summarise studies' results over seeds", description=__doc__)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="study folders, e.g. results/quickstart")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--published", action="store_true",
                   help="compare with the published numbers (nbcnn/published.py) and give each "
                        "study's total compute")


def run(args) -> int:
    import pandas as pd

    from nbcnn import results

    runs, epochs = [], []
    for d in args.dirs:
        study = results.load(d)
        runs.append(study.runs if "study" in study.runs else study.runs.assign(study=study.name))
        epochs.append(study.epochs)
    if getattr(args, "published", False):      # (a Namespace made without the option)
        return _published(pd.concat(runs, ignore_index=True), pd.concat(epochs, ignore_index=True),
                          args.markdown)
    table = results.summarize(pd.concat(runs, ignore_index=True))
    print(results.markdown(table) if args.markdown else table.to_string(index=False))
    return 0


def _published(runs, epochs, as_markdown: bool) -> int:
    from nbcnn import published

    table = published.compare(runs)
    show = published.markdown if as_markdown else published.text
    if table.empty:
        known = sorted({s for e in published.PUBLISHED for s in e.studies})
        print(f"no published numbers for the studies {', '.join(sorted(set(runs['study'])))} "
              f"(nbcnn/published.py has some for: {', '.join(known)})")
    else:
        print(show(table))
    heading = "Compute per study (wall seconds summed over runs):"
    print(f"\n{heading}\n" + ("\n" if as_markdown else "") + show(published.compute(runs, epochs)))
    return 0
