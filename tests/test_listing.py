"""Listing for a UI: ``list_sessions(limit=, before=, pinned=, title_contains=)`` (part two).

Summaries come in the order (``updated_at``, ``id``) descending, ties in
``updated_at`` broken by ``id`` as Python orders ``str`` (forced here by
freezing the store's clock); ``before`` starts a page strictly after a
summary of an earlier page, even one whose session moved or is gone;
``pinned`` and ``title_contains`` (``str.casefold``) filter, alone, together
and with paging; bad arguments are refused; with no arguments it is the
whole list. Every summary equals the one derived from ``load_session``, and
paging 1,000 sessions while another task keeps writing other sessions
covers each exactly once.

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py).
What the file store's index does when damaged or left behind by a crash is
in test_listing_index.py.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest
import trio
from support import msg

import sessionactors._plan
from sessionactors import Session, SessionStore, SessionSummary


def summary_of(session: Session) -> SessionSummary:
    """The summary a listing must show of ``session`` as loaded.

    Built here from the summary's own fields, not by the library's
    ``summary_of``: each field but the count is the session's of that name.
    """
    same = {
        field.name: getattr(session, field.name)
        for field in attrs.fields(SessionSummary)
        if field.name != "message_count"
    }
    return SessionSummary(**same, message_count=len(session.messages))


def key(summary: SessionSummary) -> tuple[datetime, str]:
    return (summary.updated_at, summary.id)


async def truth(store: SessionStore, ids: list[str]) -> list[SessionSummary]:
    """Every existing session of ``ids`` as load_session shows it, in the listing's order."""
    found = []
    for session_id in ids:
        session = await store.load_session(session_id)
        if session is not None:
            found.append(summary_of(session))
    return sorted(found, key=key, reverse=True)


def select(
    summaries: list[SessionSummary], *, pinned: bool | None = None, title: str | None = None
) -> list[SessionSummary]:
    return [
        s
        for s in summaries
        if (pinned is None or s.pinned == pinned)
        and (title is None or title.casefold() in s.title.casefold())
    ]


async def all_pages(store: SessionStore, limit: int, **filters: Any) -> list[list[SessionSummary]]:
    pages: list[list[SessionSummary]] = []
    before = None
    while True:
        page = await store.list_sessions(limit=limit, before=before, **filters)
        assert len(page) <= limit
        if not page:
            return pages
        assert before is None or key(page[0]) < key(before), "a page must start after its cursor"
        pages.append(page)
        before = page[-1]


async def many(store: SessionStore, sessions: list[Session], tasks: int = 16) -> None:
    """Save ``sessions`` from ``tasks`` tasks at once."""
    queue = list(sessions)

    async def worker() -> None:
        while queue:
            await store.save_runtime_session(queue.pop())

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)


# --- order, paging, ties ---------------------------------------------------------------------


async def test_paging_covers_every_session_once_while_others_are_written(
    store: SessionStore,
) -> None:
    ids = [f"s{n:04d}" for n in range(1000)]
    await many(store, [Session(id=i, title=f"T {i}", messages=[msg("m")]) for i in ids])
    await store.save_runtime_session(Session(id="hot"))
    fixed = await truth(store, ids)
    stop = trio.Event()

    async def writer() -> None:
        count = 0
        while not stop.is_set():
            count += 1
            await store.save_runtime_session(Session(id="hot", metadata={"count": count}))
            await store.save_runtime_session(Session(id=f"new{count}"))
            if count % 5 == 0:
                await store.set_title("hot", f"hot {count}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        pages = await all_pages(store, 37)
        stop.set()

    seen = [summary for page in pages for summary in page]
    keys = [key(summary) for summary in seen]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)
    ids_seen = [summary.id for summary in seen]
    assert len(ids_seen) == len(set(ids_seen))  # no session twice, not even the hot one
    assert [s for s in seen if s.id.startswith("s")] == fixed  # each once, as loaded
    assert all(len(page) == 37 for page in pages[:-1])


async def test_the_order_is_updated_at_then_id_descending(store: SessionStore) -> None:
    ids = [f"x{n}" for n in range(30)]
    await many(store, [Session(id=i) for i in ids], tasks=8)
    rng = random.Random(7)
    for session_id in rng.sample(ids, 10):
        await store.set_pinned(session_id, True)
    listed = await store.list_sessions()
    assert listed == await truth(store, ids)
    assert [key(s) for s in listed] == sorted((key(s) for s in listed), reverse=True)


TIED_IDS = ["a", "B", "_", "ä", "Z", "a_b", "aB", "é", "日本", "-x", "~", "a b", "A", "zz", "Ω"]


