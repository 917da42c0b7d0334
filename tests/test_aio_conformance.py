"""The trio suite's store tests, run again through ``sessionactors.aio`` (README, "From asyncio").

Every test of the modules below that opens a store (it takes ``store`` or
``make_store``, or calls ``sessionactors.open_store``) is collected here a
second time, under its module's name. Here ``sessionactors.open_store`` is
replaced by :func:`aio_support.open_store_through_asyncio`: each store the
test opens is an ``aio`` store on an asyncio loop in another thread, seen
through trio-awaitable methods (conftest's ``store`` and ``make_store`` call
``sessionactors.open_store`` too). So the contract's tests are not copied:
the very same functions check the aio store, errors, cancellations and
draining included. A test the trio suite gains later is run here too.

Each runs with trio as the loop's guest (the default) and in a thread.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from aio_support import AsyncioThread, open_store_through_asyncio

import sessionactors

MODULES = (
    "test_save",
    "test_usage_log",
    "test_load_list_delete",
    "test_ui_edits",
    "test_data_model",
    "test_session_ids",
    "test_open_store",
    "test_lifecycle",
    "test_batching",
    "test_faults",
    "test_memory",
    # Part two.
    "test_revisions",
    "test_forks",
    "test_update_session",
    "test_preconditions",
    "test_listing",
    "test_archive",
)

# Tests left out, each with why. Besides these, three kinds are left out as a
# rule: a test taking ``autojump_clock`` (the test's virtual clock does not
# reach the aio store's own trio run, whose idle timeouts run on real time),
# a test that reaches a state with ``trio.testing.wait_all_tasks_blocked``
# (it sees the test's trio run only, not the aio store's, a thread away),
# unless it is in ORDER_IS_ENOUGH, and a test using ``watch`` (an asyncio
# async context manager, which the trio-awaitable view here does not turn
# into a trio one: test_aio_watch.py checks the bridge, on the real watch too).
# A test taking a fixture its own module defines is left out too (the fixture
# is not collected here): test_archive's move of an archive to every backend.
NOT_THROUGH_ASYNCIO = {
    # It reads the actor's mailbox (store._routes), a private of the trio store.
    "test_batching.test_a_full_mailbox_makes_callers_wait",
    # They make their batch with wait_all_tasks_blocked inside a helper
    # (_in_one_batch), which the rule on the test's own source does not see.
    "test_batching.test_a_value_changed_in_place_to_no_json_is_never_stored_converted",
    "test_batching.test_a_save_refused_for_a_value_changed_in_place_fails_alone",
    # It appends to the transcript right after the call is made; through the
    # forwarding thread hop the aio call starts later than that. Its asyncio
    # form is test_aio_store.test_a_save_takes_the_session_as_it_stood_at_the_call.
    "test_save.test_a_save_writes_the_transcript_as_it_stood_at_the_call",
    # Matrices of bad values, one test each: test_faults checks every one of
    # those values in a loop (bad ids by every method, values that are not
    # plain JSON, bad records), and those tests run here.
    "test_session_ids.test_bad_session_id_is_refused_and_nothing_touched",
    "test_data_model.test_value_that_is_not_plain_json_is_refused",
    "test_usage_log.test_token_usage_bad_record_is_refused_and_nothing_written",
}

# Tests that wait with wait_all_tasks_blocked but whose checks hold here:
# forwarded calls reach the aio store in the order the test made them (one
# loop, one trio entry queue), which is all their states need; or their
# checks hold whichever state was reached (all-or-nothing cancellations).
ORDER_IS_ENOUGH = {
    "test_lifecycle.test_leaving_the_store_drains_accepted_calls_then_refuses",
    "test_lifecycle.test_an_exception_in_the_body_still_lets_accepted_calls_finish",
    "test_lifecycle.test_a_cancelled_body_still_lets_accepted_calls_finish",
    "test_lifecycle.test_cancelled_while_queued_takes_full_effect_or_none",
    "test_lifecycle.test_cancelled_while_its_batch_runs_takes_full_effect_or_none",
    "test_lifecycle.test_cancellation_at_many_points_is_all_or_nothing",
    # The bystander's save returns after every call made before it was queued.
    "test_lifecycle.test_a_crashing_actor_fails_its_waiters_and_is_replaced",
}


def _runs_through_asyncio(qualified_name: str, test: Callable[..., Any], module: Any) -> bool:
    if qualified_name in NOT_THROUGH_ASYNCIO:
        return False
    parameters = set(inspect.signature(test).parameters)
    if parameters & set(vars(module)):
        return False  # a fixture of the test's own module: not collected here
    if "autojump_clock" in parameters:
        return False
    source = inspect.getsource(test)
    if "wait_all_tasks_blocked" in source and qualified_name not in ORDER_IS_ENOUGH:
        return False
    if ".watch(" in source:
        return False
    return bool({"store", "make_store"} & parameters) or "open_store(" in source


def _collect(module_name: str) -> Iterator[tuple[str, Callable[..., Any]]]:
    module = importlib.import_module(module_name)
    short = module_name.removeprefix("test_")
    for name, test in vars(module).items():
        if not name.startswith("test_") or not inspect.isfunction(test):
            continue
        if not _runs_through_asyncio(f"{module_name}.{name}", test, module):
            continue
        yield f"test_{short}__{name.removeprefix('test_')}", test


for _module_name in MODULES:
    globals().update(_collect(_module_name))


@pytest.fixture
def backend() -> str:
    """The file store only: the aio layer is the same for every backend, so once is enough."""
    return "file"


@pytest.fixture(params=["guest", "thread"])
def mode(request: pytest.FixtureRequest) -> str:
    """How trio runs beside the asyncio loop."""
    chosen: str = request.param
    return chosen


@pytest.fixture(autouse=True)
def through_asyncio(monkeypatch: pytest.MonkeyPatch, mode: str) -> Iterator[None]:
    """Every ``sessionactors.open_store`` of the test opens an aio store on a loop thread."""
    loop_thread = AsyncioThread()
    opener = partial(_open, loop_thread, mode)
    monkeypatch.setattr(sessionactors, "open_store", opener)
    try:
        yield
    finally:
        loop_thread.stop()


def _open(loop_thread: AsyncioThread, mode: str, root: Any, **options: Any) -> Any:
    return open_store_through_asyncio(loop_thread.loop, root, mode=mode, **options)
