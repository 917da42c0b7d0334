"""``list`` filtered and by pages, and ``watch``: the command line a UI's user reaches for.

Each command runs as a user runs it (``python -m sessionactors``); ``watch``
runs as a child that the test writes beside, reads line by line through a
pipe, and stops with Ctrl-C (SIGINT), as a user would.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import trio
from cli_support import run

from sessionactors import Message, Session, SessionStore, SessionSummary, open_store
from sessionactors.cli.listing import cursor_of, parse_cursor

#: The sessions of the built store: id, title, pinned. Saved in this order, so
#: ``list`` shows them the other way round. The ids hold what a cursor must carry.
SESSIONS: list[tuple[str, str, bool]] = [
    ("alpha", "Fix the parser", True),
    ("beta two", "Straße plans", False),
    ("gamma%20", "Parser notes", False),
    ("délta-ü", "Shopping list", True),
    ("ε 100% é", "STRASSE survey", False),
    ("zeta", "", False),
    ("eta.~_-", "Parsing, again", True),
]
NEWEST_FIRST = [session_id for session_id, _, _ in reversed(SESSIONS)]
WAIT = 30.0  # seconds a watch line may take to come, at most


async def _build(root: Path | str) -> None:
    async with open_store(root, durability="flush") as store:
        for session_id, title, pinned in SESSIONS:
            session = Session(id=session_id, messages=[msg("m1", "hello")])
            await store.save_runtime_session(session)
            if title:
                await store.set_title(session_id, title)
            if pinned:
                await store.set_pinned(session_id, True)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("built") / "store"
    trio.run(_build, root)
    return root


def msg(message_id: str, content: str) -> Message:
    return Message(id=message_id, role="user", content=content)


def listed(*args: object) -> list[str]:
    """The ids ``list --json ARGS`` prints, in its order."""
    result = run("list", *args, "--json")
    assert result.returncode == 0, result.stderr
    return [entry["id"] for entry in json.loads(result.stdout)]


def more_of(stderr: str) -> list[str] | None:
    """The arguments a ``more:`` line on stderr names (``--after CURSOR``), or None."""
    lines = [line for line in stderr.splitlines() if line.startswith("more: ")]
    if not lines:
        return None
    assert len(lines) == 1, stderr
    return shlex.split(lines[0].removeprefix("more: "))


def pages(*args: object) -> Iterator[list[str]]:
    """Every page of ``list ARGS --json``, following each ``more:`` line to the next."""
    after: list[str] = []
    for _ in range(100):
        result = run("list", *args, *after, "--json")
        assert result.returncode == 0, result.stderr
        yield [entry["id"] for entry in json.loads(result.stdout)]
        more = more_of(result.stderr)
        if more is None:
            return
        assert more[0] == "--after" and len(more) == 2, more
        after = more
    raise AssertionError("paging does not end")


# --- list: filters ---------------------------------------------------------------------


def test_list_everything_newest_first(built: Path) -> None:
    assert listed(built) == NEWEST_FIRST


def test_list_pinned_and_unpinned(built: Path) -> None:
    pinned = [session_id for session_id, _, pin in reversed(SESSIONS) if pin]
    assert listed(built, "--pinned") == pinned == ["eta.~_-", "délta-ü", "alpha"]
    unpinned = [session_id for session_id in NEWEST_FIRST if session_id not in pinned]
    assert listed(built, "--unpinned") == unpinned


def test_list_title_casefolded(built: Path) -> None:
    assert listed(built, "--title", "PARS") == ["eta.~_-", "gamma%20", "alpha"]
    # Casefolded: ß is ss, so either spelling finds both.
    assert listed(built, "--title", "strasse") == ["ε 100% é", "beta two"]
    assert listed(built, "--title", "Straße") == ["ε 100% é", "beta two"]
    assert listed(built, "--title", "nothing like it") == []
    assert listed(built, "--title", "pars", "--pinned") == ["eta.~_-", "alpha"]
    assert listed(built, "--title", "pars", "--unpinned") == ["gamma%20"]


def test_list_filtered_table(built: Path) -> None:
    result = run("list", built, "--pinned", "--title", "parser")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["ID", "alpha"]
    assert result.stderr == ""
    nothing = run("list", built, "--title", "nothing like it")
    assert (nothing.returncode, nothing.stderr) == (0, "")
    assert nothing.stdout.startswith("no matching sessions in ")


# --- list: pages -------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8])
def test_paging_lists_every_session_once(built: Path, limit: int) -> None:
    seen = list(pages(built, "--limit", limit))
    assert [item for page in seen for item in page] == NEWEST_FIRST
    assert all(len(page) == limit for page in seen[:-1])
    # A page that is full but last tells of no more: no empty page at the end.
    assert len(seen) == -(-len(SESSIONS) // limit)
    assert seen[-1]


def test_paging_with_filters(built: Path) -> None:
    seen = list(pages(built, "--unpinned", "--limit", "1"))
    assert [item for page in seen for item in page] == listed(built, "--unpinned")
    assert len(seen) == 4
    seen = list(pages(built, "--title", "PARS", "--limit", "2"))
    assert seen == [["eta.~_-", "gamma%20"], ["alpha"]]


def test_a_page_in_a_table_ends_with_its_cursor(built: Path) -> None:
    first = run("list", built, "--limit", "2")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["ID", "eta.~_-", "zeta"]
    assert lines[3] == "(2 sessions shown, more after them)"
    more = more_of(first.stderr)
    assert more is not None
    # The cursor is one shell word: it needs no quoting, whatever the id holds.
    assert shlex.quote(more[1]) == more[1]
    second = run("list", built, "--limit", "5", *more)
    assert [line.split()[0] for line in second.stdout.splitlines()] == [
        "ID",
        "ε",
        "délta-ü",
        "gamma%20",
        "beta",
        "alpha",
    ]
    assert (second.returncode, second.stderr) == (0, "")
    last = run("list", built, *more)  # no limit: everything after the cursor
    assert last.stdout == second.stdout
    assert last.stderr == ""


def test_a_cursor_carries_any_id() -> None:
    when = datetime(2026, 12, 6, 18, 0, 0, 123456, tzinfo=timezone.utc)
    for session_id in [sid for sid, _, _ in SESSIONS] + ["a b", "x:y", "%", "😀", "a+b=c"]:
        summary = SessionSummary(
            id=session_id,
            title="t",
            pinned=True,
            title_version=1,
            metadata_version=2,
            created_at=when,
            updated_at=when + timedelta(hours=5),
            message_count=3,
            revision=4,
            forked_from=None,
        )
        cursor = cursor_of(summary)
        assert shlex.quote(cursor) == cursor
        assert cursor.count("/") == 1
        back = parse_cursor(cursor)
        assert (back.updated_at, back.id) == (summary.updated_at, session_id)
    at = parse_cursor("2026-12-06T18:00:00Z/")
    assert (at.updated_at, at.id) == (datetime(2026, 12, 6, 18, tzinfo=timezone.utc), "")


def test_a_cursor_by_hand(built: Path) -> None:
    everything = run("list", built, "--json")
    summaries = json.loads(everything.stdout)
    third = datetime.fromisoformat(summaries[2]["updated_at"])
    # TIME/: the sessions last updated before TIME.
    assert listed(built, "--after", f"{third.isoformat()}/") == NEWEST_FIRST[3:]
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert listed(built, "--after", f"{future.isoformat()}/") == NEWEST_FIRST
    assert listed(built, "--after", "2000-01-01T00:00:00+00:00/") == []
    empty = run("list", built, "--after", "2000-01-01T00:00:00+00:00/")
    assert empty.stdout.startswith("no matching sessions in ")


# --- bad arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--limit", "0"], "must be at least 1"),
        (["--limit", "-3"], "must be at least 1"),
        (["--limit", "ten"], "not a whole number"),
        (["--after", "garbage"], "bad cursor 'garbage'"),
        (["--after", "yesterday/alpha"], "bad cursor"),
        (["--after", "2026-12-06T18:00:00/alpha"], "needs a UTC offset"),
        (["--after", "2026-12-06/alpha"], "needs a UTC offset"),
        (["--after", "2026-12-06T18:00:00+00:00/%ff"], "bad cursor"),
        (["--after", "\x1b[31m/x"], "bad cursor '\\x1b[31m/x'"),
        (["--pinned", "--unpinned"], "not allowed with argument"),
        (["--title"], "expected one argument"),
    ],
)
def test_list_bad_arguments(built: Path, args: list[str], said: str) -> None:
    result = run("list", built, *args)
    assert result.returncode == 2
    assert said in result.stderr
    assert result.stdout == ""
    assert "\x1b" not in result.stderr


def test_bad_roots_and_ids(tmp_path: Path, built: Path) -> None:
    for args in (("list", tmp_path / "nothing", "--pinned"), ("watch", tmp_path / "nothing")):
        result = run(*args)
        assert result.returncode == 2
        assert "no store at" in result.stderr
    result = run("watch", built, "..")
    assert result.returncode == 2
    assert "invalid session id" in result.stderr
    assert run("watch").returncode == 2


# --- watch -------------------------------------------------------------------------------


class Watcher:
    """``sessionactors watch ARGS`` as a child, its stdout read line by line as it comes."""

    def __init__(self, *args: object) -> None:
        # Buffered as a pipe is by default: it is watch that flushes each line.
        env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sessionactors", "watch", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors: queue.Queue[str | None] = queue.Queue()
        self.pumps = [
            threading.Thread(target=self._pump, args=(stream, into), daemon=True)
            for stream, into in (
                (self.process.stdout, self.lines),
                (self.process.stderr, self.errors),
            )
        ]
        for pump in self.pumps:
            pump.start()
        self.stderr: list[str] = []

    @staticmethod
    def _pump(stream: Any, into: queue.Queue[str | None]) -> None:
        for line in stream:
            into.put(line.rstrip("\n"))
        into.put(None)

    def ready(self) -> str:
        """Wait for its "watching" line on stderr: from then on it sees every write."""
        line = self.errors.get(timeout=WAIT)
        assert line is not None, self.finish()
        self.stderr.append(line)
        assert line.startswith("watching "), line
        return line

    def next_line(self) -> str:
        line = self.lines.get(timeout=WAIT)
        assert line is not None, "watch ended"
        return line

    def until(self, predicate: Callable[[str], bool]) -> list[str]:
        """The lines up to the first that ``predicate`` holds for, that one included."""
        seen = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            seen.append(self.next_line())
            if predicate(seen[-1]):
                return seen
        raise AssertionError(f"not seen; only {seen}")

    def finish(self, sig: int = signal.SIGINT) -> tuple[int, list[str], str]:
        """Stop it with ``sig``: its exit status, the lines not read yet, its stderr."""
        self.process.send_signal(sig)
        try:
            status = self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        rest = []
        while (line := self.lines.get(timeout=WAIT)) is not None:
            rest.append(line)
        while (line := self.errors.get(timeout=WAIT)) is not None:
            self.stderr.append(line)
        return status, rest, "\n".join(self.stderr)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pump in self.pumps:
            pump.join(timeout=WAIT)
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()


@pytest.fixture
def watcher() -> Iterator[Callable[..., Watcher]]:
    made: list[Watcher] = []

    def start(*args: object) -> Watcher:
        made.append(Watcher(*args))
        return made[-1]

    yield start
    for each in made:
        each.close()


def write(location: Path | str, work: Callable[[SessionStore], Awaitable[object]]) -> None:
    """Run ``work`` in a store of this (the test's) process, closed after."""

    async def go() -> None:
        async with open_store(location, durability="flush") as store:
            await work(store)

    trio.run(go)


def fields(line: str) -> tuple[str, str, str]:
    """A table line's kind, revision and id (the time before them aside)."""
    _date, _time, kind, revision, session_id = line.split(maxsplit=4)
    return kind, revision, session_id


def check_every_kind(location: Path | str, watch: Watcher) -> None:
    """Write each kind of change in turn; the watch prints each before the next is made."""
    assert watch.next_line().split() == ["TIME", "(UTC)", "KIND", "REV", "ID"]
    session = Session(id="s one", messages=[msg("m1", "hi")])

    def seen(kind: str, revision: str, session_id: str = "s one") -> None:
        lines = watch.until(lambda line: fields(line) == (kind, revision, session_id))
        # Nothing else comes between: each write is one change, in order.
        assert len(lines) == 1, lines

    write(location, lambda store: store.save_runtime_session(session))
    seen("save", "1")
    write(location, lambda store: store.set_title("s one", "First"))
    seen("title", "2")
    write(location, lambda store: store.set_pinned("s one", True))
    seen("pinned", "3")
    write(location, lambda store: store.append_token_usage_record("s one", {"model": "m"}))
    seen("usage", "-")
    write(location, lambda store: store.fork_session("s one", "s two"))
    seen("fork", "1", "s two")
    write(location, lambda store: store.rewind_session("s one", 1))
    seen("rewind", "4")
    write(location, lambda store: store.delete_session("s two"))
    seen("delete", "-", "s two")
    status, rest, stderr = watch.finish()
    assert (status, rest) == (0, [])
    assert "Traceback" not in stderr, stderr
    assert stderr.startswith("watching "), stderr


def test_watch_prints_each_change_until_ctrl_c(tmp_path: Path, watcher: Any) -> None:
    root = tmp_path / "store"
    root.mkdir()
    watch = watcher(root)
    assert watch.ready() == f"watching {root}: every session; Ctrl-C stops"
    check_every_kind(root, watch)


def test_watch_postgres(postgres_url: str, watcher: Any) -> None:
    write(postgres_url, lambda store: store.list_sessions())  # the schema, made
    # A password in the URL (the test server trusts, and ignores it) is never printed.
    with_password = postgres_url.replace("@", ":hunter2@", 1)
    watch = watcher(with_password)
    assert watch.ready().startswith("watching postgresql://")
    check_every_kind(postgres_url, watch)
    assert "hunter2" not in "\n".join(watch.stderr)


def test_watch_one_session_as_json(tmp_path: Path, watcher: Any) -> None:
    root = tmp_path / "store"
    write(root, lambda store: store.save_runtime_session(Session(id="other")))
    watch = watcher(root, "mine", "--json")
    assert watch.ready() == f"watching {root}: session 'mine'; Ctrl-C stops"
    before = datetime.now(timezone.utc)

    async def both(store: SessionStore) -> None:
        await store.save_runtime_session(Session(id="other"))
        await store.save_runtime_session(Session(id="mine"))
        await store.set_title("other", "Not watched")
        await store.set_title("mine", "Watched")

    write(root, both)
    changes = [json.loads(watch.next_line())]
    if changes[0]["revision"] == 1:  # the save, not yet folded into the title
        changes.append(json.loads(watch.next_line()))
    assert {change["session_id"] for change in changes} == {"mine"}
    assert changes[-1] == {**changes[-1], "kind": "title", "revision": 2}
    assert list(changes[-1]) == ["time", "session_id", "kind", "revision"]
    when = datetime.fromisoformat(changes[-1]["time"])
    assert before <= when <= datetime.now(timezone.utc)
    status, rest, stderr = watch.finish()
    assert (status, rest) == (0, [])
    assert "Traceback" not in stderr, stderr


def test_watch_stops_on_sigterm_too(tmp_path: Path, watcher: Any) -> None:
    root = tmp_path / "store"
    root.mkdir()
    watch = watcher(root, "--json")
    watch.ready()
    status, rest, stderr = watch.finish(signal.SIGTERM)
    assert (status, rest) == (0, [])
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_while_the_store_opens_ends_the_watch_with_status_0(watcher: Any, sig: int) -> None:
    """A database slow to answer: the stop comes while the store is still opening."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        watch = watcher(f"postgresql://nobody@127.0.0.1:{port}/db?connect_timeout=2")
        silent.settimeout(WAIT)
        connection, _ = silent.accept()  # the store is opening now
        with connection:
            status, rest, stderr = watch.finish(sig)
    assert (status, rest) == (0, [])
    assert "Traceback" not in stderr, stderr


def test_a_password_given_where_a_directory_is_wanted_is_never_printed() -> None:
    result = run("show", "postgresql://someone:hunter2@127.0.0.1:1/db", "s")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr + result.stdout
    assert "someone:***@" in result.stderr


# --- PostgreSQL --------------------------------------------------------------------------


def test_list_pages_on_postgres(postgres_url: str) -> None:
    trio.run(_build, postgres_url)
    seen = list(pages(postgres_url, "--limit", "3"))
    assert [item for page in seen for item in page] == NEWEST_FIRST
    assert [len(page) for page in seen] == [3, 3, 1]
    assert listed(postgres_url, "--pinned", "--title", "PARS") == ["eta.~_-", "alpha"]


# --- a damaged session -------------------------------------------------------------------


def test_a_page_names_a_session_it_skips(built: Path, tmp_path: Path) -> None:
    future = datetime.now(timezone.utc) + timedelta(days=1)
    for number, args in enumerate([["--unpinned"], ["--after", f"{future.isoformat()}/"]]):
        root = tmp_path / f"store{number}"
        shutil.copytree(built, root)
        # A list reads each log's header and last commit only: damage it there.
        (log,) = (root / "zeta").glob("log.*.jsonl")
        log.write_bytes(log.read_bytes().replace(b'"first":1', b'"first":2', 1))
        # No listing index yet (a root from before it, say): the listing reads every session.
        shutil.rmtree(root / ".sessionactors")
        result = run("list", root, *args, "--json")
        assert result.returncode == 1, result.stderr
        assert "zeta" not in [entry["id"] for entry in json.loads(result.stdout)]
        assert "warning: skipped session 'zeta': " in result.stderr
        assert f"`sessionactors verify {root}`" in result.stderr
