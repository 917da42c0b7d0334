"""The command line: list, show, usage, verify and demo, over a store's directory.

Every command reads the store through the library (``open_store`` and its
methods; ``verify`` through the file backend's own decoders), never through a
second reader of the files. Exit status: 0 done, 1 problems found (a corrupt
file, a damaged log, an OS error), 2 a usage error (bad arguments, a missing
root, an unknown or invalid session id). Expected conditions print one line
on stderr, never a traceback. A command over every session (``list``,
``usage``, ``verify``) never lets one damaged or unreadable session hide the
others: it names each one it skips on stderr, with the reason, shows the
rest, and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
import os
import sys
import textwrap
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO, TypeVar

import orjson
import trio

from ._demo import run_demo
from ._errors import CorruptSessionError, InvalidSessionIdError, SessionStoreError
from ._model import Message, Session, SessionSummary, converter
from ._store import SessionStore, open_store
from .storage.files import (
    Problem,
    SessionReport,
    Severity,
    is_count,
    session_names,
    verify_session,
)

__all__ = ["build_parser", "main"]

T = TypeVar("T")

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Every table and shortened text fits a terminal this wide.
WIDTH = 80
#: ``verify`` draws a progress bar on a terminal from this many sessions on.
PROGRESS_MIN_SESSIONS = 100

_PROG = "sessionactors"


class UsageError(Exception):
    """The command cannot run as asked (exit status 2)."""


logger = logging.getLogger(__name__)


class _Warnings(logging.Handler):
    """Prints the library's and the commands' warnings on stderr and counts them.

    A warning is a damaged file met and passed over (``list_sessions`` logs
    each session it skips); the command goes on, then exits 1.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if _held is not None:
            _held.append(record)
            return
        self.count += 1
        print(f"{_PROG}: warning: {record.getMessage()}", file=sys.stderr)


#: While not None, warnings are held here instead of shown (see _held_warnings).
_held: list[logging.LogRecord] | None = None


@contextlib.contextmanager
def _held_warnings() -> Iterator[list[logging.LogRecord]]:
    """Hold back the warnings logged meanwhile: they are yielded, not shown or counted."""
    global _held
    outer, _held = _held, []
    try:
        yield _held
    finally:
        _held = outer


def _show_held(records: Iterable[logging.LogRecord]) -> None:
    """Show held warnings after all, as they were logged."""
    for record in records:
        logging.getLogger(record.name).handle(record)


# --- text that fits --------------------------------------------------------------------


def _clean(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped, so it cannot drive the terminal."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or (keep_newlines and char == "\n"):
            out.append(char)
        elif char == "\t":
            out.append("    ")
        else:
            out.append(repr(char)[1:-1])  # \x1b, \u200b, ...
    return "".join(out)


def _char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _width(text: str) -> int:
    return sum(_char_width(char) for char in text)


def _cut(text: str, width: int) -> str:
    """``text`` shortened to ``width`` columns, an ellipsis marking the cut."""
    text = _clean(text)
    if _width(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        wide = _char_width(char)
        if used + wide > width - 1:
            break
        out.append(char)
        used += wide
    return "".join(out) + "…"


def _cell(text: str, width: int, *, right: bool = False) -> str:
    text = _cut(text, width)
    pad = " " * (width - _width(text))
    return pad + text if right else text + pad


Column = tuple[str, int, bool]  # header, width, right-aligned


def _row(values: Sequence[str], columns: Sequence[Column]) -> str:
    cells = zip(values, columns, strict=True)
    return " ".join(_cell(text, width, right=right) for text, (_, width, right) in cells).rstrip()


def _header(columns: Sequence[Column]) -> str:
    return _row([name for name, _, _ in columns], columns)


def _number(value: int, width: int) -> str:
    """``value`` in full if it fits ``width`` columns, else abbreviated (12.3M)."""
    text = str(value)
    if len(text) <= width:
        return text
    for suffix, scale in (("k", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12), ("P", 10**15)):
        text = f"{value / scale:.1f}{suffix}"
        if len(text) <= width:
            return text
    return f"{value:.1e}"


def _utc(moment: datetime, *, short: bool = False) -> str:
    """``moment`` in UTC to the second, or in its own offset when UTC cannot hold it.

    ``datetime.min`` at +05:00 (or ``datetime.max`` at -05:00) is a valid
    value the library stores, but its UTC time falls outside the years 1 to
    9999: it is printed as given, its offset after it, instead of failing.
    With ``short`` such a moment is its date and offset only (a table's column).
    """
    try:
        return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "seconds")
    except OverflowError:
        if short:
            offset = moment.isoformat()[len(moment.replace(tzinfo=None).isoformat()) :]
            return f"{moment.date().isoformat()} {offset}"
        return moment.isoformat(" ", "seconds")


def _json_bytes(value: Any, *, indent: bool = True) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)


