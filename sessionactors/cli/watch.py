"""``sessionactors watch``: each change of a store's sessions, one line as it happens.

Like ``tail -f``: it prints a line per change (and flushes it, so a reader
of a pipe sees each one at once) until Ctrl-C or SIGTERM, then exits 0.
Once the watch has begun it says so on stderr (``watching ...``): every
write from then on, by any process, is seen. A change is a session's new
revision (its kind and number), token usage appended (``usage``) or a
delete; under load a session's changes may be folded into its latest.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import trio

from .. import Change, SessionStore
from .common import EXIT_OK, in_store, store_location
from .text import Column, clean, header, json_bytes, row

__all__ = ["run"]

#: The signals that end a watch as a success: Ctrl-C, and a polite kill.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_COLUMNS: tuple[Column, ...] = (
    ("TIME (UTC)", 23, False),
    ("KIND", 10, False),
    ("REV", 6, True),
)  # then the session's id, whole (an id is never cut)


def _line(change: Change, when: datetime, *, as_json: bool) -> str:
    """One change as a line of the table, or as a JSON object."""
    if as_json:
        value = {
            "time": when.isoformat(),
            "session_id": change.session_id,
            "kind": change.kind,
            "revision": change.revision,
        }
        return json_bytes(value, indent=False).decode()
    moment = when.replace(tzinfo=None).isoformat(" ", "milliseconds")
    revision = "-" if change.revision is None else str(change.revision)
    cells = row((moment, change.kind, revision), _COLUMNS)
    return f"{cells} {clean(change.session_id)}"


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _Stop:
    """Whether a stop signal came; it cancels ``scope`` when it does."""

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.requested = False

    async def wait(self, signals: AsyncIterator[int]) -> None:
        async for _ in signals:
            self.requested = True
            self.scope.cancel()
            return


def run(args: argparse.Namespace) -> int:
    """Print the changes of ``args.root`` (of the session ``args.id`` only, if given)."""
    location = store_location(args.root)

    async def watch(store: SessionStore) -> None:
        async with store.watch(args.id) as changes:
            which = "every session" if args.id is None else f"session {args.id!r}"
            where = os.fspath(store.root)  # a URL without its password
            print(
                f"watching {clean(where)}: {clean(which)}; Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
            if not args.json:
                _emit(f"{header(_COLUMNS)} ID")
            async for change in changes:
                now = datetime.now(timezone.utc)
                _emit(_line(change, now, as_json=args.json))

    stop: _Stop | None = None

    async def until_stopped() -> None:
        nonlocal stop
        # Listening before the store opens (a database may take a second or
        # two): a stop while it opens ends the command as one while it watches.
        with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                stop = _Stop(nursery.cancel_scope)
                nursery.start_soon(stop.wait, signals)
                await in_store(location, watch)
                nursery.cancel_scope.cancel()  # the watch ended (it does not, unless closed)

    try:
        trio.run(until_stopped)
    except Exception:
        # An opening the stop cut short may fail as it ends (a connection
        # attempt in its thread, not to be abandoned): stopped all the same.
        if stop is None or not stop.requested:
            raise
    return EXIT_OK
