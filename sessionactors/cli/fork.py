"""``sessionactors fork``: a new session from another one's revision, through the library."""

from __future__ import annotations

import argparse

from .. import Session, SessionStore
from .common import EXIT_OK, UsageError, existing_root, with_store

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """Fork ``args.id`` of ``args.root`` into ``args.new_id``; say what was made."""
    root = existing_root(args.root)
    if args.title is not None and not args.title.strip():
        # Checked here too, so an empty title is a usage error, not a library error.
        raise UsageError("--title must not be empty (or blank)")

    async def fork(store: SessionStore) -> Session:
        return await store.fork_session(
            args.id, args.new_id, revision=args.revision, title=args.title
        )

    made = with_store(root, fork, writes=True)
    count = len(made.messages)
    print(
        f"forked {args.id!r} at revision {made.forked_from_revision} into {made.id!r} "
        f"(revision {made.revision}): {count} message{'' if count == 1 else 's'}, "
        f"title {made.title!r}"
    )
    return EXIT_OK
