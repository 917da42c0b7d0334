"""Fixtures shared by the tests: a store location for each backend (files, memory, PostgreSQL).

The PostgreSQL half runs against ``SESSIONACTORS_TEST_POSTGRES_DSN`` (a
``postgresql://`` URL; ``.ci/run`` starts a throw-away server and sets it).
Each test gets a schema of its own, dropped afterwards. Without the variable
those tests are skipped, saying how to run them; with it, none is skipped.

A test taking ``store`` (or ``make_store``, ``location``, ``backend``) runs once
for each backend. One that checks the files themselves either takes ``disk``
(the file store's root, ``None`` on the others) and guards those checks, or is
marked ``@file_only``; a test taking only ``root`` opens a file store itself.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import sessionactors
import sessionactors._batch
import sessionactors._runner

POSTGRES_DSN_ENV = "SESSIONACTORS_TEST_POSTGRES_DSN"
POSTGRES_SKIP = (
    f"PostgreSQL tests need a server: set {POSTGRES_DSN_ENV}=postgresql://user@host:port/db "
    "(.ci/run starts a throw-away cluster and sets it)"
)

StoreFactory = Callable[..., AbstractAsyncContextManager[sessionactors.SessionStore]]

#: Runs a test taking ``store`` (or ``backend``) on the file store only: it checks files.
file_only = pytest.mark.parametrize("backend", ["file"])


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


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A ``postgresql://`` URL whose tables live in a schema made for it, dropped afterwards."""
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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` URL whose tables live in a fresh schema of this test."""
    with fresh_schema() as url:
        yield url


@pytest.fixture(params=["file", "memory", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend a conformance test runs against."""
    name: str = request.param
    return name


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A file store's root that does not exist yet (open_store creates it)."""
    return tmp_path / "store"


@pytest.fixture
def location(backend: str, root: Path, request: pytest.FixtureRequest) -> str | Path:
    """What ``open_store`` is given: a directory, a ``memory://`` or ``postgresql://`` URL.

    The memory space is named for this test, so every store the test opens
    shares it, as stores on one directory do.
    """
    if backend == "file":
        return root
    if backend == "memory":
        return f"memory://test-{uuid.uuid4().hex}"
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
def disk(backend: str, root: Path) -> Path | None:
    """The file store's root, for checks of the files themselves; ``None`` on other backends."""
    return root if backend == "file" else None


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[sessionactors.SessionStore]:
    """A store on this test's backend; "flush" durability, since fsync is not checked here."""
    async with make_store() as opened:
        yield opened


class Gate:
    """Holds the first batch of one session in its worker thread until opened.

    The actor's storage work (files or SQL) runs in a thread; holding it there
    makes "while the batch runs" and "while queued behind a batch" states a
    test can rely on.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, session_id: str) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.used = False
        original = sessionactors._runner.run_batch

        def gated(files: Any, ops: Any, **options: Any) -> Any:
            if files.session_id == session_id and not self.used:
                self.used = True
                self.entered.set()
                self.released.wait(30)  # bounded, so a broken test cannot hang forever
            return original(files, ops, **options)

        monkeypatch.setattr(sessionactors._runner, "run_batch", gated)

    async def wait_entered(self) -> None:
        assert await trio.to_thread.run_sync(self.entered.wait, 30)

    def open(self) -> None:
        self.released.set()


@pytest.fixture
def gates(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Gate]]:
    made: list[Gate] = []

    def make(session_id: str) -> Gate:
        gate = Gate(monkeypatch, session_id)
        made.append(gate)
        return gate

    yield make
    for gate in made:
        gate.open()
