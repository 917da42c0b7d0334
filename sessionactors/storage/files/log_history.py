"""Verify's checks of what a session's log says: references, revisions, counts, values.

Pure functions of a :class:`~.log_scan.LogScan`. Only the generations the
session needs are judged (those reachable from the current generation
through ``previous`` and ``base``): one a crash left behind is a leftover,
however its references read, since no reader follows them (a prune cut
short may have removed its base first).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from typing import Any

import orjson

from ..._errors import CorruptSessionError
from ..._model import Message, converter, structure_session
from .generations import CommitRecord, Generation
from .log_scan import LogScan
from .problems import Problem
from .snapshot_checks import is_count

__all__ = ["check_history", "check_references", "check_values", "reachable"]

_DISAGREE = "history disagrees with the log: "


def reachable(scan: LogScan) -> set[str]:
    """The generations the session needs: the ``previous`` chain from the current one,
    and every base of those, own or linked (as far as they are in the directory).

    A generation's ``previous`` is followed while it is here: what is not
    was removed with the revisions it held (see :func:`check_references`).
    """
    needed: set[str] = set()
    gen = scan.current
    while gen is not None and gen in scan.listing.own and gen not in needed:
        needed.add(gen)
        header = scan.headers.get(gen)
        gen = None if header is None else header.previous
    pending = list(needed)
    while pending:
        header = scan.headers.get(pending.pop())
        if header is None or header.base is None:
            continue
        base = header.base[0]
        if base not in needed and scan.listing.file_of(base) is not None:
            needed.add(base)
            pending.append(base)
    return needed


def _chain(scan: LogScan) -> Iterator[Generation]:
    """The own generations of the ``previous`` chain, newest first, while they read."""
    seen: set[str] = set()
    gen = scan.current
    while gen is not None and gen in scan.generations and gen not in seen:
        seen.add(gen)
        generation = scan.generations[gen]
        yield generation
        gen = generation.header.previous
        if gen is not None and gen not in scan.listing.own:
            return


def check_references(scan: LogScan, needed: set[str], history: int | None) -> Iterator[Problem]:
    """Every base a needed generation names is here, and counts a whole prefix of it.

    With ``history`` (the store's), the generations holding the newest
    ``history`` revisions must be here too: a ``previous`` naming a missing
    one then is damage; without it, a missing ``previous`` is history the
    store dropped.
    """
    for gen in sorted(needed):
        header = scan.headers.get(gen)
        if header is None or header.base is None:
            continue
        base, offset = header.base
        path = scan.path(gen)
        if scan.listing.file_of(base) is None:
            yield Problem(
                path,
                f"dangling reference: its base, generation {base} (its transcript's first "
                f"{offset} bytes), is missing from the directory",
                transient=True,  # a prune in progress, seen without the lock
            )
            continue
        below = scan.generations.get(base)
        if below is None:
            continue  # unreadable: reported by the scan
        if offset not in _record_ends(below):
            yield Problem(
                path,
                f"dangling reference: its base counts {offset} bytes of generation {base}, "
                f"which is no whole prefix of its counted {below.end} bytes",
            )
        if header.depth != below.header.depth + 1:
            yield Problem(
                path,
                f"header disagrees with the log: depth {header.depth}, where its base's "
                f"depth {below.header.depth} makes it {below.header.depth + 1}",
            )
    if history is not None:
        yield from _kept_history(scan, history)


def _record_ends(generation: Generation) -> set[int]:
    """Where a base may end in ``generation``: its header, messages, replacements, commits."""
    ends = {generation.header.end, *_message_ends(generation)}
    return ends | {commit.end for commit in generation.commits}


def _message_ends(generation: Generation) -> list[int]:
    """Where each message or replacement record of ``generation`` ends, in order."""
    ends = [end for _, end in generation.messages]
    if generation.replaced:
        ends = sorted(ends + [end for _, _, end in generation.replaced])
    return ends


def _kept_history(scan: LogScan, history: int) -> Iterator[Problem]:
    """The newest ``history`` revisions are in generations that are here."""
    chain = list(_chain(scan))
    if not chain or not chain[0].commits:
        return
    oldest = max(1, chain[0].commits[-1].revision - history + 1)
    last = chain[-1]
    previous = last.header.previous
    if last.header.first > oldest and previous is not None and previous not in scan.listing.own:
        yield Problem(
            scan.path(last.header.gen),
            f"dangling reference: its previous generation {previous}, holding the revisions "
            f"before {last.header.first} that a history of {history} keeps (from {oldest} "
            "on), is missing from the directory",
            transient=True,  # a prune in progress, seen without the lock
        )


def check_history(scan: LogScan) -> Iterator[Problem]:
    """Revisions go up by one within and between generations; commits agree with the log."""
    later: Generation | None = None
    for generation in _chain(scan):
        path = scan.path(generation.header.gen)
        header = generation.header
        commits = generation.commits
        if commits and commits[0].revision != header.first:
            yield Problem(
                path,
                f"{_DISAGREE}its header says its first revision is {header.first}, "
                f"its first commit is revision {commits[0].revision}",
            )
        for before, commit in itertools.pairwise(commits):
            if commit.revision != before.revision + 1:
                yield Problem(
                    path,
                    f"{_DISAGREE}revision {commit.revision} follows revision "
                    f"{before.revision} (the commit at byte {commit.offset})",
                )
        if later is not None and commits and later.header.first != commits[-1].revision + 1:
            yield Problem(
                scan.path(later.header.gen),
                f"{_DISAGREE}its first revision is {later.header.first}, but its previous "
                f"generation ({generation.name}) ends at revision {commits[-1].revision}",
            )
        yield from _check_commits(scan, generation)
        later = generation


def _check_commits(scan: LogScan, generation: Generation) -> Iterator[Problem]:
    """Each commit's message count and message end agree with the records before it."""
    path = scan.path(generation.header.gen)
    ends = [end for _, end in generation.messages]
    records = _message_ends(generation)
    below = _count_below(scan, generation, set())
    for commit in generation.commits:
        own = bisect.bisect_right(ends, commit.offset)
        before = bisect.bisect_right(records, commit.offset)
        msg_end = records[before - 1] if before else generation.header.end
        if commit.msg_end != msg_end:
            yield Problem(
                path,
                f"{_DISAGREE}revision {commit.revision} says its messages end at byte "
                f"{commit.msg_end}, they end at byte {msg_end}",
            )
        if below is not None and commit.count != below + own:
            yield Problem(
                path,
                f"{_DISAGREE}revision {commit.revision} counts {commit.count} messages, "
                f"its transcript holds {below + own}",
            )


def _count_below(scan: LogScan, generation: Generation, seen: set[str]) -> int | None:
    """How many messages the transcript takes from ``generation``'s bases (None: unknown)."""
    base = generation.header.base
    if base is None:
        return 0
    gen, offset = base
    below = scan.generations.get(gen)
    if below is None or gen in seen:
        return None  # missing, unreadable or a loop: reported as damage elsewhere
    seen.add(gen)
    under = _count_below(scan, below, seen)
    if under is None:
        return None
    return under + bisect.bisect_right([end for _, end in below.messages], offset)


def check_values(scan: LogScan, needed: set[str]) -> Iterator[Problem]:
    """Every message of a needed generation's counted part, and every commit of the
    session's own, decodes as the library would load it; versions are sane."""
    for gen in sorted(needed):
        generation = scan.generations.get(gen)
        if generation is None:
            continue
        path = str(scan.path(gen))
        replacements = [(body, end) for _, body, end in generation.replaced]
        for body, end in generation.messages + replacements:
            reason = _message_problem(body)
            if reason is not None:
                yield Problem(
                    scan.path(gen), f"corrupt: the message record ending at byte {end}: {reason}"
                )
                break  # one a file: the first tells where to look
        if gen in scan.listing.own:
            for commit in generation.commits:
                reason = _commit_problem(path, scan.where.name, commit)
                if reason is not None:
                    yield Problem(scan.path(gen), reason)
                    break


def _message_problem(body: bytes) -> str | None:
    try:
        converter.structure(orjson.loads(body), Message)
    except Exception as exc:  # cattrs groups every field error in an exception of its own
        return f"not a message ({exc!r})"
    return None


def _commit_problem(path: str, session_id: str, commit: CommitRecord) -> str | None:
    """What is wrong with the session a commit holds, as a problem's message, if anything."""
    fields: dict[str, Any] = commit.fields
    at = f"revision {commit.revision} (the commit at byte {commit.offset})"
    try:
        structure_session(path, {**fields, "messages": []})
    except CorruptSessionError as exc:
        return f"corrupt: {at}: {exc.reason}"
    if fields.get("id") != session_id:
        return f"corrupt: {at}: holds session {fields.get('id')!r}, not {session_id!r}"
    if fields.get("revision") != commit.revision:
        return f"corrupt: {at}: its session says revision {fields.get('revision')!r}"
    title_version, metadata_version = fields["title_version"], fields["metadata_version"]
    for key, value in (("title_version", title_version), ("metadata_version", metadata_version)):
        if not is_count(value):
            return f"bad head: {at}: {key} is {value!r}, not a non-negative integer"
    if title_version > metadata_version:
        return (
            f"versions disagree: {at}: title_version {title_version} > metadata_version "
            f"{metadata_version} (every title edit bumps both)"
        )
    return None
