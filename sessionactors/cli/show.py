"""``sessionactors show``: one session's metadata and transcript, one message per block."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from .. import Message, Session
from .._model import converter
from .common import EXIT_OK, existing_root, load_existing, with_store
from .text import WIDTH, clean, cut, display_width, json_bytes, print_json, utc

__all__ = ["SHOW_LINES", "run"]

#: A shortened message shows at most this many lines of its content.
SHOW_LINES = 8
_INDENT = "    "
_LABEL = 14


def _content_text(content: Any) -> str:
    """A message's content as text: a string as it is, other JSON compact if it fits."""
    if content is None:
        return "(no content)"
    if isinstance(content, str):
        return content
    compact = json_bytes(content, indent=False).decode()
    if len(compact) <= WIDTH - len(_INDENT) - 1:
        return compact
    return json_bytes(content).decode()


def _shortened(text: str, *, full: bool) -> list[str]:
    """The lines of a message's content, indented; wrapped and cut unless ``full``."""
    text = clean(text, keep_newlines=True)
    if full:
        return [_INDENT + line for line in text.split("\n")]
    width = WIDTH - len(_INDENT) - 1
    # Enough characters for SHOW_LINES wrapped lines, without wrapping a huge text.
    head = text[: SHOW_LINES * width + 1]
    lines: list[str] = []
    for line in head.split("\n"):
        lines.extend(textwrap.wrap(line, width, replace_whitespace=False) or [""])
        if len(lines) > SHOW_LINES:
            break
    shown = [_INDENT + cut(line, width) for line in lines[:SHOW_LINES]]
    if len(lines) > SHOW_LINES or len(head) < len(text):
        shown.append(f"{_INDENT}… {len(text):,} characters in all (--full shows them)")
    return shown


def _field(label: str, value: str) -> str:
    return f"{label:<{_LABEL}}{value}"


def _json_field(label: str, value: Any, *, full: bool) -> list[str]:
    if not full or not value:
        return [_field(label, cut(json_bytes(value, indent=False).decode(), WIDTH - _LABEL - 1))]
    lines = json_bytes(value).decode().split("\n")
    return [_field(label, lines[0]), *(" " * _LABEL + line for line in lines[1:])]


def _message_block(number: int, message: Message, *, full: bool) -> list[str]:
    when = f"  {utc(message.created_at)}" if message.created_at is not None else ""
    role = cut(message.role, 20)
    space = WIDTH - 1 - len(f"#{number} ") - display_width(role) - 2 - len(when)
    header = f"#{number} {role}  {cut(message.id, max(space, 8))}{when}"
    lines = [header]
    if message.extra:
        lines.extend(_json_field(_INDENT + "extra", message.extra, full=full))
    lines.extend(_shortened(_content_text(message.content), full=full))
    return lines


def _lineage(session: Session) -> list[str]:
    """Where a fork comes from; nothing for a session that is no fork."""
    if session.forked_from is None:
        return []
    source = f" at revision {session.forked_from_revision}"
    return [
        _field("forked from", cut(session.forked_from, WIDTH - _LABEL - 1 - len(source)) + source)
    ]


def run(args: argparse.Namespace) -> int:
    """Show the session ``args.id`` of ``args.root`` (at ``args.revision``, if given)."""
    root = existing_root(args.root)
    session = with_store(root, lambda store: load_existing(store, args.id, args.revision))
    if args.json:
        print_json(converter.unstructure(session, Session))
        return EXIT_OK
    full = args.full
    value_width = WIDTH - _LABEL - 1
    lines = [
        _field("id", cut(session.id, value_width)),
        _field("title", session.title and cut(session.title, value_width)),
        _field("pinned", "yes" if session.pinned else "no"),
        _field(
            "versions",
            f"title {session.title_version}, metadata {session.metadata_version}",
        ),
        _field("revision", str(session.revision)),
        *_lineage(session),
        _field("created", session.created_at.isoformat()),
        _field("updated", session.updated_at.isoformat()),
        _field("messages", str(len(session.messages))),
        *_json_field("metadata", session.metadata, full=full),
        *_json_field("runtime_state", session.runtime_state, full=full),
    ]
    for number, message in enumerate(session.messages, 1):
        lines.append("")
        lines.extend(_message_block(number, message, full=full))
    print("\n".join(lines))
    return EXIT_OK
