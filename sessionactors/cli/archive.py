"""``sessionactors export`` and ``import``: a session as one archive file, and back.

The archive is the library's (``export_session``, ``import_session``; README,
"The session archive"), the same for every backend: exported from a
directory and imported into a ``postgresql://`` URL (or the other way) it
moves a session between machines and backends. ``export`` writes it to
stdout as bytes, or with ``-o`` to a file made durably (a temporary file,
synced, renamed); ``import`` reads a file or stdin (``-`` ). An archive that
cannot be imported (damaged, of a newer format) and a taken id are usage
errors, said in one line; nothing is made then.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from .. import InvalidSessionIdError, Session, SessionStore, UnsupportedFormatError
from .common import EXIT_OK, UsageError, store_location, with_store
from .durable import write_durably
from .text import clean, plural

__all__ = ["run_export", "run_import"]

#: FILE meaning stdin.
STDIN = "-"


def _header(data: bytes) -> dict[str, Any]:
    """The archive's first line (its counts), as the library just wrote or checked it."""
    line = data[: data.find(b"\n")]
    header: dict[str, Any] = orjson.loads(line)
    return header


def run_export(args: argparse.Namespace) -> int:
    """Write the archive of ``args.id`` of ``args.root`` to stdout, or to ``args.output``."""
    location = store_location(args.root)
    data = with_store(location, lambda store: store.export_session(args.id))
    if args.output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    write_durably(Path(args.output), data)
    header = _header(data)
    print(
        f"exported {args.id!r} at revision {header['revision']} to {clean(args.output)}: "
        f"{plural(header['messages'], 'message')}, "
        f"{plural(header['usage_records'], 'token-usage record')}, "
        f"{plural(len(data), 'byte')}"
    )
    return EXIT_OK


def _read_archive(name: str) -> bytes:
    """The bytes of FILE (stdin for ``-``); a file that cannot be read is a usage error."""
    if name == STDIN:
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise UsageError(f"no archive at {name!r}: {exc.strerror}") from None


def run_import(args: argparse.Namespace) -> int:
    """Make the session of the archive ``args.file`` in ``args.root`` (as ``args.id``, if given)."""
    location = store_location(args.root)
    data = _read_archive(args.file)
    where = "stdin" if args.file == STDIN else repr(args.file)

    async def make(store: SessionStore) -> Session:
        try:
            return await store.import_session(data, session_id=args.id)
        except InvalidSessionIdError:
            raise  # a ValueError too, but of the id: said as one (usage_errors)
        except UnsupportedFormatError as exc:
            raise UsageError(f"cannot import {where}: {exc.reason}") from None
        except ValueError as exc:
            raise UsageError(f"cannot import {where}: {exc}; nothing was imported") from None

    made = with_store(location, make, writes=True)
    records: int = _header(data)["usage_records"]
    print(
        f"imported {made.id!r} (revision {made.revision}): "
        f"{plural(len(made.messages), 'message')}, "
        f"{plural(records, 'token-usage record')}, title {made.title!r}"
    )
    return EXIT_OK
