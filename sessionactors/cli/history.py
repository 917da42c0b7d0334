"""``sessionactors history``: a session's revisions still kept, newest first."""

from __future__ import annotations

import argparse

from .. import Revision
from .._model import converter
from .common import EXIT_OK, existing_root, with_store
from .text import Column, header, number, print_json, row, utc

__all__ = ["run"]

_COLUMNS: tuple[Column, ...] = (
    ("REV", 6, True),
    ("KIND", 10, False),
    ("UPDATED (UTC)", 19, False),
    ("MSGS", 5, True),
    ("TITLE", 18, False),
    ("PINNED", 6, False),
    ("VERSIONS", 8, False),
)


def _versions(revision: Revision) -> str:
    """The title and metadata versions, as ``t1 m2`` (``show`` spells them out)."""
    return f"t{revision.title_version} m{revision.metadata_version}"


def run(args: argparse.Namespace) -> int:
    """Print the history of the session ``args.id`` of ``args.root``."""
    root = existing_root(args.root)
    revisions = with_store(root, lambda store: store.session_history(args.id))
    total = len(revisions)
    if args.limit is not None:
        revisions = revisions[: args.limit]
    if args.json:
        print_json([converter.unstructure(revision, Revision) for revision in revisions])
        return EXIT_OK
    print(header(_COLUMNS))
    for revision in revisions:
        values = (
            number(revision.revision, 6),
            revision.kind,
            utc(revision.updated_at, short=True),
            number(revision.message_count, 5),
            revision.title,
            "yes" if revision.pinned else "no",
            _versions(revision),
        )
        print(row(values, _COLUMNS))
    if len(revisions) < total:
        print(f"({len(revisions)} of {total} revisions shown)")
    return EXIT_OK
