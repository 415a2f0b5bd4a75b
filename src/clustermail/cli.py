"""The `clustermail` command line (Cluster Administrator). Errors: one line, non-zero exit."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clustermail",
        description="A highly available mail system: virtual mail servers that fail over.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("up", help="start the default local cluster (4 nodes, 3 virtual servers)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "up":
        print(
            "clustermail: the local cluster is not built yet (the cluster service is "
            "issue 3); `make test` runs what exists.",
            file=sys.stderr,
        )
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
