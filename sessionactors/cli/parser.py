"""The arguments of each command, and ``main``: run one, turn failures into exit statuses."""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Sequence

from .. import CorruptSessionError, SessionStoreError
from . import archive, demo, du, fork, history, listing, prune, rewind, show, usage, verify, watch
from .common import (
    EXIT_INTERRUPTED,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    PROG,
    UsageError,
    Warnings,
    is_url,
)
from .durations import duration

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
        description="Look into a sessionactors store: its sessions, their revisions, their "
        "token usage, the bytes they take, and whether anything is damaged; watch their "
        "changes; rewind a session or fork it; move a session to another store (export, "
        "import); delete the sessions not used for a while (prune).",
        epilog="Exit status: 0 done; 1 problems found (a damaged or unreadable file, an OS "
        "error): list, usage and verify then name each session they skip or find at fault, "
        "with the reason, on stderr (verify on stdout), and still show all the others; "
        "2 usage error (bad arguments, a missing root, an invalid or unknown session id, "
        "a revision not kept, a new id that is taken, an archive that cannot be imported).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    root_help = "the store's directory"
    url_root_help = "the store's directory, or its postgresql:// URL"

    command = commands.add_parser(
        "list",
        help="the sessions, newest first; filtered, a page at a time",
        description="The sessions, newest first (by the time of their last write, then "
        "by id). With --limit, a page that has more after it ends with `more: --after "
        "CURSOR` on stderr; --after CURSOR lists the next page. A cursor is UPDATED_AT/ID: "
        "the last session's time in ISO 8601 with its UTC offset, and its id "
        "percent-encoded (UTF-8), so it is one shell word; written by hand, TIME/ starts "
        "at the sessions last updated before TIME.",
    )
    command.add_argument("root", metavar="ROOT", help=url_root_help)
    command.add_argument("--json", action="store_true", help="print JSON for machines")
    command.add_argument("--limit", type=_positive, metavar="N", help="show the N newest only")
    pins = command.add_mutually_exclusive_group()
    pins.add_argument("--pinned", action="store_const", const=True, help="only the pinned sessions")
    pins.add_argument(
        "--unpinned",
        action="store_const",
        const=False,
        dest="pinned",
        help="only the sessions not pinned",
    )
    command.add_argument(
        "--title", metavar="TEXT", help="only the sessions whose title holds TEXT (any case)"
    )
    command.add_argument(
        "--after",
        metavar="CURSOR",
        help="the page after CURSOR, as the `more:` line of the page before prints it",
    )
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
    command.add_argument(
        "--revision",
        type=_positive,
        metavar="N",
        help="the session as revision N left it (see history) rather than the latest",
    )
    command.set_defaults(handler=show.run)

    command = commands.add_parser(
        "history",
        help="one session's revisions, newest first",
        description="One session's revisions still kept, newest first: each write that "
        "changed it is one (a save, a checkpoint, a title or pin edit, an update, a rewind, "
        "a fork). Any of them can be shown (show --revision), rewound to or forked from.",
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("id", metavar="ID", help="the session's id")
    command.add_argument("--json", action="store_true", help="print JSON for machines")
    command.add_argument("--limit", type=_positive, metavar="N", help="show the N newest only")
    command.set_defaults(handler=history.run)

    command = commands.add_parser(
        "rewind",
        help="make a session's transcript and state those of an earlier revision",
        description="Write a new revision of the session whose messages, metadata and "
        "runtime state are those of revision N; its title and pin stay as they are. "
        "History is kept: rewind to the revision before to undo it. Prints the new revision.",
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("id", metavar="ID", help="the session's id")
    command.add_argument("revision", type=_positive, metavar="N", help="the revision to go back to")
    command.set_defaults(handler=rewind.run)

    command = commands.add_parser(
        "fork",
        help="make a new session from a session's revision",
        description="Make NEW_ID, a new session (revision 1) holding ID as its latest "
        "revision (or revision N) left it: unpinned, versions 0, titled as the source "
        "unless --title is given. The two are independent afterwards; the token-usage log "
        "is not copied. Prints what was made.",
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("id", metavar="ID", help="the source session's id")
    command.add_argument("new_id", metavar="NEW_ID", help="the new session's id (not taken)")
    command.add_argument(
        "--revision", type=_positive, metavar="N", help="fork revision N (default: the latest)"
    )
    command.add_argument("--title", metavar="T", help="the new session's title")
    command.set_defaults(handler=fork.run)

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
        "A session's log is read whole: every record's checksum in each generation's "
        "counted part, every message and revision, the generations its headers name, and "
        "its history against its records. "
        "--repair only clears leftovers: it cuts torn tails off token-usage logs, the "
        "bytes after a log's last whole commit and uncounted bytes off journals, removes "
        "stray temporary files, generations and links no kept revision needs, the files of "
        "an older format beside a log and journals no snapshot names, and makes absent an "
        "older snapshot slot a failed or killed rewrite left empty or torn beside a whole "
        "newer one, holding each session's lock; it repairs nothing of a log with damage, "
        "never deletes a session and never touches damage, such as a damaged file the "
        "store kept aside (a name ending in .corrupt), which stays a problem until removed "
        "by hand. "
        "Exit status 0 when clean, 1 when problems (of either kind) remain.",
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("--repair", action="store_true", help="make the safe repairs")
    command.add_argument(
        "--history",
        type=_positive,
        metavar="N",
        help="the history the store is opened with (open_store's; the smallest, if it "
        "varies): a log missing a generation of its newest N revisions is then damage "
        "(without it, a missing one is history the store dropped)",
    )
    command.set_defaults(handler=verify.run)

    command = commands.add_parser(
        "watch",
        help="print each change of the sessions as it happens, until Ctrl-C",
        description="Print a line for each change of the store's sessions (or of session "
        "ID) as it happens, by any process: the time (UTC), the kind of change (a "
        "revision's kind: save, checkpoint, title, pinned, update, rewind, fork, import; "
        "usage when token usage was appended; delete), the revision (- for usage and "
        "delete) and the session's id. Under load a session's changes may be folded into "
        "its latest. Once watching, it says so on stderr; each line is flushed as it is "
        "printed. Runs until Ctrl-C (or SIGTERM), then exits 0.",
    )
    command.add_argument("root", metavar="ROOT", help=url_root_help)
    command.add_argument("id", metavar="ID", nargs="?", help="one session only")
    command.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object a line: time, session_id, kind, revision",
    )
    command.set_defaults(handler=watch.run)

    command = commands.add_parser(
        "export",
        help="write one session as an archive (JSON Lines), to move it to another store",
        description="Write the session ID at its latest revision, with its whole token-usage "
        "log, as one archive: JSON Lines of a documented format, the same for every backend "
        '(README, "The session archive"). `import` makes the session from it in any store, '
        "so an export from a directory imported into a postgresql:// URL (or the other way) "
        "moves a session between machines and backends. To stdout unless -o is given.",
    )
    command.add_argument("root", metavar="ROOT", help=url_root_help)
    command.add_argument("id", metavar="ID", help="the session's id")
    command.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write FILE instead of stdout, durably (a temporary file, synced, renamed), "
        "replacing it if it exists",
    )
    command.set_defaults(handler=archive.run_export)

    command = commands.add_parser(
        "import",
        help="make a session from an archive of export",
        description="Make the session of the archive FILE (- for stdin) in the store, as "
        "revision 1 (kind import), with its token-usage records; its created_at, updated_at "
        "and lineage are the archive's. The archive is checked whole first: a damaged one, "
        "one of a newer format, or an id that is taken is refused (exit 2) and nothing is "
        "made. Prints the session's id and how many messages it holds.",
    )
    command.add_argument("root", metavar="ROOT", help=url_root_help)
    command.add_argument("file", metavar="FILE", help="the archive; - reads stdin")
    command.add_argument(
        "--id", metavar="NEW_ID", help="make it under this id rather than the archive's"
    )
    command.set_defaults(handler=archive.run_import)

    command = commands.add_parser(
        "prune",
        help="delete the sessions not updated for a while; --dry-run shows what would go",
        description="Delete the sessions whose last write (updated_at) is older than "
        "DURATION, oldest first; a session that cannot be read is never deleted. "
        "--archive DIR first writes each one's export to DIR/<id>.jsonl (the id "
        "percent-encoded; ~2, ~3 ... added when the name is taken), durably, and only then "
        "deletes it. A session written while the prune runs (a save, a title, a pin) is "
        "kept, and any archive of it removed. On a terminal a progress bar is drawn on "
        "stderr. Prints each session's outcome, then how many were deleted, the bytes "
        "freed and how many were kept.",
    )
    command.add_argument("root", metavar="ROOT", help=url_root_help)
    command.add_argument(
        "--older-than",
        type=duration,
        required=True,
        metavar="DURATION",
        help="not updated for this long: a whole number and a unit, s m h d or w "
        "(30d, 12h, 90m, 45s, 2w; 1d12h sums them)",
    )
    command.add_argument("--keep-pinned", action="store_true", help="never delete a pinned session")
    command.add_argument(
        "--archive",
        metavar="DIR",
        help="export each session to DIR (made if missing) before deleting it",
    )
    command.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be deleted, with the bytes each would free; change nothing",
    )
    command.set_defaults(handler=prune.run)

    command = commands.add_parser(
        "du",
        help="the bytes each session takes: transcript, history, token usage",
        description="Per session, the largest first: the bytes of its transcript (what its "
        "latest revision reads), its history (kept for older revisions), its token-usage "
        "log, anything else (leftovers of interrupted writes, damaged files kept aside), "
        "the total, and the bytes it shares with other sessions; then the total. On files, "
        "each file's size (st_size), each file counted once however many forks link it: in "
        "the row of the session that wrote it. On PostgreSQL, an estimate: the sizes of "
        "the session's rows (pg_column_size), without indexes.",
    )
    command.add_argument("root", metavar="ROOT", help=url_root_help)
    command.add_argument("--json", action="store_true", help="print JSON for machines")
    command.set_defaults(handler=du.run)

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


def _from_postgres(exc: BaseException) -> bool:
    """Whether ``exc`` is the PostgreSQL driver's (a server not reached): told, not raised."""
    package = type(exc).__module__.partition(".")[0]
    return isinstance(exc, Exception) and package in ("psycopg", "psycopg_pool")


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
    if isinstance(exc, (SessionStoreError, OSError)) or _from_postgres(exc):
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
    if (warnings.count or corrupt) and args.command != "verify" and not is_url(args.root):
        print(f"{PROG}: `{PROG} verify {args.root}` checks the whole store", file=sys.stderr)
    return status
