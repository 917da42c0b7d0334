"""The options of a store, checked once, in one frozen value."""

from __future__ import annotations

import os
from typing import Any, Literal

import attrs

__all__ = ["DEFAULT_HISTORY", "Durability", "StoreOptions"]

#: Revisions kept loadable per session unless a store is told otherwise.
DEFAULT_HISTORY = 100

Durability = Literal["fsync", "flush"]


def _positive_number(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _positive_int(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{attribute.name} must be a positive int, got {value!r}")


def _durability(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("fsync", "flush"):
        raise ValueError(f"durability must be 'fsync' or 'flush', got {value!r}")


def _optional_timeout(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (
        isinstance(value, bool) or not (isinstance(value, (int, float)) and value >= 0)
    ):
        raise ValueError(f"{attribute.name} must be None or a number >= 0, got {value!r}")


def default_threads(*, waits_on_network: bool) -> int:
    """Worker threads when ``max_threads`` is None.

    32 for a database, whose calls wait on the network; otherwise
    ``concurrent.futures``' rule: file work is short system calls and Python
    runs one thread at a time, so more threads mostly contend.
    """
    return 32 if waits_on_network else min(32, (os.cpu_count() or 1) + 4)


@attrs.frozen(kw_only=True)
class StoreOptions:
    """What ``open_store`` was asked for, each value checked (``ValueError`` otherwise).

    See :func:`sessionactors.open_store` for the meaning of each.
    """

    durability: Durability = attrs.field(default="fsync", validator=_durability)
    idle_timeout: float = attrs.field(default=30.0, validator=_positive_number)
    mailbox_size: int = attrs.field(default=256, validator=_positive_int)
    max_threads: int = attrs.field(validator=_positive_int)
    drain_timeout: float | None = attrs.field(default=None, validator=_optional_timeout)
    history: int = attrs.field(default=DEFAULT_HISTORY, validator=_positive_int)

    @property
    def fsync(self) -> bool:
        return self.durability == "fsync"
