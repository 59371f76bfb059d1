"""The ``nbcnn`` command: one sub-command per module, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import os
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
        status = importlib.import_module(COMMANDS[args.command]).run(args) or 0
        sys.stdout.flush()          # a closed pipe shows here, not in the interpreter's exit
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (nbcnn grid ... | head -1): nothing more can be shown; what was
        # written to files is complete. Point stdout at /dev/null so the exit's flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"nbcnn {args.command}: output closed before the end (broken pipe)",
              file=sys.stderr)
        return 141
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, MemoryError) as exc:
        print(f"nbcnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:           # a folder that cannot be written, a path that is a file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"nbcnn {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
