"""Unit tests of the pure merge functions: the merge rule, the UI edits, the transcript."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import EMPTY_TITLES

from sessionactors._merge import (
    Authoritative,
    merge_authoritative,
    merge_transcript,
    pin,
    retitle,
)


@attrs.frozen
class Item:
    """A stand-in message: only ``id`` matters to merge_transcript."""

    id: str
    body: str = ""


def group(
    title: str = "t", title_version: int = 0, pinned: bool = False, metadata_version: int = 0
) -> Authoritative:
    return Authoritative(
        title=title,
        title_version=title_version,
        pinned=pinned,
        metadata_version=metadata_version,
    )


groups = st.builds(
    Authoritative,
    title=st.text(max_size=8),
    title_version=st.integers(0, 50),
    pinned=st.booleans(),
    metadata_version=st.integers(0, 50),
)


# --- merge_authoritative -----------------------------------------------------------


def test_nothing_persisted_the_caller_group_is_written() -> None:
    caller = group("mine", 3, True, 7)
    assert merge_authoritative(None, caller) == caller


def test_tie_on_metadata_version_goes_to_disk() -> None:
    persisted = group("ui title", 1, True, 4)
    caller = group("stale runtime title", 9, False, 4)
    assert merge_authoritative(persisted, caller) == persisted


def test_disk_wins_when_its_metadata_version_is_higher() -> None:
    persisted = group("ui title", 5, True, 6)
    caller = group("old", 2, False, 2)
    assert merge_authoritative(persisted, caller) == persisted


def test_caller_wins_when_its_metadata_version_is_higher() -> None:
    persisted = group("disk", 3, False, 3)
    caller = group("carried edit", 4, True, 4)
    assert merge_authoritative(persisted, caller) == caller


def test_the_group_is_decided_as_one_by_metadata_version_only() -> None:
    # The caller has the higher title_version but not the higher
    # metadata_version: nothing of its group may leak into the result.
    persisted = group("disk", 1, True, 5)
    caller = group("caller", 8, False, 5)
    assert merge_authoritative(persisted, caller) == persisted
    # And the other way round: the winner's lower title_version is kept too.
    persisted = group("disk", 8, True, 5)
    caller = group("caller", 1, False, 6)
    assert merge_authoritative(persisted, caller) == caller


@given(persisted=groups, caller=groups)
def test_merge_authoritative_picks_one_whole_group(
    persisted: Authoritative, caller: Authoritative
) -> None:
    merged = merge_authoritative(persisted, caller)
    expected = caller if caller.metadata_version > persisted.metadata_version else persisted
    assert merged == expected
    assert merged.metadata_version == max(persisted.metadata_version, caller.metadata_version)


# --- retitle -------------------------------------------------------------------------


def test_retitle_strips_and_bumps_both_versions() -> None:
    before = group("old", 2, True, 5)
    after = retitle(before, "  new title \n")
    assert after == group("new title", 3, True, 6)
    assert before == group("old", 2, True, 5)  # the input is left as it was


def test_retitle_to_the_same_title_after_stripping_changes_nothing() -> None:
    assert retitle(group("same", 1, False, 1), "  same\t") is None
    assert retitle(group("same", 1, False, 1), "same") is None


@pytest.mark.parametrize("title", EMPTY_TITLES)
def test_retitle_refuses_an_empty_title(title: str) -> None:
    with pytest.raises(ValueError):
        retitle(group("old"), title)


def test_retitle_refuses_a_title_that_is_not_a_str() -> None:
    with pytest.raises(TypeError):
        retitle(group("old"), 5)  # type: ignore[arg-type]


def test_retitle_inner_whitespace_is_kept() -> None:
    after = retitle(group("old"), " a  b ")
    assert after is not None
    assert after.title == "a  b"


# --- pin -------------------------------------------------------------------------------


@pytest.mark.parametrize("pinned", [True, False])
def test_pin_change_bumps_metadata_version_only(pinned: bool) -> None:
    before = group("t", 4, not pinned, 9)
    assert pin(before, pinned) == group("t", 4, pinned, 10)


@pytest.mark.parametrize("pinned", [True, False])
def test_pin_unchanged_changes_nothing(pinned: bool) -> None:
    assert pin(group("t", 4, pinned, 9), pinned) is None


@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_pin_refuses_a_value_that_is_not_a_bool(value: object) -> None:
    with pytest.raises(TypeError):
        pin(group(), value)  # type: ignore[arg-type]


# --- merge_transcript ----------------------------------------------------------------


def test_merge_transcript_keeps_persisted_and_appends_new_in_order() -> None:
    persisted = [Item("a", "1"), Item("b", "2"), Item("c", "3")]
    incoming = [Item("c", "changed"), Item("d"), Item("a", "changed"), Item("e")]
    merged = merge_transcript(persisted, incoming)
    assert merged == [Item("a", "1"), Item("b", "2"), Item("c", "3"), Item("d"), Item("e")]


def test_merge_transcript_never_shrinks() -> None:
    persisted = [Item("a"), Item("b")]
    assert merge_transcript(persisted, []) == persisted
    assert merge_transcript(persisted, [Item("b")]) == persisted


def test_merge_transcript_from_nothing_is_the_incoming_transcript() -> None:
    incoming = [Item("x"), Item("y")]
    assert merge_transcript([], incoming) == incoming


def test_merge_transcript_leaves_its_inputs_alone_and_takes_any_iterable() -> None:
    persisted = [Item("a")]
    merged = merge_transcript(persisted, (item for item in [Item("b"), Item("c")]))
    assert merged == [Item("a"), Item("b"), Item("c")]
    assert persisted == [Item("a")]
    assert merged is not persisted


ids = st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8)


@given(persisted_ids=ids, incoming_ids=ids)
def test_merge_transcript_properties(persisted_ids: list[str], incoming_ids: list[str]) -> None:
    persisted = [Item(i, "persisted") for i in persisted_ids]
    incoming = [Item(i, "incoming") for i in incoming_ids]
    merged = merge_transcript(persisted, incoming)
    # The persisted transcript is a prefix, unchanged.
    assert merged[: len(persisted)] == persisted
    # What follows is exactly the incoming messages with new ids, in their order.
    assert merged[len(persisted) :] == [m for m in incoming if m.id not in set(persisted_ids)]
    assert {m.id for m in merged} == set(persisted_ids) | set(incoming_ids)
