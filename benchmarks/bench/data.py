"""The data every workload saves: messages, sessions and token-usage records."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from sessionactors import Message, Session
from sessionactors._model import converter

_WORDS = (
    *("the", "agent", "reads", "a", "file", "calls", "a", "tool", "and", "writes", "what"),
    *("it", "found", "about", "the", "build", "error", "in", "the", "parser", "module"),
    *("then", "plans", "the", "next", "step", "asks", "the", "user", "to", "confirm", "runs"),
    *("the", "tests", "again", "and", "reports", "that", "every", "case", "now", "passes"),
)
EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)


def text(seed: int, size: int) -> str:
    """``size`` characters of words, the same for the same ``seed``."""
    words: list[str] = []
    length = 0
    index = seed
    while length < size:
        word = _WORDS[index % len(_WORDS)]
        words.append(word)
        length += len(word) + 1
        index = index * 7 + 3
    return " ".join(words)[:size]


def make_message(index: int, *, scale: float = 1.0) -> Message:
    """One message of about 1.5 KB once encoded (``scale`` its texts: 0.13, about 300 B).

    Roles and content shapes vary.
    """
    created_at = EPOCH + timedelta(seconds=index)
    kind = index % 3
    if kind == 0:
        content: Any = text(index, round(1450 * scale))
        role = "user"
    elif kind == 1:
        content = [
            {"type": "text", "text": text(index, round(1150 * scale))},
            {"type": "tool_use", "id": f"call-{index}", "input": {"path": f"src/m{index}.py"}},
        ]
        role = "assistant"
    else:
        content = {
            "tool_use_id": f"call-{index - 1}",
            "output": text(index, round(1350 * scale)),
            "ok": True,
        }
        role = "tool"
    return Message(
        id=f"msg-{index:05d}",
        role=role,
        content=content,
        created_at=created_at,
        extra={"input_tokens": 100 + index, "output_tokens": 20 + index % 50},
    )


def make_session(session_id: str, messages: int) -> Session:
    """A session of ``messages`` messages (about 1.5 KB each once encoded)."""
    return Session(
        id=session_id,
        title=f"Session {session_id}",
        created_at=EPOCH,
        messages=[make_message(index) for index in range(messages)],
        metadata={"model": "model-large", "workspace": "/home/user/project"},
        runtime_state={"turn": messages, "pending_tool_calls": []},
    )


def copy_session(session: Session) -> Session:
    """A deep copy: new Session and Message objects, as a separate load would give."""
    return converter.structure(converter.unstructure(session), Session)


def whole_session_bytes(session: Session) -> bytes:
    """The session as one JSON document (the classic design's file, the floor's bytes)."""
    return orjson.dumps(converter.unstructure(session))


def message_line(message: Message) -> bytes:
    """One message as one JSON line: what a log appends for it (the floor's bytes)."""
    return orjson.dumps(converter.unstructure(message)) + b"\n"


COMMIT_BYTES = 200


def commit_line(session_id: str, revision: int, count: int) -> bytes:
    """A log's commit record after a save: ``COMMIT_BYTES`` bytes, padded, newline included."""
    record = orjson.dumps(
        {"revision": revision, "kind": "save", "count": count, "session": session_id}
    )
    return b"c " + record.ljust(COMMIT_BYTES - 3) + b"\n"


def usage_record(task: int, seq: int) -> dict[str, Any]:
    """The ``seq``-th token-usage record of task ``task``."""
    return {
        "model": "model-large",
        "task": task,
        "seq": seq,
        "input_tokens": 1000 + seq,
        "output_tokens": 200 + task % 100,
        "cache_read_tokens": 512,
    }