def _print_json(value: Any) -> None:
    sys.stdout.write(_json_bytes(value).decode() + "\n")


# --- running against a store -----------------------------------------------------------


def _existing_root(text: str) -> Path:
    """The store's directory; it must exist (reading commands never create it)."""
    path = Path(text)
    if not path.exists():
        raise UsageError(f"no store at {text!r}: the directory does not exist")
    if not path.is_dir():
        raise UsageError(f"no store at {text!r}: not a directory")
    return path


def _with_store(root: Path, work: Callable[[SessionStore], Awaitable[T]]) -> T:
    """Run ``work`` in a store opened on ``root`` (which exists already)."""

    async def run() -> T:
        async with open_store(root, durability="flush") as store:
            return await work(store)

    return trio.run(run)


async def _load_existing(store: SessionStore, session_id: str) -> Session:
    try:
        session = await store.load_session(session_id)
    except InvalidSessionIdError as exc:
        raise UsageError(f"invalid session id: {exc}") from None
    if session is None:
        raise UsageError(f"no session {session_id!r} in {os.fspath(store.root)!r}")
    return session


def _reason(exc: BaseException) -> str:
    """Why a session could not be read, for a person: an OS error's text and its file."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


async def _sessions_naming_skips(store: SessionStore) -> list[SessionSummary]:
    """``list_sessions``, with each session it skips named on stderr with the reason.

    ``list_sessions`` logs what it skips by the file at fault; which session
    that is, and why, is asked of the library again for each directory of
    the root it did not list (none, usually). A directory that holds no
    session, or whose name is no session id, is no session, and not named.
    """
    with _held_warnings() as held:
        summaries = await store.list_sessions()
    if not held:
        return summaries
    listed = {summary.id for summary in summaries}
    named = 0
    for name in session_names(Path(store.root)):
        if name in listed:
            continue
        try:
            await store.load_session(name)
        except InvalidSessionIdError:
            continue
        except (CorruptSessionError, OSError) as exc:
            logger.warning("skipped session %r: %s", name, _reason(exc))
            named += 1
    if named < len(held):  # a skip not found again (mended meanwhile?): shown as logged
        _show_held(held)
    return summaries


# --- list ---------------------------------------------------------------------------------

_LIST_COLUMNS: tuple[Column, ...] = (
    ("ID", 18, False),
    ("TITLE", 25, False),
    ("PINNED", 6, False),
    ("MSGS", 5, True),
    ("UPDATED (UTC)", 19, False),
)


def _list(args: argparse.Namespace) -> int:
    root = _existing_root(args.root)
    summaries = _with_store(root, _sessions_naming_skips)
    total = len(summaries)
    if args.limit is not None:
        summaries = summaries[: args.limit]
    if args.json:
        _print_json([converter.unstructure(summary, SessionSummary) for summary in summaries])
        return EXIT_OK
    if not summaries:
        print(f"no sessions in {args.root}")
        return EXIT_OK
    print(_header(_LIST_COLUMNS))
    for summary in summaries:
        values = (
            summary.id,
            summary.title,
            "yes" if summary.pinned else "no",
            str(summary.message_count),
            _utc(summary.updated_at, short=True),
        )
        print(_row(values, _LIST_COLUMNS))
    if len(summaries) < total:
        print(f"({len(summaries)} of {total} sessions shown)")
    return EXIT_OK


# --- show ---------------------------------------------------------------------------------

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
    compact = _json_bytes(content, indent=False).decode()
    if len(compact) <= WIDTH - len(_INDENT) - 1:
        return compact
    return _json_bytes(content).decode()


def _shortened(text: str, *, full: bool) -> list[str]:
    """The lines of a message's content, indented; wrapped and cut unless ``full``."""
    text = _clean(text, keep_newlines=True)
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
    shown = [_INDENT + _cut(line, width) for line in lines[:SHOW_LINES]]
    if len(lines) > SHOW_LINES or len(head) < len(text):
        shown.append(f"{_INDENT}… {len(text):,} characters in all (--full shows them)")
    return shown


