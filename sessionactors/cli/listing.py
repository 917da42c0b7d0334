"""``sessionactors list``: the sessions, newest first, as a table or JSON; filtered, by pages.

A page that has more after it ends with ``more: --after CURSOR`` on stderr.
A cursor is the last summary's place in the order (``updated_at``, ``id``)
descending: ``UPDATED_AT/ID``, the time in ISO 8601 with its UTC offset and
the id percent-encoded (UTF-8; every byte but those of ``A-Z a-z 0-9 _ . -``),
so it is one shell word whatever the id holds, and the first ``/`` ends the
time. ``--after`` takes one and lists what comes strictly after it; written
by hand, ``TIME/`` (an empty id) starts at the sessions updated before TIME.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from datetime import datetime

from .. import SessionStore, SessionSummary
from .._model import converter
from .common import EXIT_OK, UsageError, sessions_naming_skips, store_location, with_store
from .text import Column, clean, header, number, print_json, row, utc

__all__ = ["cursor_of", "parse_cursor", "percent_encoded", "run"]

_LIST_COLUMNS: tuple[Column, ...] = (
    ("ID", 15, False),
    ("TITLE", 16, False),
    ("PINNED", 6, False),
    ("MSGS", 5, True),
    ("REV", 4, True),
    ("UPDATED (UTC)", 19, False),
    ("FORK OF", 8, False),
)


#: The bytes of an id a cursor holds as they are; every other is percent-encoded.
_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def percent_encoded(text: str) -> str:
    """``text`` as UTF-8, each byte outside :data:`_PLAIN` as ``%XX``: a shell word as it is."""
    return "".join(chr(byte) if byte in _PLAIN else f"%{byte:02X}" for byte in text.encode())


def cursor_of(summary: SessionSummary) -> str:
    """Where a page after ``summary`` starts: ``UPDATED_AT/ID``, the id percent-encoded."""
    return f"{summary.updated_at.isoformat()}/{percent_encoded(summary.id)}"


def parse_cursor(text: str) -> SessionSummary:
    """The summary whose place ``text`` (a cursor) names, as ``list_sessions(before=)`` takes it.

    Only its ``updated_at`` and ``id`` matter to the order; the rest are placeholders.

    Raises:
        UsageError: ``text`` is no cursor.
    """
    when_text, slash, quoted = text.partition("/")
    bad = f"bad cursor {text!r}: expected UPDATED_AT/ID as a `more:` line prints it"
    if not slash:
        raise UsageError(bad)
    try:
        when = datetime.fromisoformat(when_text)
        session_id = urllib.parse.unquote(quoted, errors="strict")
    except ValueError:  # UnicodeDecodeError included
        raise UsageError(bad) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageError(f"{bad} (its time needs a UTC offset, such as +00:00)")
    return SessionSummary(
        id=session_id,
        title="",
        pinned=False,
        title_version=0,
        metadata_version=0,
        created_at=when,
        updated_at=when,
        message_count=0,
        revision=0,
        forked_from=None,
    )


def _filtered(args: argparse.Namespace) -> bool:
    return args.pinned is not None or args.title is not None or args.after is not None


def run(args: argparse.Namespace) -> int:
    """List the sessions of ``args.root`` (a page of those that pass the filters)."""
    location = store_location(args.root)
    before = None if args.after is None else parse_cursor(args.after)

    async def page(store: SessionStore) -> tuple[list[SessionSummary], str]:
        # One more than shown, to know whether more follow.
        summaries = await sessions_naming_skips(
            store,
            limit=None if args.limit is None else args.limit + 1,
            before=before,
            pinned=args.pinned,
            title_contains=args.title,
        )
        return summaries, os.fspath(store.root)  # a URL without its password

    summaries, where = with_store(location, page)
    more = args.limit is not None and len(summaries) > args.limit
    if more:
        summaries = summaries[: args.limit]
    if args.json:
        print_json([converter.unstructure(summary, SessionSummary) for summary in summaries])
    elif not summaries:
        which = "matching sessions" if _filtered(args) else "sessions"
        print(f"no {which} in {clean(where)}")
    else:
        print(header(_LIST_COLUMNS))
        for summary in summaries:
            values = (
                summary.id,
                summary.title,
                "yes" if summary.pinned else "no",
                number(summary.message_count, 5),
                number(summary.revision, 4),
                utc(summary.updated_at, short=True),
                summary.forked_from or "",
            )
            print(row(values, _LIST_COLUMNS))
        if more:
            count = len(summaries)
            print(f"({count} session{'' if count == 1 else 's'} shown, more after them)")
    if more:
        sys.stdout.flush()  # the page before the line that tells how to go on
        print(f"more: --after {cursor_of(summaries[-1])}", file=sys.stderr)
    return EXIT_OK
