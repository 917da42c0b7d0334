"""``sessionactors du``: the bytes each session takes, the largest first, and the total.

Per session: its transcript (what its latest revision reads), its history
(kept for older revisions), its token-usage log, anything else (leftovers,
damaged files kept aside), the total, and the bytes it shares with other
sessions. The counting is the backend's (:mod:`..storage.files.disk_use`:
``st_size`` of each file, once by ``(st_dev, st_ino)`` however many forks
link it; :mod:`..storage.postgres.disk_use`: row sizes, an estimate); here
is only how it is shown.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

import trio

from ..storage.disk_use import SessionBytes
from ..storage.files.disk_use import count_once, index_bytes, store_files
from .common import EXIT_OK, existing_root, is_url, with_store
from .text import WIDTH, Column, clean, header, number, print_json, row

__all__ = ["run"]

_COLUMNS: tuple[Column, ...] = (
    ("SESSION", 16, False),
    ("TRANSCRIPT", 10, True),
    ("HISTORY", 10, True),
    ("USAGE", 9, True),
    ("OTHER", 8, True),
    ("TOTAL", 10, True),
    ("SHARED", 10, True),
)


def _postgres(url: str) -> list[SessionBytes]:
    from ..storage.postgres.disk_use import session_bytes  # psycopg is an optional extra

    # The store is opened first: it creates or migrates the tables, or refuses
    # a newer schema, as every command on a URL does.
    return with_store(url, lambda _: trio.to_thread.run_sync(session_bytes, url))


def _cells(name: str, counts: SessionBytes) -> list[str]:
    values = (counts.transcript, counts.history, counts.usage, counts.other, counts.total)
    widths = [width for _, width, _ in _COLUMNS[1:]]
    cells = [number(value, width) for value, width in zip(values, widths[:-1], strict=True)]
    shared = number(counts.shared, widths[-1]) if counts.shared else ""
    return [name, *cells, shared]


def _sum(rows: list[SessionBytes]) -> SessionBytes:
    return SessionBytes(
        "",
        sum(r.transcript for r in rows),
        sum(r.history for r in rows),
        sum(r.usage for r in rows),
        sum(r.other for r in rows),
    )  # nothing "shared": each sharer's row says it, and the total counts it once


def _as_json(counts: SessionBytes) -> dict[str, Any]:
    return {
        "id": counts.session_id,
        "transcript": counts.transcript,
        "history": counts.history,
        "usage": counts.usage,
        "other": counts.other,
        "total": counts.total,
        "shared": counts.shared,
        "shared_with": list(counts.shared_with),
    }


def run(args: argparse.Namespace) -> int:
    """Print the bytes of every session of ``args.root``, the largest first."""
    index: int | None = None
    estimate: str | None = None
    if is_url(args.root):
        from ..storage.postgres.disk_use import ESTIMATE

        rows = _postgres(args.root)
        estimate = ESTIMATE
    else:
        root = existing_root(args.root)
        rows = count_once(store_files(root))
        index = index_bytes(root)
    total = _sum(rows)
    if args.json:
        whole = {
            key: value
            for key, value in _as_json(total).items()
            if key not in ("id", "shared", "shared_with")
        }
        print_json(
            {
                "sessions": [_as_json(counts) for counts in rows],
                "total": whole,
                "index": index,
                "estimate": estimate,
            }
        )
        return EXIT_OK
    if not rows:
        print(f"no sessions in {clean(args.root)}")
    else:
        print(header(_COLUMNS))
        for counts in rows:
            print(row(_cells(counts.session_id, counts), _COLUMNS))
        print(row(_cells("total", total), _COLUMNS))
        count = len(rows)
        print(f"{count} session{'' if count == 1 else 's'}, {total.total} bytes")
    for counts in rows:
        if counts.shared:
            others = ", ".join(repr(other) for other in counts.shared_with)
            print(f"{counts.session_id!r} shares {counts.shared} bytes with {clean(others)}")
    if any(counts.shared for counts in rows):
        print("(shared bytes are counted once, in the row of the session that wrote them)")
    if index is not None:
        print(f"the listing index (.sessionactors) takes {index} bytes more")
    if estimate is not None:
        print(textwrap.fill(f"PostgreSQL: {estimate}", WIDTH - 1))
    return EXIT_OK
