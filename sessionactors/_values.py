"""What a store call accepts: values that read back equal, checked once and copied.

A save's session, a token-usage record: refused (``TypeError``,
``ValueError``) when they would not be stored exactly, never converted.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
import orjson

from ._model import MAX_VERSION, Message, Session, check_datetime
from ._planned import with_values

__all__ = [
    "MAX_VERSION",
    "check_json",
    "check_messages",
    "check_session",
    "check_version",
    "copy_for_save",
    "encode_record",
    "json_copy",
]


def check_version(value: Any, where: str) -> None:
    """Refuse a version the store's own verify would call damage.

    Raises:
        TypeError: not an int, or a bool (an int to isinstance, but not a
            version: the wrong type, as a str would be).
        ValueError: negative, or beyond what every backend stores.
    """
    if type(value) is not int:
        raise TypeError(f"{where} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_VERSION:
        raise ValueError(f"{where} must be between 0 and {MAX_VERSION}, got {value}")


# orjson stores integers in 64 bits; a wider one would not be written.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_MAX_DEPTH = 250  # orjson refuses deeper nesting


def check_json(value: Any, where: str = "value") -> None:
    """Refuse anything that would not read back equal from JSON.

    Plain JSON is dict (with str keys), list, str, int (64-bit), finite float,
    bool and None. Sets, bytes, tuples, datetimes and arbitrary objects are
    refused rather than converted, because they would come back as something
    else.

    Raises:
        TypeError: a value of a type JSON cannot hold.
        ValueError: a float that is not finite, an integer out of range, or
            nesting deeper than the encoder allows.
    """
    try:
        _check(value, 0)
    except _Refused as refused:
        path = "".join(reversed(refused.path))
        raise refused.kind(f"{where}{path}: {refused.reason}") from None
    except RecursionError:  # called with little stack left: the depth is still the value's
        raise ValueError(f"{where}: nested too deep to be checked") from None


class _Refused(Exception):
    """A value check_json refuses; the path to it is added on the way out."""

    def __init__(self, kind: type[Exception], reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.path: list[str] = []


def _check_str(value: str) -> None:
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _Refused(ValueError, f"{value!r} holds a lone surrogate, not UTF-8") from None


def _check(value: Any, depth: int) -> None:
    # The path to a refused value is built only when one is refused.
    kind = type(value)
    if kind is str:
        _check_str(value)
        return
    if kind is bool or value is None:
        return
    if kind is int or (isinstance(value, int) and not isinstance(value, bool)):
        if not _INT_MIN <= value <= _INT_MAX:
            raise _Refused(ValueError, f"integer {value} does not fit in 64 bits")
        return
    if kind is float or isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(ValueError, f"{value} is not a JSON number")
        return
    if depth >= _MAX_DEPTH:
        raise _Refused(ValueError, f"nested deeper than {_MAX_DEPTH} levels")
    if kind is dict or isinstance(value, dict):
        for key, item in value.items():
            # A str subclass too: the encoder takes keys of type str alone
            # (a value of a subclass is stored as its base; a key is not).
            if type(key) is not str:
                raise _Refused(TypeError, f"key {key!r} is a {type(key).__name__}, not a str")
            _check_str(key)
            try:
                _check(item, depth + 1)
            except _Refused as refused:
                refused.path.append(f"[{key!r}]")
                raise
        return
    if kind is list or isinstance(value, list):
        for index, item in enumerate(value):
            try:
                _check(item, depth + 1)
            except _Refused as refused:
                refused.path.append(f"[{index}]")
                raise
        return
    if isinstance(value, str):
        _check_str(value)
        return
    raise _Refused(TypeError, f"{kind.__name__} is not plain JSON and would not read back equal")


def copy_for_save(session: Session) -> Session:
    """What a save of ``session`` writes, checked, in a copy of its own (but its messages).

    Called on the event loop when a save is made, in one synchronous step, so
    no other task can change ``session`` between the check and the copy. The
    copy's ``metadata`` and ``runtime_state`` are deep copies the store alone
    holds: what the worker thread encodes later is what was checked, whatever
    other tasks do to ``session`` meanwhile (a task setting
    ``session.metadata["x"] = float("nan")`` changes the caller's object, not
    the copy). ``messages`` is a new list of the same Message objects; its
    batch checks them (:func:`check_messages`).

    Raises:
        TypeError: ``session`` is not a Session itself (a subclass would read
            back as a Session, not equal), or holds a value of a type that
            is not plain JSON.
        ValueError: ``title_version`` greater than ``metadata_version``, or
            another value that would not read back equal.
    """
    if type(session) is not Session:
        raise TypeError(
            f"expected a Session, got {type(session).__name__}: a subclass would read back"
            " as a Session, not equal to it"
        )
    if not isinstance(session.messages, list):  # the validator says so too, but later
        raise TypeError(f"messages must be a list, got {type(session.messages).__name__}")
    metadata, runtime_state = session.metadata, session.runtime_state
    copies = _plain_copies(metadata, runtime_state)
    if copies is None:  # each alone: it says what is wrong, or copies a subclass's value
        copies = [json_copy(metadata, "metadata"), json_copy(runtime_state, "runtime_state")]
    metadata, runtime_state = copies
    if not _plainly_valid(session):
        attrs.validate(session)  # the validators' own errors (a subclass passes)
    # Set without running the validators again (this runs for every save);
    # test_values checks that every field is copied.
    copy = with_values(session, list(session.messages), metadata, runtime_state)
    _check_fields(copy)
    return copy


def _plainly_valid(session: Session) -> bool:
    """Whether each field is of the very type its validator wants, cheaply told.

    attrs validates a field when it is assigned, so this is true but for a
    value forced past the validators (``object.__setattr__``) or a subclass.
    """
    forked_from, forked_revision = session.forked_from, session.forked_from_revision
    return (
        type(session.title) is str
        and type(session.title_version) is int
        and type(session.pinned) is bool
        and type(session.metadata_version) is int
        and type(session.created_at) is datetime
        and type(session.updated_at) is datetime
        and session.created_at.utcoffset() is not None
        and session.updated_at.utcoffset() is not None
        and type(session.revision) is int
        and (forked_from is None or type(forked_from) is str)
        and (forked_revision is None or type(forked_revision) is int)
    )


# orjson refuses nesting deeper than 254 containers; check_json, 250. The
# value is encoded inside four lists so both draw the line at the same place.
_PADDING = 4
# Types orjson would encode as something else (datetimes as strings,
# dataclasses as objects, subclasses as their base) go to _not_json instead.
_STRICT = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not plain JSON")


def _plain_copies(metadata: Any, runtime_state: Any) -> list[Any] | None:
    """Both dicts copied in one encoding, as :func:`json_copy` does; None if either is not plain.

    Each lies inside four lists (``_PADDING``), as ``json_copy`` puts it, so
    both draw the nesting line at the same place. A save copies both: one
    encoding instead of two.
    """
    if type(metadata) is not dict or type(runtime_state) is not dict:
        return None
    try:
        encoded = orjson.dumps([[[[metadata, runtime_state]]]], default=_not_json, option=_STRICT)
    except orjson.JSONEncodeError:
        return None
    copies: list[Any] = orjson.loads(encoded)[0][0][0]
    if copies[0] == metadata and copies[1] == runtime_state:
        return copies
    return None


def json_copy(value: dict[str, Any], where: str) -> dict[str, Any]:
    """A deep copy of ``value`` through JSON, if it reads back equal; else refused.

    The check is of the encoded result, which is what makes it exact: the
    value is encoded, decoded, and the decoded copy compared with ``value``
    (``==``, in C). Whatever orjson encodes as something else (NaN and
    infinities as null, a tuple as an array, a UUID or an Enum as a string)
    reads back unequal; whatever it refuses (a lone surrogate, an integer
    beyond 64 bits, nesting too deep, keys that are not str) raises. Either
    way :func:`check_json` then names what is wrong, or, finding only
    subclasses of JSON types (which read back as their base, equal), lets a
    plain copy through. On plain JSON this costs less than ``check_json``
    alone: it runs in C.

    Raises:
        TypeError, ValueError: see :func:`check_json`.
    """
    if not isinstance(value, dict):  # the validator says so too, but later
        raise TypeError(f"{where} must be a dict, got {type(value).__name__}")
    padded: Any = value
    for _ in range(_PADDING):
        padded = [padded]
    try:
        copy = orjson.loads(orjson.dumps(padded, default=_not_json, option=_STRICT))
    except orjson.JSONEncodeError:
        pass
    else:
        for _ in range(_PADDING):
            copy = copy[0]
        if copy == value:
            result: dict[str, Any] = copy
            return result
    check_json(value, where)  # says what is wrong, or finds subclasses only
    result = orjson.loads(orjson.dumps(value))
    return result


def _check_fields(session: Session) -> None:
    """Refuse what the attrs validators let through but the store cannot keep.

    Versions out of range or disagreeing, a title not UTF-8, a ``created_at``
    that would not read back equal (``updated_at`` is the store's to set).
    Refused even where the merge rule would keep the group on disk instead:
    a caller's value that could not be stored is an error either way.
    """
    check_version(session.title_version, "title_version")
    check_version(session.metadata_version, "metadata_version")
    check_datetime(session.created_at, "created_at")
    if session.title_version > session.metadata_version:
        raise ValueError(
            f"title_version {session.title_version} is greater than metadata_version"
            f" {session.metadata_version}: every title edit moves both"
        )
    try:
        _check_str(session.title)
    except _Refused as refused:
        raise ValueError(f"title: {refused.reason}") from None


def check_session(session: Session, messages: Sequence[Message], start: int = 0) -> None:
    """Check a session, with ``messages`` as its transcript, before it is written.

    A save checks the copy :func:`copy_for_save` made (in its batch, in a
    worker thread). The attrs validators run on construction and assignment
    (of a Message's fields too); this catches what they cannot see: values
    put into dicts and lists afterwards (see :func:`check_json`), and fields
    that disagree. Messages before ``start`` are known to have been checked
    already.

    Raises:
        TypeError, ValueError: see :func:`copy_for_save` and :func:`check_json`.
    """
    if type(session) is not Session:
        raise TypeError(f"expected a Session, got {type(session).__name__}")
    attrs.validate(session)
    _check_fields(session)
    check_json(session.metadata, "metadata")
    check_json(session.runtime_state, "runtime_state")
    check_messages(messages, start)


def check_messages(messages: Sequence[Message], start: int = 0, also: Sequence[int] = ()) -> None:
    """Check ``messages[start:]`` and those at the positions ``also`` (see :func:`check_json`).

    The planner, writing a whole transcript anew, checks it all again (but what
    the same batch has just checked): a message known unchanged may still
    have had a nested value changed in place.

    Raises:
        TypeError: an item is not a Message itself (a subclass would read
            back as a Message, not equal to it), or holds a value of a type
            that is not plain JSON.
        ValueError: a value that would not read back equal.
    """
    for index in itertools.chain(also, range(start, len(messages))):
        message = messages[index]
        if type(message) is not Message:
            raise TypeError(f"messages[{index}] is a {type(message).__name__}, not a Message")
        if message.created_at is not None:
            check_datetime(message.created_at, f"messages[{index}].created_at")
        check_json(message.content, f"messages[{index}].content")
        check_json(message.extra, f"messages[{index}].extra")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def encode_record(record: str | bytes | Mapping[str, Any]) -> bytes:
    """One token-usage record as one compact JSON line, newline included.

    Raises:
        ValueError: the record is not one JSON object (a mapping holding a
            value that is not plain JSON is not one either).
    """
    if isinstance(record, (str, bytes)):
        # The standard parser keeps integers exact (orjson would turn a wide
        # one into a float); check_json below then refuses what cannot be stored.
        try:
            value = json.loads(record, parse_constant=_refuse_constant)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise ValueError(f"token-usage record is not one JSON object: {exc}") from None
        except RecursionError:  # the parser recurses once per level
            raise ValueError(
                f"token-usage record nests deeper than {_MAX_DEPTH} levels: it cannot be stored"
            ) from None
        if not isinstance(value, dict):
            raise ValueError(
                f"token-usage record must be one JSON object, got {type(value).__name__}"
            )
        try:
            check_json(value, "record")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"token-usage record cannot be stored as it is: {exc}") from None
    elif isinstance(record, Mapping):
        value = dict(record)
        try:
            check_json(value, "record")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"token-usage record is not one JSON object: {exc}") from None
    else:
        raise ValueError(
            f"token-usage record must be a str or a Mapping, got {type(record).__name__}"
        )
    return orjson.dumps(value) + b"\n"
