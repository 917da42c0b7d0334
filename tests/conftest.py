"""Fixtures shared by the tests: a store location for each backend (file, PostgreSQL).

The PostgreSQL half runs against ``SESSIONACTORS_TEST_POSTGRES_DSN`` (a
``postgresql://`` URL; ``.ci/run`` starts a throw-away server and sets it).
Each test gets a schema of its own, dropped afterwards. Without the variable
those tests are skipped, saying how to run them; with it, none is skipped.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import sessionactors

POSTGRES_DSN_ENV = "SESSIONACTORS_TEST_POSTGRES_DSN"
POSTGRES_SKIP = (
    f"PostgreSQL tests need a server: set {POSTGRES_DSN_ENV}=postgresql://user@host:port/db "
    "(.ci/run starts a throw-away cluster and sets it)"
)

StoreFactory = Callable[..., AbstractAsyncContextManager[sessionactors.SessionStore]]


def postgres_dsn() -> str:
    """The test server's URL, or skip the test (only when the variable is unset)."""
    dsn = os.environ.get(POSTGRES_DSN_ENV)
    if not dsn:
        pytest.skip(POSTGRES_SKIP)
    return dsn


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` with its connections' ``search_path`` set to ``schema``."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("options", f"-csearch_path={schema}"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` URL whose tables live in a fresh schema of this test."""
    import psycopg

    dsn = postgres_dsn()
    schema = f"sa_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(dsn, schema)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["file", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend a conformance test runs against."""
    name: str = request.param
    return name


@pytest.fixture
def location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | Path:
    """What ``open_store`` is given: a directory, or a ``postgresql://`` URL."""
    if backend == "file":
        return tmp_path / "store"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def make_store(location: str | Path) -> StoreFactory:
    """Opens a store on this test's location; ``"flush"`` durability unless told."""

    def factory(**options: Any) -> AbstractAsyncContextManager[sessionactors.SessionStore]:
        options.setdefault("durability", "flush")
        return sessionactors.open_store(location, **options)

    return factory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A store root that does not exist yet (open_store creates it)."""
    return tmp_path / "store"


@pytest.fixture
async def store(root: Path) -> AsyncIterator[sessionactors.SessionStore]:
    """A store on ``root``; "flush" durability, since fsync is not what these tests check."""
    async with sessionactors.open_store(root, durability="flush") as opened:
        yield opened
