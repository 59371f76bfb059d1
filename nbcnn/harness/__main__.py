"""``python -m nbcnn.harness FILE [options]``: the same as ``nbcnn grid FILE [options]``."""

import argparse
import sys

from ..commands import grid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbcnn.harness", description=grid.__doc__)
    grid.configure(parser)
    args = parser.parse_args(argv)
    try:
        return grid.run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        print(f"nbcnn grid: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
