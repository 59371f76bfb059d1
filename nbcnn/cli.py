"""The ``nbcnn`` command: one sub-command per module, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command -> module holding its add_parser(subparsers) and run(args)
COMMANDS = {
    "train": "nbcnn.commands.train",
    "info": "nbcnn.commands.info",
    "grid": "nbcnn.commands.grid",
    "plot": "nbcnn.commands.plot",
    "bench": "nbcnn.commands.bench",
    "report": "nbcnn.commands.report",
    "data": "nbcnn.data.cli",
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbcnn", description="Convolutional networks on hand-written Numba and OpenCL kernels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return importlib.import_module(COMMANDS[args.command]).run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        print(f"nbcnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
