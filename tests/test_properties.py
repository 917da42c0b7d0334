"""Property tests: the merge rule, checkpoints and cancellation against simple models.

Each example runs its own trio loop on its own temporary root (sync tests
calling ``trio.run``), so hypothesis can shrink failures freely.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.lowlevel
from hypothesis import event, given, settings
from hypothesis import strategies as st
from support import session_files

import sessionactors
from sessionactors import Message, Session, SessionNotFoundError, SessionStore
from sessionactors._merge import Authoritative, merge_authoritative, merge_transcript, pin, retitle

SETTINGS = settings(max_examples=50, deadline=None)


def run_in_store(body: Callable[[SessionStore, Path], Awaitable[None]]) -> None:
    """Run ``body`` with a fresh "flush" store on a fresh root, in a fresh trio loop."""

    async def main(root: Path) -> None:
        async with sessionactors.open_store(root, durability="flush") as store:
            await body(store, root)

    with tempfile.TemporaryDirectory() as directory:
        trio.run(main, Path(directory) / "root")


def group_of(session: Session) -> Authoritative:
    return Authoritative(
        title=session.title,
        title_version=session.title_version,
        pinned=session.pinned,
        metadata_version=session.metadata_version,
    )


# --- the merge rule, pure -------------------------------------------------------------

titles = st.text(alphabet="ab \t", max_size=3)
groups = st.builds(
    Authoritative,
    title=titles,
    title_version=st.integers(0, 4),
    pinned=st.booleans(),
    metadata_version=st.integers(0, 4),
)


def model_merge(persisted: Authoritative | None, caller: Authoritative) -> Authoritative:
    """The merge rule as written: none persisted, or a strictly newer caller, wins."""
    if persisted is None:
        return caller
    if caller.metadata_version > persisted.metadata_version:
        return caller
    return persisted  # ties go to disk


@SETTINGS
@given(persisted=st.none() | groups, caller=groups)
def test_merge_authoritative_matches_the_model(
    persisted: Authoritative | None, caller: Authoritative
) -> None:
    merged = merge_authoritative(persisted, caller)
    assert merged == model_merge(persisted, caller)
    # Decided as one group: every field comes from the same side.
    assert merged is persisted or merged is caller


@SETTINGS
@given(group=groups, title=titles, pinned=st.booleans())
def test_ui_edits_match_the_model(group: Authoritative, title: str, pinned: bool) -> None:
    renamed = retitle(group, title) if title.strip() else None
    if not title.strip() or title.strip() == group.title:
        assert renamed is None
    else:
        assert renamed == attrs.evolve(
            group,
            title=title.strip(),
            title_version=group.title_version + 1,
            metadata_version=group.metadata_version + 1,
        )
    pinned_group = pin(group, pinned)
    if pinned == group.pinned:
        assert pinned_group is None
    else:
        assert pinned_group == attrs.evolve(
            group, pinned=pinned, metadata_version=group.metadata_version + 1
        )


ids = st.lists(st.sampled_from("abcdef"), max_size=6)


@SETTINGS
@given(persisted=ids, incoming=ids)
def test_merge_transcript_matches_the_model(persisted: list[str], incoming: list[str]) -> None:
    old = [Message(id=i, role="user", content=f"old {n}") for n, i in enumerate(persisted)]
    new = [Message(id=i, role="user", content=f"new {n}") for n, i in enumerate(incoming)]
    merged = merge_transcript(old, new)
    assert merged == old + [m for m in new if m.id not in set(persisted)]
    assert merged[: len(old)] == old  # never shrinks, persisted order kept


# --- the merge rule through the store ------------------------------------------------

# A save's group must be one the store accepts: title_version <= metadata_version
# (tests/test_values.py has the refusals).
storable_groups = groups.filter(lambda group: group.title_version <= group.metadata_version)

store_ops = st.lists(
    st.one_of(
        st.tuples(st.just("save"), storable_groups),
        st.tuples(st.just("title"), titles),
        st.tuples(st.just("pin"), st.booleans()),
    ),
    max_size=12,
)


@SETTINGS
@given(ops=store_ops)
def test_saves_and_ui_edits_through_the_store_match_the_model(ops: list[Any]) -> None:
    async def body(store: SessionStore, root: Path) -> None:
        model: Authoritative | None = None
        for kind, arg in ops:
            before = session_files(root, "s")
            written = store.statistics().snapshots_written
            if kind == "save":
                caller = Session(id="s", **attrs.asdict(arg))
                await store.save_runtime_session(caller)
                model = model_merge(model, arg)
                assert group_of(caller) == model  # the caller's object, updated in place
            elif model is None:  # UI edits need a session
                try:
                    if kind == "title":
                        await store.set_title("s", arg)
                    else:
                        await store.set_pinned("s", arg)
                except (SessionNotFoundError, ValueError):
                    pass
                else:
                    raise AssertionError(f"{kind} of a missing session succeeded")
            else:
                edited = retitle(model, arg) if kind == "title" and arg.strip() else None
                if kind == "pin":
                    edited = pin(model, arg)
                if kind == "title" and not arg.strip():
                    try:
                        await store.set_title("s", arg)
                    except ValueError:
                        pass
                    else:
                        raise AssertionError("an empty title was accepted")
                elif kind == "title":
                    returned = await store.set_title("s", arg)
                    model = edited or model
                    assert group_of(returned) == model
                else:
                    returned = await store.set_pinned("s", arg)
                    model = edited or model
                    assert group_of(returned) == model
                if edited is None:  # unchanged: nothing written
                    assert session_files(root, "s") == before
                    assert store.statistics().snapshots_written == written
            loaded = await store.load_session("s")
            if model is None:
                assert loaded is None
            else:
                assert loaded is not None and group_of(loaded) == model

    run_in_store(body)


# --- checkpoint_runtime_session -------------------------------------------------------

transcript_ops = st.lists(
    st.one_of(
        st.tuples(st.just("checkpoint"), ids),
        st.tuples(st.just("save"), ids),
        st.tuples(st.just("burst"), st.lists(ids, min_size=2, max_size=4)),
    ),
    min_size=1,
    max_size=10,
)


def messages(names: list[str], step: int) -> list[Message]:
    return [Message(id=name, role="user", content=f"{name}@{step}") for name in names]


@SETTINGS
@given(ops=transcript_ops)
def test_checkpoints_match_the_model_and_never_shrink(ops: list[Any]) -> None:
    async def body(store: SessionStore, root: Path) -> None:
        model: list[Message] = []
        for step, (kind, arg) in enumerate(ops):
            if kind == "save":
                caller = Session(id="s", messages=messages(arg, step))
                await store.save_runtime_session(caller)
                model = messages(arg, step)
            elif kind == "checkpoint":
                caller = Session(id="s", messages=messages(arg, step))
                await store.checkpoint_runtime_session(caller)
                known = {message.id for message in model}
                model = model + [m for m in messages(arg, step) if m.id not in known]
                assert caller.messages == model  # updated in place
            else:  # several checkpoints at once, folded in whatever order they land
                callers = [
                    Session(id="s", messages=messages(names, step * 10 + n))
                    for n, names in enumerate(arg)
                ]
                async with trio.open_nursery() as nursery:
                    for caller in callers:
                        nursery.start_soon(store.checkpoint_runtime_session, caller)
                loaded = await store.load_session("s")
                assert loaded is not None
                final = loaded.messages
                assert final[: len(model)] == model
                expected_ids = {m.id for m in model}.union(*[set(names) for names in arg])
                assert {m.id for m in final} == expected_ids
                for caller in callers:  # each saw a prefix of what is on disk now
                    assert caller.messages == final[: len(caller.messages)]
                    assert {m.id for m in caller.messages} >= {m.id for m in final[: len(model)]}
                model = final
            loaded = await store.load_session("s")
            assert loaded is not None
            assert loaded.messages == model

    run_in_store(body)


# --- cancellation ---------------------------------------------------------------------

cancel_points = st.one_of(
    st.tuples(st.just("ticks"), st.integers(0, 40)),  # after n trips through the scheduler
    st.tuples(st.just("delay"), st.floats(0, 0.003)),  # after a real delay
)
cancel_steps = st.lists(
    st.tuples(
        st.sampled_from(["save", "checkpoint", "append", "set_title", "set_pinned", "delete"]),
        cancel_points,
        st.booleans(),  # an uncancelled append racing on the same session
    ),
    min_size=1,
    max_size=8,
)


@attrs.frozen
class State:
    """What a user can observe of the session (updated_at aside)."""

    group: Authoritative
    messages: tuple[tuple[str, Any], ...]
    metadata: Any
    usage: tuple[Any, ...]


async def observe(store: SessionStore) -> State | None:
    session = await store.load_session("s")
    if session is None:
        return None
    usage = tuple(r["step"] for r in await store.read_token_usage("s") if "step" in r)
    return State(
        group=group_of(session),
        messages=tuple((m.id, m.content) for m in session.messages),
        metadata=session.metadata,
        usage=usage,
    )


def expected_after(kind: str, step: int, state: State | None) -> State | None:
    """The model: what ``kind`` at ``step`` does to ``state`` when it takes effect."""
    new_messages = ((f"m{step}", step),)
    if kind == "delete":
        return None
    if kind == "save":
        group = state.group if state else Authoritative("", 0, False, 0)
        usage = state.usage if state else ()
        return State(group, new_messages, {"step": step}, usage)
    if kind == "checkpoint":
        if state is None:
            return State(Authoritative("", 0, False, 0), new_messages, {"step": step}, ())
        return attrs.evolve(state, messages=state.messages + new_messages, metadata={"step": step})
    if state is None:
        return None  # SessionNotFoundError
    if kind == "append":
        return attrs.evolve(state, usage=(*state.usage, step))
    group = state.group
    if kind == "set_title":
        changed = retitle(group, f"title {step}")
    else:
        changed = pin(group, not group.pinned)
    assert changed is not None
    return attrs.evolve(state, group=changed)


@attrs.define
class Step:
    """One call of the cancellation test, cancelled at a drawn point."""

    store: SessionStore
    kind: str
    step: int
    state: State | None
    caller: Session
    returned: bool = False

    async def call(self, scope: trio.CancelScope) -> None:
        store, step = self.store, self.step
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "save": lambda: store.save_runtime_session(self.caller),
            "checkpoint": lambda: store.checkpoint_runtime_session(self.caller),
            "append": lambda: store.append_token_usage_record("s", {"step": step}),
            "set_title": lambda: store.set_title("s", f"title {step}"),
            "set_pinned": lambda: store.set_pinned(
                "s", not (self.state.group.pinned if self.state else False)
            ),
            "delete": lambda: store.delete_session("s"),
        }
        with scope:
            try:
                await calls[self.kind]()
            except SessionNotFoundError:
                assert self.state is None
            self.returned = True


async def cancel_at(scope: trio.CancelScope, how: str, when: float) -> None:
    if how == "ticks":
        for _ in range(int(when)):
            await trio.lowlevel.checkpoint()
    else:
        await trio.sleep(when)
    scope.cancel()


async def race(store: SessionStore, noise: int) -> None:
    await store.append_token_usage_record("s", {"noise": noise})


@settings(max_examples=50, deadline=None)
@given(steps=cancel_steps)
def test_a_cancelled_call_takes_full_effect_or_none(steps: list[Any]) -> None:
    async def body(store: SessionStore, root: Path) -> None:
        await store.save_runtime_session(Session(id="s", metadata={"step": -1}))
        state = await observe(store)
        for number, (kind, (how, when), racing) in enumerate(steps):
            caller = Session(
                id="s",
                messages=[Message(id=f"m{number}", role="user", content=number)],
                metadata={"step": number},
            )
            untouched = attrs.evolve(caller, messages=list(caller.messages))
            step = Step(store, kind, number, state, caller)
            scope = trio.CancelScope()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(step.call, scope)
                nursery.start_soon(cancel_at, scope, how, when)
                if racing and state is not None and kind != "delete":
                    nursery.start_soon(race, store, number)

            after = await observe(store)
            expected = expected_after(kind, number, state)
            if step.returned:
                event("returned")
            elif after == state:
                event("cancelled with no effect")
            else:
                event("cancelled after taking full effect")
            if step.returned:
                assert after == expected, f"step {number}: {kind} returned without its effect"
            else:
                assert after in (state, expected), f"step {number}: {kind} took partial effect"
            if kind in ("save", "checkpoint") and state != expected:
                if after == expected and kind == "checkpoint":
                    # Took effect: the caller's object was updated, even if cancelled.
                    assert after is not None
                    assert tuple((m.id, m.content) for m in caller.messages) == after.messages
                if after == state:  # no effect: the caller's object is as it was
                    assert caller.messages == untouched.messages
                    assert group_of(caller) == group_of(untouched)
            state = after

        # Whatever was cancelled, the store serves on, and a fresh store agrees with it.
        await store.save_runtime_session(Session(id="s", metadata={"final": True}))
        await store.append_token_usage_record("s", {"step": "final"})
        final = await observe(store)
        assert final is not None and final.usage[-1] == "final"
        assert store.statistics().actor_crashes == 0
        async with sessionactors.open_store(root, durability="flush") as fresh:
            assert await observe(fresh) == final

    run_in_store(body)
