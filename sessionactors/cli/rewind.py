"""``sessionactors rewind``: a session's transcript and state as a revision left them."""

from __future__ import annotations

import argparse

from .common import EXIT_OK, existing_root, with_store

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """Rewind ``args.id`` of ``args.root`` to ``args.revision``; print the new revision."""
    root = existing_root(args.root)
    rewound = with_store(
        root, lambda store: store.rewind_session(args.id, args.revision), writes=True
    )
    count = len(rewound.messages)
    print(
        f"rewound {args.id!r} to revision {args.revision}: now revision {rewound.revision} "
        f"({count} message{'' if count == 1 else 's'}; the title and the pin stay as they are)"
    )
    return EXIT_OK
