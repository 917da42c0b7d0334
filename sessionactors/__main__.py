"""The command line: ``python -m sessionactors demo ROOT``."""

from __future__ import annotations

import argparse
import sys

import trio

from ._demo import run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sessionactors")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="simulate a runtime, a UI and a usage logger")
    demo.add_argument("root", help="the store's directory (created if missing)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        trio.run(run_demo, args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
