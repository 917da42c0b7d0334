"""``sessionactors usage``: token usage summed per session and per model.

As a table, JSON or CSV. A damaged file is warned about and passed over.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import textwrap

from .. import CorruptSessionError, SessionStore
from .common import EXIT_OK, existing_root, load_existing, sessions_naming_skips, with_store
from .text import WIDTH, Column, cut, header, number, print_json, row
from .usage_records import SUMS, TOKEN_FIELDS, add_sums, sum_usage, zero_sums

__all__ = ["run"]

logger = logging.getLogger(__name__)

#: Per session, per model, the sums.
Usage = dict[str, dict[str, dict[str, int]]]


async def _collect_usage(store: SessionStore, session_id: str | None) -> Usage:
    """Per session, per model sums. A damaged file is warned about and passed over."""
    if session_id is not None:
        try:
            await load_existing(store, session_id)
        except (CorruptSessionError, OSError) as exc:
            logger.warning("%s (its token usage is summed all the same)", exc)
        ids = [session_id]
    else:
        ids = sorted(summary.id for summary in await sessions_naming_skips(store))
    usage: Usage = {}
    for current in ids:
        try:
            records = await store.read_token_usage(current)
        except (CorruptSessionError, OSError) as exc:
            # One unreadable log (EACCES, a directory in its place) hides no other.
            logger.warning("%s: the usage of session %r is left out", exc, current)
            continue
        if records:
            usage[current] = sum_usage(records)
    return usage


_USAGE_COLUMNS: tuple[Column, ...] = (
    ("SESSION / MODEL", 27, False),
    ("CALLS", 6, True),
    ("INPUT", 8, True),
    ("OUTPUT", 8, True),
    ("CACHE RD", 8, True),
    ("CACHE WR", 8, True),
    ("THINKING", 8, True),
)
_ALL_MODELS = "all models"


def _usage_line(label: str, sums: dict[str, int]) -> str:
    """One row: a model (indented under its session) and its sums."""
    widths = [width for _, width, _ in _USAGE_COLUMNS[1:]]
    numbers = zip(("calls", *TOKEN_FIELDS), widths, strict=True)
    return row(
        ["  " + label, *(number(sums[key], width) for key, width in numbers)], _USAGE_COLUMNS
    )


def _usage_text(
    usage: Usage,
    by_session: dict[str, dict[str, int]],
    by_model: dict[str, dict[str, int]],
    total: dict[str, int],
) -> list[str]:
    """The table: each session's heading and a row per model, then the totals."""
    lines = [header(_USAGE_COLUMNS)]
    for session_id, per_model in usage.items():
        lines.append(cut(session_id, WIDTH - 1))
        lines.extend(_usage_line(model, sums) for model, sums in sorted(per_model.items()))
        if len(per_model) > 1:
            lines.append(_usage_line(_ALL_MODELS, by_session[session_id]))
    if len(usage) > 1:
        lines.append("-" * (WIDTH - 1))
        lines.append("all sessions")
        lines.extend(_usage_line(model, sums) for model, sums in by_model.items())
        if len(by_model) > 1:
            lines.append(_usage_line(_ALL_MODELS, total))
    if total["irregular_records"]:
        note = (
            f"Irregular records: {total['irregular_records']} of {total['calls']} (no model, "
            "no token count, or a count that is not a whole number). They are counted in "
            "CALLS; their unusable fields are left out."
        )
        lines.extend(textwrap.wrap(note, WIDTH - 1))
    return lines


def _usage_tables(
    usage: Usage,
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]], dict[str, int]]:
    by_session: dict[str, dict[str, int]] = {}
    by_model: dict[str, dict[str, int]] = {}
    total = zero_sums()
    for session_id, per_model in usage.items():
        for model, sums in per_model.items():
            add_sums(by_session.setdefault(session_id, zero_sums()), sums)
            add_sums(by_model.setdefault(model, zero_sums()), sums)
            add_sums(total, sums)
    return by_session, dict(sorted(by_model.items())), total


def run(args: argparse.Namespace) -> int:
    """Sum the token usage of ``args.root`` (or of its session ``args.id``)."""
    root = existing_root(args.root)
    usage = with_store(root, lambda store: _collect_usage(store, args.id))
    by_session, by_model, total = _usage_tables(usage)
    if args.json:
        print_json(
            {
                "by_session": [
                    {
                        "session": session_id,
                        **by_session[session_id],
                        "by_model": [
                            {"model": model, **sums} for model, sums in sorted(per_model.items())
                        ],
                    }
                    for session_id, per_model in usage.items()
                ],
                "by_model": [{"model": model, **sums} for model, sums in by_model.items()],
                "total": total,
            }
        )
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["session", "model", *SUMS])
        for session_id, per_model in usage.items():
            for model, sums in sorted(per_model.items()):
                writer.writerow([session_id, model, *(sums[key] for key in SUMS)])
    elif not usage:
        print("no token usage recorded")
    else:
        print("\n".join(_usage_text(usage, by_session, by_model, total)))
    return EXIT_OK