def _field(label: str, value: str) -> str:
    return f"{label:<{_LABEL}}{value}"


def _json_field(label: str, value: Any, *, full: bool) -> list[str]:
    if not full or not value:
        return [_field(label, _cut(_json_bytes(value, indent=False).decode(), WIDTH - _LABEL - 1))]
    lines = _json_bytes(value).decode().split("\n")
    return [_field(label, lines[0]), *(" " * _LABEL + line for line in lines[1:])]


def _message_block(number: int, message: Message, *, full: bool) -> list[str]:
    when = f"  {_utc(message.created_at)}" if message.created_at is not None else ""
    role = _cut(message.role, 20)
    space = WIDTH - 1 - len(f"#{number} ") - _width(role) - 2 - len(when)
    header = f"#{number} {role}  {_cut(message.id, max(space, 8))}{when}"
    lines = [header]
    if message.extra:
        lines.extend(_json_field(_INDENT + "extra", message.extra, full=full))
    lines.extend(_shortened(_content_text(message.content), full=full))
    return lines


def _show(args: argparse.Namespace) -> int:
    root = _existing_root(args.root)
    session = _with_store(root, lambda store: _load_existing(store, args.id))
    if args.json:
        _print_json(converter.unstructure(session, Session))
        return EXIT_OK
    full = args.full
    value_width = WIDTH - _LABEL - 1
    lines = [
        _field("id", _cut(session.id, value_width)),
        _field("title", session.title and _cut(session.title, value_width)),
        _field("pinned", "yes" if session.pinned else "no"),
        _field(
            "versions",
            f"title {session.title_version}, metadata {session.metadata_version}",
        ),
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


# --- usage --------------------------------------------------------------------------------

#: The sums, in the order of the table and the CSV.
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "thinking_tokens",
)
#: The names under which providers and runtimes log each sum; the first found counts.
TOKEN_ALIASES: dict[str, tuple[str, ...]] = {
    "input_tokens": ("input_tokens", "prompt_tokens", "promptTokenCount"),
    "output_tokens": ("output_tokens", "completion_tokens", "candidatesTokenCount"),
    "cache_read_tokens": (
        "cache_read_input_tokens",
        "cache_read_tokens",
        "cached_tokens",
        "cachedContentTokenCount",
    ),
    "cache_creation_tokens": (
        "cache_creation_input_tokens",
        "cache_creation_tokens",
        "cache_write_tokens",
    ),
    "thinking_tokens": ("thinking_tokens", "reasoning_tokens", "thoughtsTokenCount"),
}
MODEL_KEYS = ("model", "model_name", "model_id")
#: Objects a record may nest its counts in (an API response's ``usage``).
_NESTED = ("usage", "usageMetadata")
_DETAILS = (
    "prompt_tokens_details",
    "input_tokens_details",
    "completion_tokens_details",
    "output_tokens_details",
)
UNKNOWN_MODEL = "(unknown)"
_SUMS = ("calls", *TOKEN_FIELDS, "irregular_records")


def _first(sources: Sequence[dict[str, Any]], keys: Sequence[str]) -> Any:
    for source in sources:
        for key in keys:
            value = source.get(key)
            if value is not None:
                return value
    return None


def parse_usage_record(record: dict[str, Any]) -> tuple[str, dict[str, int], bool]:
    """The model, the token counts and whether the record is irregular.

    A record is irregular when it has no model, no token count at all, or a
    count that is not a non-negative integer; what it has is still counted.
    """
    sources = [record]
    sources.extend(record[key] for key in _NESTED if isinstance(record.get(key), dict))
    for source in list(sources):
        sources.extend(source[key] for key in _DETAILS if isinstance(source.get(key), dict))
    counts: dict[str, int] = {}
    irregular = False
    for field in TOKEN_FIELDS:
        value = _first(sources, TOKEN_ALIASES[field])
        if value is None:
            continue
        if is_count(value):
            counts[field] = value
        else:
            irregular = True
    if not counts:
        irregular = True
    model = _first(sources, MODEL_KEYS)
    if not (isinstance(model, str) and model.strip()):
        model = UNKNOWN_MODEL
        irregular = True
    return model, counts, irregular


