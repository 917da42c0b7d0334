"""The data model (Session, Message, SessionSummary), its one converter and its stored forms.

What a store call accepts is checked in ``_values.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import orjson
from cattrs.preconf.orjson import make_converter

from ._errors import CorruptSessionError

__all__ = [
    "MAX_VERSION",
    "REVISION_KINDS",
    "Message",
    "Revision",
    "Session",
    "SessionSummary",
    "check_datetime",
    "converter",
    "decode_record",
    "edit_mark",
    "encode_message",
    "structure_session",
    "summary_of",
    "utc_now",
]

#: The largest version every backend stores (PostgreSQL's bigint).
MAX_VERSION = 2**63 - 1
#: Offsets are under a day: only a datetime within a day of either end of the
#: years 1 to 9999 can have its instant outside them.
_DAY = timedelta(days=1)


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def check_datetime(value: datetime, where: str = "datetime") -> None:
    """Refuse a datetime that would not read back ``==`` from its stored form.

    A datetime is stored as ISO 8601 text with its UTC offset and read back
    with a fixed-offset ``timezone``. Python compares aware datetimes of
    different tzinfo objects by their instant, except that a wall time whose
    offset depends on ``fold`` (one in a DST fold, which happens twice, or in
    a gap, which never happens) equals no datetime of another tzinfo (PEP
    495). So a datetime reads back equal when it is aware, its offset is a
    whole number of seconds (the text of a fraction is cut by
    ``fromisoformat``: the instant would move), and its offset does not
    depend on ``fold``. A ``ZoneInfo`` datetime outside a fold or gap reads
    back as the same instant at the same offset (its tzinfo a ``timezone``).

    Raises:
        ValueError: naive, a fraction of a second in the offset, a wall
            time in a fold or gap of its zone, or an instant outside the years
            1 to 9999 in UTC (``9999-12-31T23:00-05:00``).
    """
    if value.tzinfo is timezone.utc:
        return  # the usual case, and certainly fine
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"{where} must be timezone-aware, got naive {value!r}")
    if offset.microseconds:
        raise ValueError(
            f"{where} {value!r} has a UTC offset with a fraction of a second,"
            " which its stored form cannot keep"
        )
    if offset and not datetime.min + _DAY <= value.replace(tzinfo=None) <= datetime.max - _DAY:
        try:
            value.astimezone(timezone.utc)
        except OverflowError:
            # Its instant is in no year Python (or PostgreSQL's listing) reads back.
            raise ValueError(f"{where} {value!r} is, in UTC, outside the years 1 to 9999") from None
    # A fixed offset (what every stored datetime reads back as) cannot
    # depend on fold; only other tzinfos (ZoneInfo, dateutil...) need asking.
    fixed = type(value.tzinfo) is timezone
    if not fixed and value.replace(fold=1 - value.fold).utcoffset() != offset:
        raise ValueError(
            f"{where} {value!r} is a wall time in a DST fold or gap of its zone: it"
            " would not read back equal; give it a fixed offset"
            " (dt.astimezone(timezone(dt.utcoffset()))) or convert it to UTC"
        )


def _aware(_: Any, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    # Only the plain mistake is refused on construction; what else would not
    # read back equal (check_datetime) is refused by the store call, with
    # nothing written, as every other unstorable value is.
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must be timezone-aware, got naive {value!r}")


_str = attrs.validators.instance_of(str)
_int = attrs.validators.instance_of(int)
_bool = attrs.validators.instance_of(bool)
_dict = attrs.validators.instance_of(dict)
_list = attrs.validators.instance_of(list)
_datetime = attrs.validators.and_(attrs.validators.instance_of(datetime), _aware)
_opt_datetime = attrs.validators.optional(_datetime)
_opt_str = attrs.validators.optional(_str)
_opt_int = attrs.validators.optional(_int)


# Every Message carries a stamp from this counter, renewed whenever one of its
# fields is assigned. A store that remembers the Message objects it wrote and
# the counter's value then can tell, without comparing contents, that none of
# them changed since: it appends only the new messages to its journal.
_stamps = itertools.count(1)
_last_edit = 0  # the stamp of the latest field assignment of any Message


def edit_mark() -> int:
    """A value above every stamp given so far and below every later one."""
    return next(_stamps)


def edited_since(mark: int) -> bool:
    """Whether any Message had a field assigned since ``mark`` was taken.

    Messages are built far more often than edited, so this is nearly always
    False and spares looking at each message's stamp.
    """
    return _last_edit > mark


def _stamp(instance: Any, _: attrs.Attribute[Any], value: Any) -> Any:
    global _last_edit
    stamp = next(_stamps)
    object.__setattr__(instance, "_stamp", stamp)
    _last_edit = stamp
    return value


@attrs.define(on_setattr=[attrs.setters.validate, _stamp])
class Message:
    """One entry of a session's transcript.

    ``id`` identifies the message across saves: ``checkpoint_runtime_session``
    appends only messages whose id is not persisted yet.

    A saved message may be changed any way: a field assigned
    (``message.content = ...``), a new Message in its place, or a nested
    dict or list changed in place (``message.extra["k"] = 1``). The next
    save writes the messages that changed, and only those.
    """

    id: str = attrs.field(validator=_str)
    role: str = attrs.field(validator=_str)
    content: Any = None
    created_at: datetime | None = attrs.field(default=None, validator=_opt_datetime)
    extra: dict[str, Any] = attrs.field(factory=dict, validator=_dict)
    _stamp: int = attrs.field(init=False, eq=False, repr=False, factory=lambda: next(_stamps))


@attrs.define
class Session:
    """A whole agent session, as the runtime saves it.

    ``title``, ``title_version``, ``pinned`` and ``metadata_version`` are the
    authoritative metadata, owned by the UI; a runtime save keeps what is on
    disk unless its own ``metadata_version`` is newer. ``revision``,
    ``forked_from`` and ``forked_from_revision`` are the store's: every write
    sets ``revision`` (0: never written), ``fork_session`` sets the lineage,
    and a save never changes them (the caller's object is corrected in place).
    """

    id: str = attrs.field(validator=_str)
    title: str = attrs.field(default="", validator=_str)
    title_version: int = attrs.field(default=0, validator=_int)
    pinned: bool = attrs.field(default=False, validator=_bool)
    metadata_version: int = attrs.field(default=0, validator=_int)
    created_at: datetime = attrs.field(factory=utc_now, validator=_datetime)
    updated_at: datetime = attrs.field(factory=utc_now, validator=_datetime)
    messages: list[Message] = attrs.field(factory=list, validator=_list)
    metadata: dict[str, Any] = attrs.field(factory=dict, validator=_dict)
    runtime_state: dict[str, Any] = attrs.field(factory=dict, validator=_dict)
    revision: int = attrs.field(default=0, validator=_int)
    forked_from: str | None = attrs.field(default=None, validator=_opt_str)
    forked_from_revision: int | None = attrs.field(default=None, validator=_opt_int)


@attrs.frozen
class SessionSummary:
    """What ``list_sessions`` tells of one session, without its transcript."""

    id: str
    title: str
    pinned: bool
    title_version: int
    metadata_version: int
    created_at: datetime
    updated_at: datetime
    message_count: int
    revision: int
    forked_from: str | None


@attrs.frozen
class Change:
    """One event of ``watch``: a session changed.

    ``kind`` is a revision's kind (``revision`` is then its number),
    ``"usage"`` (token-usage records appended) or ``"delete"`` (both with
    ``revision`` None).
    """

    session_id: str
    kind: str
    revision: int | None


#: What a write did, as :class:`Revision` names it.
REVISION_KINDS = ("save", "checkpoint", "title", "pinned", "update", "rewind", "fork", "import")


@attrs.frozen
class Revision:
    """One entry of ``session_history``: what one write left, without the transcript."""

    revision: int
    kind: str
    updated_at: datetime
    message_count: int
    title: str
    pinned: bool
    title_version: int
    metadata_version: int


def summary_of(session: Session, *, message_count: int | None = None) -> SessionSummary:
    """What ``list_sessions`` shows of ``session``.

    ``message_count``: its transcript's length, where the session at hand
    holds its fields but not its messages.
    """
    return SessionSummary(
        id=session.id,
        title=session.title,
        pinned=session.pinned,
        title_version=session.title_version,
        metadata_version=session.metadata_version,
        created_at=session.created_at,
        updated_at=session.updated_at,
        message_count=len(session.messages) if message_count is None else message_count,
        revision=session.revision,
        forked_from=session.forked_from,
    )


def _unstructure_datetime(value: datetime) -> str:
    # The store call checked it (check_datetime) before it got here; this
    # runs for every message written, so only the plain mistake is refused.
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r} cannot be stored: give it a timezone")
    return value.isoformat()


def _structure_datetime(value: Any, _: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")
    parsed = datetime.fromisoformat(value)
    if parsed.utcoffset() is None:
        raise ValueError(f"stored datetime {value!r} has no timezone")
    return parsed


#: The one converter of the library. Datetimes are ISO 8601 strings with their
#: offset, so they read back equal; ``Any`` fields are checked by
#: :func:`check_json` before they get here, so nothing is silently coerced.
converter = make_converter()
converter.register_unstructure_hook(datetime, _unstructure_datetime)
converter.register_structure_hook(datetime, _structure_datetime)
# Values of Any fields are plain JSON already (check_json); pass them through
# instead of letting the converter dispatch on every nested value.
converter.register_unstructure_hook_func(lambda t: t is Any, lambda v: v)


def _exactly(kind: type[Any]) -> Callable[[Any, Any], Any]:
    """A structure hook taking a value of ``kind`` itself, and nothing else."""

    def structure(value: Any, _: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {value!r}")
        return value

    return structure


# Stored JSON is read as it was written. The converter's own hooks would make
# "5" of 5, True of "yes", 0 of "0": a damaged file or a hand-made archive
# silently coerced, where it must be refused (every value this library writes
# is of its field's very type).
for _kind in (str, int, bool):
    converter.register_structure_hook(_kind, _exactly(_kind))


def _message_to_json(message: Message) -> dict[str, Any]:
    """A Message's JSON, as the converter would make it (its fields in order), sooner.

    It runs for every message written: the converter's generated route cost
    more than the JSON encoding after it.
    """
    written = message.created_at
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "created_at": None if written is None else _unstructure_datetime(written),
        "extra": message.extra,
    }


converter.register_unstructure_hook(Message, _message_to_json)
_unstructure_message = converter.get_unstructure_hook(Message)
_structure_message = converter.get_structure_hook(Message)
_new = object.__new__
_set = object.__setattr__


def _message_from_json(data: Any, _: Any = Message) -> Message:
    """A Message from its JSON: what the converter makes of it, sooner for the usual form.

    Loading a session builds one Message a stored message, and the
    converter's general route (a validator a field, an optional's dispatch)
    was most of a load's time. JSON in the form this library writes (the
    five fields, each of its type) is built here directly, checked as the
    validators would; anything else takes the converter's route, and its
    errors.
    """
    if type(data) is dict and len(data) == 5:
        ident = data.get("id")
        role = data.get("role")
        extra = data.get("extra")
        written = data.get("created_at", _new)
        usual = type(ident) is str and type(role) is str and type(extra) is dict
        if usual and "content" in data and (written is None or type(written) is str):
            message: Message = _new(Message)
            _set(message, "id", ident)
            _set(message, "role", role)
            _set(message, "content", data["content"])
            _set(
                message,
                "created_at",
                None if written is None else _structure_datetime(written, None),
            )
            _set(message, "extra", extra)
            _set(message, "_stamp", next(_stamps))
            return message
    built: Message = _structure_message(data, Message)
    return built


converter.register_structure_hook(Message, _message_from_json)


def structure_session(where: str, data: dict[str, Any]) -> Session:
    """A Session from stored, decoded JSON.

    Raises:
        CorruptSessionError: ``data`` is not a session; ``where`` names its file.
    """
    try:
        return converter.structure(data, Session)
    except Exception as exc:  # cattrs groups every field error in its own exception
        raise CorruptSessionError(where, f"not a valid session: {exc!r}") from None


def encode_message(message: Message, *, newline: bool = False) -> bytes:
    """One message as compact JSON, as journals and message rows store it."""
    return orjson.dumps(
        _unstructure_message(message), option=orjson.OPT_APPEND_NEWLINE if newline else None
    )


def decode_record(raw: bytes | str, where: str, line: int | None = None) -> dict[str, Any]:
    """One stored token-usage record.

    Raises:
        CorruptSessionError: it is not one JSON object; ``where`` names the
            file (or table) and ``line`` the line it is on.
    """
    at = "a record" if line is None else f"line {line}"
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(where, f"{at}: {exc}") from None
    if not isinstance(record, dict):
        raise CorruptSessionError(where, f"{at} is not a JSON object")
    return record
