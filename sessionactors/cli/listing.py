"""``sessionactors list``: the sessions, newest first, as a table or JSON."""

from __future__ import annotations

import argparse

from .. import SessionSummary
from .._model import converter
from .common import EXIT_OK, existing_root, sessions_naming_skips, with_store
from .text import Column, header, number, print_json, row, utc

__all__ = ["run"]

_LIST_COLUMNS: tuple[Column, ...] = (
    ("ID", 15, False),
    ("TITLE", 16, False),
    ("PINNED", 6, False),
    ("MSGS", 5, True),
    ("REV", 4, True),
    ("UPDATED (UTC)", 19, False),
    ("FORK OF", 8, False),
)


def run(args: argparse.Namespace) -> int:
    """List the sessions of ``args.root``."""
    root = existing_root(args.root)
    summaries = with_store(root, sessions_naming_skips)
    total = len(summaries)
    if args.limit is not None:
        summaries = summaries[: args.limit]
    if args.json:
        print_json([converter.unstructure(summary, SessionSummary) for summary in summaries])
        return EXIT_OK
    if not summaries:
        print(f"no sessions in {args.root}")
        return EXIT_OK
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
    if len(summaries) < total:
        print(f"({len(summaries)} of {total} sessions shown)")
    return EXIT_OK