def _zero() -> dict[str, int]:
    return dict.fromkeys(_SUMS, 0)


def _add(into: dict[str, int], sums: dict[str, int]) -> None:
    for key in _SUMS:
        into[key] += sums[key]


def sum_usage(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The sums of one session's records, per model."""
    per_model: dict[str, dict[str, int]] = {}
    for record in records:
        model, counts, irregular = parse_usage_record(record)
        sums = per_model.setdefault(model, _zero())
        sums["calls"] += 1
        sums["irregular_records"] += irregular
        for field, value in counts.items():
            sums[field] += value
    return per_model


async def _collect_usage(
    store: SessionStore, session_id: str | None
) -> dict[str, dict[str, dict[str, int]]]:
    """Per session, per model sums. A damaged file is warned about and passed over."""
    if session_id is not None:
        try:
            await _load_existing(store, session_id)
        except (CorruptSessionError, OSError) as exc:
            logger.warning("%s (its token usage is summed all the same)", exc)
        ids = [session_id]
    else:
        ids = sorted(summary.id for summary in await _sessions_naming_skips(store))
    usage: dict[str, dict[str, dict[str, int]]] = {}
    for current in ids:
        try:
            records = await store.read_token_usage(current)
        except (CorruptSessionError, OSError) as exc:
            # One unreadable log (EACCES, a directory in its place) hides no other.
            logger.warning("%s: the usage of session %r is left out", exc, current)
            continue
        if records:
            usage[current] = sum_usage(records)
    return usage


_USAGE_COLUMNS: tuple[Column, ...] = (
    ("SESSION / MODEL", 27, False),
    ("CALLS", 6, True),
    ("INPUT", 8, True),
    ("OUTPUT", 8, True),
    ("CACHE RD", 8, True),
    ("CACHE WR", 8, True),
    ("THINKING", 8, True),
)
_ALL_MODELS = "all models"


def _usage_line(label: str, sums: dict[str, int]) -> str:
    """One row: a model (indented under its session) and its sums."""
    widths = [width for _, width, _ in _USAGE_COLUMNS[1:]]
    numbers = zip(("calls", *TOKEN_FIELDS), widths, strict=True)
    return _row(
        ["  " + label, *(_number(sums[key], width) for key, width in numbers)], _USAGE_COLUMNS
    )


def _usage_text(
    usage: dict[str, dict[str, dict[str, int]]],
    by_session: dict[str, dict[str, int]],
    by_model: dict[str, dict[str, int]],
    total: dict[str, int],
) -> list[str]:
    """The table: each session's heading and a row per model, then the totals."""
    lines = [_header(_USAGE_COLUMNS)]
    for session_id, per_model in usage.items():
        lines.append(_cut(session_id, WIDTH - 1))
        lines.extend(_usage_line(model, sums) for model, sums in sorted(per_model.items()))
        if len(per_model) > 1:
            lines.append(_usage_line(_ALL_MODELS, by_session[session_id]))
    if len(usage) > 1:
        lines.append("-" * (WIDTH - 1))
        lines.append("all sessions")
        lines.extend(_usage_line(model, sums) for model, sums in by_model.items())
        if len(by_model) > 1:
            lines.append(_usage_line(_ALL_MODELS, total))
    if total["irregular_records"]:
        note = (
            f"Irregular records: {total['irregular_records']} of {total['calls']} (no model, "
            "no token count, or a count that is not a whole number). They are counted in "
            "CALLS; their unusable fields are left out."
        )
        lines.extend(textwrap.wrap(note, WIDTH - 1))
    return lines


def _usage_tables(
    usage: dict[str, dict[str, dict[str, int]]],
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]], dict[str, int]]:
    by_session: dict[str, dict[str, int]] = {}
    by_model: dict[str, dict[str, int]] = {}
    total = _zero()
    for session_id, per_model in usage.items():
        for model, sums in per_model.items():
            _add(by_session.setdefault(session_id, _zero()), sums)
            _add(by_model.setdefault(model, _zero()), sums)
            _add(total, sums)
    return by_session, dict(sorted(by_model.items())), total