async def test_ties_in_updated_at_are_ordered_and_paged_by_id(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the store's clock frozen, every session has one updated_at: the id decides,
    compared as Python compares str (code points), on every backend."""
    frozen = datetime(2021, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    monkeypatch.setattr(sessionactors._plan, "utc_now", lambda: frozen)
    for session_id in TIED_IDS:
        await store.save_runtime_session(Session(id=session_id, title=session_id))
    await store.set_pinned("é", True)
    monkeypatch.undo()
    await store.save_runtime_session(Session(id="later"))
    expected = await truth(store, [*TIED_IDS, "later"])
    assert [s.id for s in expected] == ["later", *sorted(TIED_IDS, reverse=True)]
    assert await store.list_sessions() == expected
    for limit in (1, 2, 3, 4, 7):
        pages = await all_pages(store, limit)
        assert [s for page in pages for s in page] == expected, limit
    # A cursor in the middle of the tie: strictly after it, ties included.
    middle = expected[6]
    assert await store.list_sessions(before=middle) == expected[7:]
    assert await store.list_sessions(before=middle, limit=2) == expected[7:9]
    assert await store.list_sessions(before=middle, pinned=True) == [
        s for s in expected[7:] if s.pinned
    ]


async def test_before_is_a_position_not_a_session(store: SessionStore) -> None:
    """A cursor whose session moved to the top, or was deleted, still starts the next page."""
    ids = [f"p{n}" for n in range(12)]
    for session_id in ids:
        await store.save_runtime_session(Session(id=session_id))
    first = await store.list_sessions(limit=5)
    rest = (await store.list_sessions())[5:]
    cursor = first[-1]
    await store.update_session(cursor.id, lambda s: s.metadata.update(moved=True))
    assert await store.list_sessions(before=cursor) == rest
    assert await store.delete_session(cursor.id)
    assert await store.list_sessions(before=cursor, limit=3) == rest[:3]
    assert await store.list_sessions(before=rest[-1]) == []


# --- filters ------------------------------------------------------------------------------------

TITLES = {
    "t1": ("Straße nach Hause", True),
    "t2": ("STRASSE", False),
    "t3": ("Die strasse", True),
    "t4": ("Other", True),
    "t5": ("", False),
    "t6": ("ﬁle Ligature", False),
    "t7": ("ΣΊΣΥΦΟΣ", True),
    "t8": ("στρασσε straße", False),
}


async def titled(store: SessionStore) -> list[SessionSummary]:
    for session_id, (title, pinned) in TITLES.items():
        await store.save_runtime_session(Session(id=session_id, messages=[msg(session_id)]))
        if title:
            await store.set_title(session_id, title)
        if pinned:
            await store.set_pinned(session_id, True)
    return await truth(store, list(TITLES))


@pytest.mark.parametrize(
    ("needle", "ids"),
    [
        pytest.param("STRASSE", {"t1", "t2", "t3", "t8"}, id="ss-matches-eszett"),
        pytest.param("straße", {"t1", "t2", "t3", "t8"}, id="eszett-matches-ss"),
        pytest.param("sSe nACH", {"t1"}, id="mixed-case"),
        pytest.param("FILE", {"t6"}, id="ligature"),
        pytest.param("σίσυφος", {"t7"}, id="final-sigma"),
        pytest.param("", set(TITLES), id="empty-matches-all"),
        pytest.param("nowhere", set(), id="none"),
    ],
)
async def test_title_contains_compares_casefolded(
    store: SessionStore, needle: str, ids: set[str]
) -> None:
    everything = await titled(store)
    listed = await store.list_sessions(title_contains=needle)
    assert {s.id for s in listed} == ids
    assert listed == select(everything, title=needle)


async def test_pinned_filters(store: SessionStore) -> None:
    everything = await titled(store)
    assert await store.list_sessions(pinned=True) == select(everything, pinned=True)
    assert await store.list_sessions(pinned=False) == select(everything, pinned=False)
    assert {s.id for s in await store.list_sessions(pinned=True)} == {"t1", "t3", "t4", "t7"}


@pytest.mark.parametrize("pinned", [None, True, False])
@pytest.mark.parametrize("needle", [None, "strasse", "e"])
@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_filters_combine_with_limit_and_before(
    store: SessionStore, pinned: bool | None, needle: str | None, limit: int
) -> None:
    everything = await titled(store)
    wanted = select(everything, pinned=pinned, title=needle)
    pages = await all_pages(store, limit, pinned=pinned, title_contains=needle)
    assert [s for page in pages for s in page] == wanted
    assert all(len(page) == limit for page in pages[:-1])
    # A cursor taken from an unfiltered listing works for a filtered page too.
    cursor = everything[2]
    assert (
        await store.list_sessions(before=cursor, pinned=pinned, title_contains=needle, limit=limit)
        == [s for s in wanted if key(s) < key(cursor)][:limit]
    )


# --- arguments, the call of part one, agreement with load_session ------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"limit": 0}, id="limit-0"),
        pytest.param({"limit": -1}, id="limit-negative"),
        pytest.param({"limit": True}, id="limit-true"),
        pytest.param({"limit": 1.5}, id="limit-float"),
        pytest.param({"limit": 2.0}, id="limit-whole-float"),
        pytest.param({"limit": "3"}, id="limit-str"),
        pytest.param({"before": "s1"}, id="before-an-id"),
        pytest.param({"before": ("2024", "s1")}, id="before-a-tuple"),
        pytest.param({"pinned": 1}, id="pinned-int"),
        pytest.param({"pinned": "yes"}, id="pinned-str"),
        pytest.param({"title_contains": 3}, id="title-int"),
        pytest.param({"title_contains": b"x"}, id="title-bytes"),
    ],
)
async def test_bad_arguments_are_refused(store: SessionStore, arguments: dict[str, Any]) -> None:
    await store.save_runtime_session(Session(id="s1"))
    with pytest.raises((TypeError, ValueError)):
        await store.list_sessions(**arguments)
    assert [s.id for s in await store.list_sessions()] == ["s1"]


@pytest.mark.parametrize(
    ("change", "error", "says"),
    [
        (
            {"updated_at": datetime(2024, 1, 1)},
            ValueError,
            "before.updated_at must be timezone-aware",
        ),
        (
            {"updated_at": "2024-01-01T00:00:00+00:00"},
            TypeError,
            "before.updated_at must be a datetime",
        ),
        ({"id": 5}, TypeError, "before.id must be a str"),
    ],
)
async def test_a_cursor_no_page_can_start_after_is_refused_as_such(
    store: SessionStore, change: dict[str, Any], error: type[Exception], says: str
) -> None:
    """A summary made by hand: the error names the field, not what comparing it broke."""
    await store.save_runtime_session(Session(id="s1"))
    await store.save_runtime_session(Session(id="s2"))
    cursor = (await store.list_sessions(limit=1))[0]
    with pytest.raises(error, match=says):
        await store.list_sessions(before=attrs.evolve(cursor, **change))


async def test_no_arguments_is_the_whole_list(store: SessionStore) -> None:
    assert await store.list_sessions() == []
    assert await store.list_sessions(limit=5) == []
    everything = await titled(store)
    assert await store.list_sessions() == everything
    assert (
        await store.list_sessions(limit=None, before=None, pinned=None, title_contains=None)
        == everything
    )
    assert await store.list_sessions(limit=10**6) == everything
    # Beyond a 64-bit count (PostgreSQL's LIMIT is a bigint): still every session.
    for huge in (2**63 - 1, 2**63, 10**30):
        assert await store.list_sessions(limit=huge) == everything
        assert await store.list_sessions(limit=huge, pinned=False) == [
            s for s in everything if not s.pinned
        ]


async def test_every_summary_agrees_with_load_session(store: SessionStore) -> None:
    """After every kind of write (and deletes), each summary is the loaded session's."""
    ids = [f"a{n}" for n in range(8)]
    for session_id in ids:
        await store.save_runtime_session(Session(id=session_id, messages=[msg("m")]))
    await store.checkpoint_runtime_session(Session(id="a0", messages=[msg("n")]))
    await store.set_title("a1", "One")
    await store.set_pinned("a2", True)
    await store.update_session("a3", lambda s: s.messages.extend([msg("x"), msg("y")]))
    await store.rewind_session("a0", 1)
    await store.fork_session("a0", "fork", revision=2, title="Forked")
    await store.fork_session("fork", "fork2")
    await store.delete_session("a4")
    await store.delete_session("fork")
    ids += ["fork", "fork2"]
    expected = await truth(store, ids)
    assert {s.id for s in expected} == set(ids) - {"a4", "fork"}
    assert await store.list_sessions() == expected
    fork2 = next(s for s in expected if s.id == "fork2")
    assert (fork2.forked_from, fork2.title, fork2.message_count) == ("fork", "Forked", 2)
    for limit in (1, 3):
        assert [s for page in await all_pages(store, limit) for s in page] == expected
    # And after the session a summary names is written again, its next listing follows.
    await store.save_runtime_session(Session(id="a5", messages=[]))
    assert await store.list_sessions() == await truth(store, ids)
