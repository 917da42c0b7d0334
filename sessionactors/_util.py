"""Small pieces of plumbing shared by the package's modules."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["NoPublicConstructor", "last", "without_password"]

T = TypeVar("T")


class NoPublicConstructor(type):
    """A metaclass for classes users receive but must not build (trio's pattern).

    ``Cls(...)`` raises ``TypeError``; the library builds one with
    ``Cls._create(...)``.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor (open_store makes one)"
        )

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        made: T = super().__call__(*args, **kwargs)  # type: ignore[misc]
        return made


def last(items: Sequence[T], count: int | None) -> Sequence[T]:
    """The last ``count`` of ``items``: all of them for None, none for 0."""
    if count is None or count >= len(items):
        return items
    return items[len(items) - count :] if count > 0 else items[:0]


def without_password(url: str) -> str:
    """``url`` as it may be shown: a password in it replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
