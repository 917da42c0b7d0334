"""Issue 15: moving a session: export and import against copying its files with ``cp``.

A file store with ``durability="fsync"`` holds one session of 10,000
messages (about 300 B each once encoded, see :func:`short_message`) and a
token-usage record after every third message. Each round times, the kinds
taking turns (:func:`~.harness.turns`: each goes first as often as the
others), every figure a median over the rounds:

- ``export``: ``export_session`` then ``import_session`` of its archive
  under a new id, timed together and each apart (the imported session is
  deleted after, untimed). Inside them, ``encode_archive`` and
  ``decode_archive`` (the worker thread's share) are timed by wrapping the
  store's references to them; the rest of each call is the store's read
  (export) or write (import) and the trips to the actor and the thread.
- ``cp``: the baseline of issue 15, ``cp -r`` of the session's directory to
  a new directory, in a child process (the copy is removed after, untimed).
- ``durable cp``: the physical floor of a durable copy: ``cp -r`` as above,
  then ``os.fsync`` of every copied file and directory and of the
  directory the copy was made in (its new name), as an import makes its
  session durable.
- for what stops the target: ``load_session`` of the same session (an
  import that returns the Session cannot cost less than making it), 10,000
  ``Message(**d)`` from dicts of ready values (no JSON, no checks but the
  class's own), and the start of a child process that does nothing
  (``true``), which the ``cp`` baseline pays too.

Sizes: the archive's bytes beside the bytes of the session's directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

import sessionactors._store as store_module
from sessionactors import Message, Session, SessionStore, open_store
from sessionactors._archive import Archive, decode_archive, encode_archive
from sessionactors._model import converter

from .data import EPOCH, make_message
from .designs import Counters
from .harness import (
    Progress,
    add_counters,
    counter_delta,
    fresh_dir,
    fsync_path,
    median,
    settle,
    turns,
)
from .results import ArchiveMove, Timings

SOURCE_ID = "source"
_USAGE_TASKS = 64  # tasks appending the token-usage records while the session is made

# The kinds timed each round, in turns; EXPORT and IMPORT are ROUND_TRIP's two halves.
ROUND_TRIP = "export+import"
CP = "cp"
DURABLE_CP = "durable cp"
LOAD = "load_session"
BUILD = "Message(**d)"
SPAWN = "spawn"
KINDS = (ROUND_TRIP, CP, DURABLE_CP, LOAD, BUILD, SPAWN)
EXPORT = "export"
IMPORT = "import"


@attrs.frozen(kw_only=True)
class ArchiveConfig:
    """How big the session is and how many rounds are timed."""

    messages: int
    #: A token-usage record after every ``usage_every`` messages.
    usage_every: int
    #: A multiple of ``len(KINDS)``: each kind goes first as often.
    rounds: int


FULL_ARCHIVE = ArchiveConfig(messages=10_000, usage_every=3, rounds=12)
# A second or two, for the smoke test: its figures mean nothing.
QUICK_ARCHIVE = ArchiveConfig(messages=1000, usage_every=3, rounds=1)


#: How much shorter than ``data.make_message``'s texts: messages of about 300 B.
SHORT = 0.09


def short_message(index: int) -> Message:
    """One message of about 300 B once encoded (issue 15's): ``data.make_message``'s shapes."""
    return make_message(index, scale=SHORT)


def source_session(messages: int) -> Session:
    """The session every round moves."""
    return Session(
        id=SOURCE_ID,
        title="A long session to move",
        created_at=EPOCH,
        messages=[short_message(index) for index in range(messages)],
        metadata={"model": "model-large", "workspace": "/home/user/project"},
        runtime_state={"turn": messages, "pending_tool_calls": []},
    )


def counters(store: SessionStore) -> Counters:
    """The store's ``statistics()`` now, as a dict."""
    return dict(attrs.asdict(store.statistics()))


def tree_size(path: Path) -> tuple[int, int]:
    """The bytes of every file under ``path`` (``st_size``), and how many files."""
    total = files = 0
    for directory, _, names in os.walk(path):
        for name in names:
            total += os.stat(os.path.join(directory, name)).st_size
            files += 1
    return total, files


class CodecTimes:
    """The seconds each ``encode_archive`` / ``decode_archive`` call of the store took."""

    def __init__(self) -> None:
        self.encode: list[float] = []
        self.decode: list[float] = []


@contextlib.contextmanager
def codec_times() -> Iterator[CodecTimes]:
    """Time the store's archive codec (it runs in a worker thread), restored after."""
    times = CodecTimes()
    names = vars(store_module)  # where the store looks them up when it calls them
    if (names["encode_archive"], names["decode_archive"]) != (encode_archive, decode_archive):
        raise AssertionError("the store no longer calls sessionactors._archive's codec")

    def timed_encode(session: Session, usage: list[dict[str, Any]]) -> bytes:
        start = time.perf_counter()
        try:
            return encode_archive(session, usage)
        finally:
            times.encode.append(time.perf_counter() - start)

    def timed_decode(data: bytes | bytearray | memoryview) -> Archive:
        start = time.perf_counter()
        try:
            return decode_archive(data)
        finally:
            times.decode.append(time.perf_counter() - start)

    names["encode_archive"] = timed_encode
    names["decode_archive"] = timed_decode
    try:
        yield times
    finally:
        names["encode_archive"] = encode_archive
        names["decode_archive"] = decode_archive


def fsync_tree(path: Path) -> int:
    """``os.fsync`` every file and directory under ``path``, then its parent; how many."""
    count = 0
    for directory, _, names in os.walk(path, topdown=False):
        for name in names:
            fsync_path(os.path.join(directory, name))
            count += 1
        fsync_path(directory)
        count += 1
    fsync_path(str(path.parent))
    return count + 1


def _program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"no {name} on PATH")
    return found


