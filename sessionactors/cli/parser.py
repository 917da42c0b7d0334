"""The arguments of each command, and ``main``: run one, turn failures into exit statuses."""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Sequence

from .. import CorruptSessionError, SessionStoreError
from . import demo, listing, show, usage, verify
from .common import (
    EXIT_INTERRUPTED,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    PROG,
    UsageError,
    Warnings,
)

__all__ = ["build_parser", "main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sessionactors``; each command sets ``handler``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look into a sessionactors store: its sessions, their token usage, "
        "and whether anything is damaged.",
        epilog="Exit status: 0 done; 1 problems found (a damaged or unreadable file, an OS "
        "error): list, usage and verify then name each session they skip or find at fault, "
        "with the reason, on stderr (verify on stdout), and still show all the others; "
        "2 usage error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    root_help = "the store's directory"

    command = commands.add_parser(
        "list", help="the sessions, newest first", description="The sessions, newest first."
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("--json", action="store_true", help="print JSON for machines")
    command.add_argument("--limit", type=_positive, metavar="N", help="show the N newest only")
    command.set_defaults(handler=listing.run)

    command = commands.add_parser(
        "show",
        help="one session's metadata and transcript",
        description="One session's metadata and transcript, one message per block.",
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("id", metavar="ID", help="the session's id")
    command.add_argument("--full", action="store_true", help="do not shorten long contents")
    command.add_argument("--json", action="store_true", help="print the whole session as JSON")
    command.set_defaults(handler=show.run)

    command = commands.add_parser(
        "usage",
        help="token usage summed per session and per model",
        description="Token usage summed per session and per model: calls, input, output, "
        "cache read, cache creation and thinking tokens. Records with missing or "
        "unexpected fields are counted, not fatal.",
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("id", metavar="ID", nargs="?", help="one session only")
    formats = command.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON for machines")
    formats.add_argument(
        "--csv", action="store_true", help="print CSV: a row per session and model"
    )
    command.set_defaults(handler=usage.run)

    command = commands.add_parser(
        "verify",
        help="check every session and log; --repair fixes what is safe",
        description="Check every session and log and print each problem with its path. "
        "A problem is damage (a file the library cannot read, or values it would not "
        "write) or a leftover of an interrupted write (a crash, a full disk), which readers "
        "ignore and the session's next write clears. "
        "--repair only clears leftovers: it cuts torn tails off token-usage logs and "
        "uncounted bytes off journals, removes stray temporary files and journals no "
        "snapshot names, and makes absent an older snapshot slot a failed or killed "
        "rewrite left empty or torn beside a whole newer one, holding each session's lock; "
        "it never deletes a session and never touches damage, such as a damaged file the "
        "store kept aside (a name ending in .corrupt), which stays a problem until removed "
        "by hand. "
        "Exit status 0 when clean, 1 when problems (of either kind) remain.",
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("--repair", action="store_true", help="make the safe repairs")
    command.set_defaults(handler=verify.run)

    command = commands.add_parser(
        "demo",
        help="simulate a runtime, a UI and a usage logger writing at once",
        description="Simulate a runtime, a UI and a usage logger writing one store at "
        "once, then print what was kept.",
    )
    command.add_argument("root", metavar="ROOT", help="the store's directory (created if missing)")
    command.set_defaults(handler=demo.run)
    return parser


def _unwrap(exc: BaseException) -> BaseException:
    """The one exception inside trio's exception groups, if there is just one."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not (isinstance(inner, tuple) and len(inner) == 1):
            return exc
        exc = inner[0]


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _failed(raw: BaseException) -> int:
    """The exit status of an expected failure, told on stderr; anything else is raised."""
    exc = _unwrap(raw)
    if isinstance(exc, UsageError):
        _error(str(exc))
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        # The reader went away (| head): say nothing, and keep the
        # interpreter's final flush from failing too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PROBLEMS
    if isinstance(exc, (SessionStoreError, OSError)):
        _error(str(exc))
        return EXIT_PROBLEMS
    raise raw


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)  # exits 2 itself on a usage error
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            # A title or a message the terminal's encoding cannot show is escaped, not fatal.
            stream.reconfigure(errors="backslashreplace")
    warnings = Warnings()
    library_logger = logging.getLogger("sessionactors")
    library_logger.addHandler(warnings)
    corrupt = False
    try:
        status: int = args.handler(args)
    except BaseException as raw:
        corrupt = isinstance(_unwrap(raw), CorruptSessionError)
        status = _failed(raw)
    finally:
        library_logger.removeHandler(warnings)
    if warnings.count:
        status = max(status, EXIT_PROBLEMS)
    if (warnings.count or corrupt) and args.command != "verify":
        print(f"{PROG}: `{PROG} verify {args.root}` checks the whole store", file=sys.stderr)
    return status