def _usage(args: argparse.Namespace) -> int:
    root = _existing_root(args.root)
    usage = _with_store(root, lambda store: _collect_usage(store, args.id))
    by_session, by_model, total = _usage_tables(usage)
    if args.json:
        _print_json(
            {
                "by_session": [
                    {
                        "session": session_id,
                        **by_session[session_id],
                        "by_model": [
                            {"model": model, **sums} for model, sums in sorted(per_model.items())
                        ],
                    }
                    for session_id, per_model in usage.items()
                ],
                "by_model": [{"model": model, **sums} for model, sums in by_model.items()],
                "total": total,
            }
        )
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["session", "model", *_SUMS])
        for session_id, per_model in usage.items():
            for model, sums in sorted(per_model.items()):
                writer.writerow([session_id, model, *(sums[key] for key in _SUMS)])
    elif not usage:
        print("no token usage recorded")
    else:
        print("\n".join(_usage_text(usage, by_session, by_model, total)))
    return EXIT_OK


# --- verify -------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on a terminal; does nothing elsewhere."""

    def __init__(self, total: int, stream: TextIO, *, minimum: int) -> None:
        self.total = total
        self.stream = stream
        self.enabled = total >= minimum and stream.isatty()
        self._drawn = False
        self._last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < self.total):
            return
        self._last = now
        counter = f" {done}/{self.total}"
        bar_width = WIDTH - 1 - len("verify [] ") - len(counter)
        filled = bar_width * done // max(self.total, 1)
        bar = "#" * filled + "." * (bar_width - filled)
        self.stream.write(f"\rverify [{bar}]{counter}")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def _problem_line(problem: Problem, *, repair: bool) -> str:
    hint = " (repairable)" if problem.repair is not None and not repair else ""
    return f"{problem.path}: {problem.message}{hint}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _verify_one(root: Path, name: str, *, repair: bool) -> SessionReport:
    """One session's report; a session that cannot be checked is a problem, not the end."""
    try:
        return verify_session(root, name, repair=repair)
    except OSError as exc:
        doing = "repaired" if repair else "checked"
        problem = Problem(root / name, f"cannot be {doing}: {exc.strerror or exc}")
    except SessionStoreError as exc:  # changed under our feet between check and repair
        problem = Problem(root / name, f"cannot be checked: {exc}")
    return SessionReport([problem], [])


def _remaining(problems: Sequence[Problem], *, repaired: bool) -> str:
    """The summary's count of what is left: how many problems, and how many are damage."""
    text = _plural(len(problems), "problem") + (" left" if repaired else "")
    leftovers = sum(problem.severity is Severity.LEFTOVER for problem in problems)
    if leftovers:
        damage = len(problems) - leftovers
        of_writes = "an interrupted write" if leftovers == 1 else "interrupted writes"
        text += f": {damage or 'no'} damage, {_plural(leftovers, 'leftover')} of {of_writes}"
    repairable = sum(problem.repair is not None for problem in problems)
    if repairable:
        text += f" ({repairable} repairable with --repair)"
    return text


def _verify(args: argparse.Namespace) -> int:
    root = _existing_root(args.root)
    names = session_names(root)
    progress = _Progress(len(names), sys.stderr, minimum=PROGRESS_MIN_SESSIONS)
    remaining: list[Problem] = []
    repaired = 0
    for done, name in enumerate(names, 1):
        report = _verify_one(root, name, repair=args.repair)
        if report.problems or report.repaired:
            progress.clear()
            for problem in report.repaired:
                assert problem.repair is not None
                print(f"{problem.path}: {problem.message}: repaired ({problem.repair.value})")
            for problem in report.problems:
                print(_problem_line(problem, repair=args.repair))
            sys.stdout.flush()
        remaining += report.problems
        repaired += len(report.repaired)
        progress.update(done)
    progress.clear()
    summary = f"checked {_plural(len(names), 'session')} in {args.root}: "
    if repaired:
        summary += f"repaired {repaired}, "
    if not remaining:
        summary += "no problems" + (" left" if repaired else "")
    else:
        summary += _remaining(remaining, repaired=bool(repaired))
    print(summary)
    return EXIT_PROBLEMS if remaining else EXIT_OK


# --- demo ---------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    trio.run(run_demo, args.root)
    return EXIT_OK