async def make_source(root: Path, config: ArchiveConfig) -> Session:
    """The session, durably saved in ``root``, and its token-usage records."""
    session = source_session(config.messages)
    records = [
        {
            "model": "model-large",
            "message": f"msg-{index:05d}",
            "input_tokens": 1000 + index,
            "output_tokens": 200 + index % 100,
            "cache_read_tokens": 512,
        }
        for index in range(config.usage_every - 1, config.messages, config.usage_every)
    ]
    async with open_store(root, durability="fsync") as store:
        await store.save_runtime_session(session)

        async def append(first: int) -> None:
            for record in records[first::_USAGE_TASKS]:
                await store.append_token_usage_record(SOURCE_ID, record)

        async with trio.open_nursery() as nursery:
            for first in range(_USAGE_TASKS):
                nursery.start_soon(append, first)
    return session


async def measure_archive(base: Path, progress: Progress, *, quick: bool) -> ArchiveMove:
    """Issue 15's benchmark, in one trio run."""
    config = QUICK_ARCHIVE if quick else FULL_ARCHIVE
    progress(f"archive: export + import of a {config.messages:,}-message session against cp -r")
    root = fresh_dir(base, "store")
    copies = fresh_dir(base, "copies")
    source = await make_source(root, config)
    usage_records = config.messages // config.usage_every
    directory_bytes, directory_files = tree_size(root / SOURCE_ID)
    message_bytes = median(
        [len(orjson.dumps(converter.unstructure(message))) for message in source.messages]
    )
    ready = [
        {
            "id": message.id,
            "role": message.role,
            "content": message.content,
            "created_at": message.created_at,
            "extra": message.extra,
        }
        for message in source.messages
    ]
    cp, true = _program("cp"), _program("true")
    samples: dict[str, list[float]] = {kind: [] for kind in (*KINDS, EXPORT, IMPORT)}
    totals: Counters = {}
    paired: list[float] = []
    archive_bytes = 0
    fsyncs = 0

    async with open_store(root, durability="fsync") as store:

        async def round_trip(new_id: str) -> tuple[float, float]:
            nonlocal archive_bytes
            start = time.perf_counter()
            data = await store.export_session(SOURCE_ID)
            exported = time.perf_counter()
            imported = await store.import_session(data, session_id=new_id)
            done = time.perf_counter()
            if len(imported.messages) != config.messages:
                raise AssertionError(f"{new_id}: {len(imported.messages)} messages imported")
            archive_bytes = len(data)
            return exported - start, done - exported

        def copy(target: Path, *, durable: bool) -> float:
            nonlocal fsyncs
            start = time.perf_counter()
            subprocess.run([cp, "-r", "--", str(root / SOURCE_ID), str(target)], check=True)
            if durable:
                fsyncs = fsync_tree(target)
            return time.perf_counter() - start

        def spawn() -> float:
            start = time.perf_counter()
            subprocess.run([true], check=True)
            return time.perf_counter() - start

        async def once(kind: str, round_index: int) -> float:
            if kind == ROUND_TRIP:
                new_id = f"imported-{round_index}"
                before = counters(store)
                exported, imported = await round_trip(new_id)
                add_counters(totals, counter_delta(before, counters(store)))
                samples[EXPORT].append(exported)
                samples[IMPORT].append(imported)
                await store.delete_session(new_id)
                return exported + imported
            if kind in (CP, DURABLE_CP):
                target = copies / f"copy-{round_index}"
                seconds = copy(target, durable=kind == DURABLE_CP)
                shutil.rmtree(target)
                return seconds
            if kind == LOAD:
                start = time.perf_counter()
                loaded = await store.load_session(SOURCE_ID)
                seconds = time.perf_counter() - start
                if loaded is None or len(loaded.messages) != config.messages:
                    raise AssertionError("load_session did not give the whole session")
                return seconds
            if kind == BUILD:
                start = time.perf_counter()
                built = [Message(**fields) for fields in ready]
                seconds = time.perf_counter() - start
                del built
                return seconds
            return spawn()

        with codec_times() as codec:
            # One untimed pass of each first (imports, thread cache, page cache).
            for kind in KINDS:
                await once(kind, -1)
                settle()
            totals.clear()
            for key in samples:
                samples[key].clear()
            codec.encode.clear()
            codec.decode.clear()
            for round_index in range(config.rounds):
                this_round: dict[str, float] = {}
                for kind in turns(round_index, KINDS):
                    seconds = await once(kind, round_index)
                    samples[kind].append(seconds)
                    this_round[kind] = seconds
                    settle()
                paired.append(this_round[ROUND_TRIP] / this_round[CP])
            encode, decode = list(codec.encode), list(codec.decode)
    settle(root)
    settle(copies)

    def timings(values: list[float]) -> Timings:
        return Timings(value=median(values), samples_s=tuple(values))

    medians = {kind: median(values) for kind, values in samples.items()}
    return ArchiveMove(
        description=(
            f"export_session then import_session (a new id) of a {config.messages:,}-message "
            f"session (median message {message_bytes:.0f} B encoded) with {usage_records:,} "
            f"token-usage records, file store, fsync, against cp -r of its directory in a "
            f"child process, and a durable copy (cp -r, then os.fsync of each copied file and "
            f"directory and of the directory it was made in); {config.rounds} rounds, the "
            "kinds in turns; the imported session and the copies removed untimed"
        ),
        messages=config.messages,
        usage_records=usage_records,
        message_bytes=message_bytes,
        archive_bytes=archive_bytes,
        directory_bytes=directory_bytes,
        directory_files=directory_files,
        export_then_import=timings(samples[ROUND_TRIP]),
        export_session=timings(samples[EXPORT]),
        import_session=timings(samples[IMPORT]),
        encode=timings(encode),
        decode=timings(decode),
        cp=timings(samples[CP]),
        durable_cp=timings(samples[DURABLE_CP]),
        durable_cp_fsyncs=fsyncs,
        load_session=timings(samples[LOAD]),
        build_messages=timings(samples[BUILD]),
        spawn=timings(samples[SPAWN]),
        counters=totals,
        ratio_vs_cp=medians[ROUND_TRIP] / medians[CP],
        ratio_vs_durable_cp=medians[ROUND_TRIP] / medians[DURABLE_CP],
        paired_ratios=tuple(paired),
        load_ratio_vs_cp=medians[LOAD] / medians[CP],
        build_ratio_vs_cp=medians[BUILD] / medians[CP],
        archive_ratio=archive_bytes / directory_bytes,
    )
