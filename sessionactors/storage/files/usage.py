"""The token-usage log: ``token-usage.jsonl``, one compact JSON object a line."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from ..._model import decode_record
from ..protocol import IoCounts
from .durable import append_synced, cut_torn_tail, open_at, read_at, replace_whole
from .layout import LOG_FILE

__all__ = ["append_usage", "read_usage", "remove_usage", "write_usage"]


def append_usage(
    dir_fd: int,
    directory: str,
    data: bytes,
    *,
    counts: IoCounts,
    sync: Callable[[int], None],
    sync_directory: Callable[[], None],
) -> None:
    """Append whole lines to the token-usage log in one write (locked).

    A torn last line, left by a crash in the middle of an append, is cut
    off first so no record is glued onto it. If the write fails, the log
    is cut back to where it was.
    """
    flags = os.O_RDWR | os.O_APPEND
    try:
        fd = open_at(dir_fd, directory, LOG_FILE, flags)
    except FileNotFoundError:
        fd = open_at(dir_fd, directory, LOG_FILE, flags | os.O_CREAT)
        try:
            # Make the new name durable before any record is in it: a
            # failure here leaves no log, so a retry cannot double a record.
            sync_directory()
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(LOG_FILE, dir_fd=dir_fd)
            raise
    try:
        size = cut_torn_tail(fd, os.fstat(fd).st_size)
        append_synced(fd, data, size, sync)
    finally:
        os.close(fd)
    counts.append_batches += 1
    counts.bytes_written += len(data)


def write_usage(
    dir_fd: int,
    directory: str,
    data: bytes,
    *,
    counts: IoCounts,
    sync: Callable[[int], None],
    sync_directory: Callable[[], None],
) -> None:
    """Make the log hold exactly ``data`` (whole lines), durably (locked).

    A crash leaves the log as it was or as ``data``, never a part of it.
    """
    replace_whole(dir_fd, directory, LOG_FILE, data, sync, sync_directory)
    counts.append_batches += 1
    counts.bytes_written += len(data)


def remove_usage(dir_fd: int) -> bool:
    """Remove the log (locked); whether there was one."""
    try:
        os.unlink(LOG_FILE, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def read_usage(dir_fd: int, directory: str, log_path: str) -> list[dict[str, Any]]:
    """Every complete record of the log; a torn last line is left out."""
    data = read_at(dir_fd, directory, LOG_FILE)
    if data is None:
        return []
    lines = data.split(b"\n")
    lines.pop()  # empty after the final newline, or a torn tail
    return [decode_record(line, log_path, number) for number, line in enumerate(lines, 1)]