# --- the parser and main ----------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sessionactors``; each command sets ``handler``."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Look into a sessionactors store: its sessions, their token usage, "
        "and whether anything is damaged.",
        epilog="Exit status: 0 done; 1 problems found (a damaged or unreadable file, an OS "
        "error): list, usage and verify then name each session they skip or find at fault, "
        "with the reason, on stderr (verify on stdout), and still show all the others; "
        "2 usage error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    root_help = "the store's directory"

    command = commands.add_parser(
        "list", help="the sessions, newest first", description="The sessions, newest first."
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("--json", action="store_true", help="print JSON for machines")
    command.add_argument("--limit", type=_positive, metavar="N", help="show the N newest only")
    command.set_defaults(handler=_list)

    command = commands.add_parser(
        "show",
        help="one session's metadata and transcript",
        description="One session's metadata and transcript, one message per block.",
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("id", metavar="ID", help="the session's id")
    command.add_argument("--full", action="store_true", help="do not shorten long contents")
    command.add_argument("--json", action="store_true", help="print the whole session as JSON")
    command.set_defaults(handler=_show)

    command = commands.add_parser(
        "usage",
        help="token usage summed per session and per model",
        description="Token usage summed per session and per model: calls, input, output, "
        "cache read, cache creation and thinking tokens. Records with missing or "
        "unexpected fields are counted, not fatal.",
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("id", metavar="ID", nargs="?", help="one session only")
    formats = command.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON for machines")
    formats.add_argument(
        "--csv", action="store_true", help="print CSV: a row per session and model"
    )
    command.set_defaults(handler=_usage)

    command = commands.add_parser(
        "verify",
        help="check every session and log; --repair fixes what is safe",
        description="Check every session and log and print each problem with its path. "
        "A problem is damage (a file the library cannot read, or values it would not "
        "write) or a leftover of an interrupted write (a crash, a full disk), which readers "
        "ignore and the session's next write clears. "
        "--repair only clears leftovers: it cuts torn tails off token-usage logs and "
        "uncounted bytes off journals, removes stray temporary files and journals no "
        "snapshot names, and makes absent an older snapshot slot a failed or killed "
        "rewrite left empty or torn beside a whole newer one, holding each session's lock; "
        "it never deletes a session and never touches damage, such as a damaged file the "
        "store kept aside (a name ending in .corrupt), which stays a problem until removed "
        "by hand. "
        "Exit status 0 when clean, 1 when problems (of either kind) remain.",
    )
    command.add_argument("root", metavar="ROOT", help=root_help)
    command.add_argument("--repair", action="store_true", help="make the safe repairs")
    command.set_defaults(handler=_verify)

    command = commands.add_parser(
        "demo",
        help="simulate a runtime, a UI and a usage logger writing at once",
        description="Simulate a runtime, a UI and a usage logger writing one store at "
        "once, then print what was kept.",
    )
    command.add_argument("root", metavar="ROOT", help="the store's directory (created if missing)")
    command.set_defaults(handler=_demo)
    return parser


def _unwrap(exc: BaseException) -> BaseException:
    """The one exception inside trio's exception groups, if there is just one."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not (isinstance(inner, tuple) and len(inner) == 1):
            return exc
        exc = inner[0]


def _error(message: str) -> None:
    print(f"{_PROG}: error: {message}", file=sys.stderr)


def _failed(raw: BaseException) -> int:
    """The exit status of an expected failure, told on stderr; anything else is raised."""
    exc = _unwrap(raw)
    if isinstance(exc, UsageError):
        _error(str(exc))
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        # The reader went away (| head): say nothing, and keep the
        # interpreter's final flush from failing too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PROBLEMS
    if isinstance(exc, (SessionStoreError, OSError)):
        _error(str(exc))
        return EXIT_PROBLEMS
    raise raw


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)  # exits 2 itself on a usage error
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            # A title or a message the terminal's encoding cannot show is escaped, not fatal.
            stream.reconfigure(errors="backslashreplace")
    warnings = _Warnings()
    library_logger = logging.getLogger("sessionactors")
    library_logger.addHandler(warnings)
    corrupt = False
    try:
        status: int = args.handler(args)
    except BaseException as raw:
        corrupt = isinstance(_unwrap(raw), CorruptSessionError)
        status = _failed(raw)
    finally:
        library_logger.removeHandler(warnings)
    if warnings.count:
        status = max(status, EXIT_PROBLEMS)
    if (warnings.count or corrupt) and args.command != "verify":
        print(f"{_PROG}: `{_PROG} verify {args.root}` checks the whole store", file=sys.stderr)
    return status
