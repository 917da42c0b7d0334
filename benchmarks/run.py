"""The benchmark suite of issues 4, 13, 15, 16 and part two: sessionactors against its baselines.

Usage::

    python benchmarks/run.py [--quick] [--only SECTION ...] [--out results.json] [--dir DIR]
                             [--cache DIR] [--postgres URL]

``--only`` runs some sections alone (repeat it for several): ``workloads``
(issue 4's, 1 to 5 below), ``journal`` (6), ``revisions`` (7), ``asyncio``
(8), ``ui`` (9) or ``archive`` (10); the others are null in the JSON, whose default name is then
``benchmarks/results/latest-<sections>.json``, so a partial run does not
replace the last full one.

Both designs run in the same process, on the same filesystem (a fresh
directory under ``--dir``, default the system's temporary directory), with
``durability="fsync"``. Each workload is measured several times, the two
designs taking turns (and alternating which goes first), and the table gives
medians and their ratios. The memory workloads each run in a fresh child
process, so what one measurement allocated cannot hide or inflate another.
All figures go to a JSON file (default ``benchmarks/results/latest.json``).

The workloads (issue 4), each for both designs, one module each in ``bench/``:

1. uncontended save latency of a 200-message (~300 KB) session, one caller,
   against the physical floor (the whole session's bytes written to a temp
   file, fsync, rename, directory fsync). Three kinds of save: a)
   ``turn``, one new message before each save (an agent loop); b)
   ``unchanged``; c) ``rewrite``, an old message's content replaced.
   (``bench/latency.py``) d) a one-message save under ``durability="flush"``
   against a bare ``trio.to_thread.run_sync`` round trip, in the same rounds
   (``bench/flush_hop.py``; ours only, as evidence, not a target).
2. 64 tasks saving the same 200-message session, 10 saves each: a) all
   holding one Session object (one runtime's tasks); b) each its own copy.
   (``bench/contended.py``)
3. 1,000 new sessions of mixed sizes, one task each saving it 5 times (a new
   message before each save after the first), all tasks at once; and, in the
   same rounds, its floor for a store with one directory and one log file per
   session (the same tasks and bytes; mkdir, fsyncs, appends, fdatasync
   only), printed beside it as evidence, not a target.
   (``bench/many_sessions.py``)
4. 10,000 token-usage records from 500 tasks over 5 sessions (and, for
   reference, the classic design with its appends outside the session lock).
   (``bench/token_usage.py``)
5. memory per live actor with 10,000 actors alive (classic: per lock kept),
   and RSS after 100,000 distinct session ids came and went.
   (``bench/memory.py``, ``bench/memory_child.py``)

6. saves that cost what changed (``benchmarks/journal.py``, issue 5): a save
   adding one message to sessions of 10, 1,000 and 10,000 messages, and the
   whole life of a 2,000-step session against full rewrites.
7. revisions, history and forks (issue 13, format 3; ``bench/revisions.py``),
   each against a baseline measured in the same run: a save adding one
   message to a 200-message session against its floor (one append of the
   same bytes, fdatasync and a thread hop), and on stores opened with
   ``history=100`` and ``history=1``; the life of a 2,000-step session
   against durable full rewrites, in turns; a fork of a 10,000-message
   session (bytes written, and time against a one-message save of it).
8. asyncio (issue 16, ``bench/asyncio_embedding.py``): a one-message save
   through ``sessionactors.aio`` (thread and guest mode) against the same
   save from trio, and ``AgentsSession`` against the OpenAI Agents SDK's
   ``SQLiteSession``.
9. for a UI (part two, ``bench/ui.py``): pages of ``list_sessions`` at 100,000
   sessions against the full scan of part one; a durable save with the
   listing index against the same without it; watch latency from another
   process's write to its delivery (files, PostgreSQL when ``--postgres`` or
   ``SESSIONACTORS_BENCH_POSTGRES_DSN`` / ``SESSIONACTORS_TEST_POSTGRES_DSN``
   names a server it can reach, and the floor: inotify on a plain append);
   64 tasks incrementing a counter with ``update_session`` against flock and
   a rewrite of the session file. The 100,000-session root is made once and
   kept under ``--cache`` (default ``benchmarks/results/cache/``, ignored by
   git; delete it to make it again); ``--quick`` makes 2,000 sessions in the
   scratch directory instead.
10. moving a session (issue 15, ``bench/archive.py``): ``export_session``
    then ``import_session`` of a 10,000-message session (about 300 B a
    message) against ``cp -r`` of its directory in the same run, and against
    a durable copy (``cp -r``, then ``os.fsync`` of each copied file and
    directory); beside them ``load_session`` of that session, 10,000
    ``Message(**d)`` and the start of a child process, which bound it.
    ``--quick``: 1,000 messages, one round.

Counters from ``statistics()`` (and the classic port's own) show how many
snapshot writes, journal writes, log writes and fsyncs each design made.
The targets are tables in ``bench/targets.py`` (issue 4's, issue 13's); the
printed tables come from ``bench/report.py``.

``--quick`` runs a tiny version of every workload in a few seconds; the smoke
test uses it so this code cannot rot. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio
from bench.archive import measure_archive
from bench.asyncio_embedding import print_asyncio_table, run_asyncio_benchmarks
from bench.config import FULL, QUICK, Config
from bench.contended import measure_contended
from bench.designs import DESIGNS
from bench.document import Document, meta, write_document
from bench.flush_hop import measure_flush_hop
from bench.harness import Progress
from bench.latency import LATENCY_VARIANTS, measure_latency
from bench.many_sessions import measure_many_sessions
from bench.memory import measure_memory
from bench.memory_child import run_worker
from bench.report import archive_report, report, revisions_report, ui_report
from bench.results import ArchiveMove, LatencyResult, Revisions, Ui, Workloads
from bench.revisions import measure_revisions
from bench.targets import check_targets
from bench.token_usage import measure_token_usage
from bench.ui import DEFAULT_CACHE, measure_ui
from journal import print_journal_table, run_journal_benchmarks

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
WORKLOADS = "workloads"
JOURNAL = "journal"
REVISIONS = "revisions"
ASYNCIO = "asyncio"
UI = "ui"
ARCHIVE = "archive"
SECTIONS = (WORKLOADS, JOURNAL, REVISIONS, ASYNCIO, UI, ARCHIVE)
#: Where the ui section finds a PostgreSQL server when ``--postgres`` names none.
POSTGRES_ENVIRONMENT = ("SESSIONACTORS_BENCH_POSTGRES_DSN", "SESSIONACTORS_TEST_POSTGRES_DSN")


async def timed_workloads(config: Config, base: Path, progress: Progress) -> partial[Workloads]:
    """Workloads 1 to 4, in one trio run; the memory workloads complete the result."""
    latency: dict[str, LatencyResult] = {}
    for variant in LATENCY_VARIANTS:
        progress(f"1/5 uncontended save latency ({variant})")
        latency[variant] = await measure_latency(config, base, variant)
    progress("1/5 one-message save under flush, against a bare thread hop")
    flush_save = await measure_flush_hop(config, base)
    progress("2/5 contended saves (shared object)")
    contended_shared = await measure_contended(config, base, shared=True)
    progress("2/5 contended saves (copies)")
    contended_copies = await measure_contended(config, base, shared=False)
    progress("3/5 many sessions")
    many_sessions = await measure_many_sessions(config, base)
    progress("4/5 token-usage appends")
    token_usage = await measure_token_usage(config, base)
    return partial(
        Workloads,
        uncontended_save=latency["turn"],
        uncontended_save_unchanged=latency["unchanged"],
        uncontended_save_rewrite=latency["rewrite"],
        flush_save=flush_save,
        contended_save=contended_shared,
        contended_save_copies=contended_copies,
        many_sessions=many_sessions,
        token_usage=token_usage,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; the hidden flags are the memory child's (``bench/memory.py``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny workloads (smoke test)")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable); default: all of them",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the JSON file to write (default: benchmarks/results/latest.json, "
        "or latest-<sections>.json with --only)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to make the scratch directory"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the ui section keeps its 100,000-session root between runs "
        "(default: benchmarks/results/cache; not used with --quick)",
    )
    parser.add_argument(
        "--postgres",
        default=None,
        metavar="URL",
        help="a PostgreSQL server for the ui section's watch (default: "
        + " or ".join(POSTGRES_ENVIRONMENT)
        + "; skipped when none can be reached)",
    )
    parser.add_argument("--memory-worker", choices=("live", "churn"), help=argparse.SUPPRESS)
    parser.add_argument("--design", choices=DESIGNS, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--wave", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=float, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_worker:
        run_worker(
            args.memory_worker, args.design, Path(args.dir), args.count, args.wave, args.idle
        )
        return 0

    config = QUICK if args.quick else FULL
    sections = tuple(name for name in SECTIONS if not args.only or name in args.only)
    out = args.out
    if out is None:
        partial_name = f"latest-{'-'.join(sections)}.json"
        out = DEFAULT_OUT if sections == SECTIONS else DEFAULT_OUT.with_name(partial_name)
    started = time.time()
    clock = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - clock:6.1f} s] {message}", file=sys.stderr, flush=True)

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="sessionactors-bench-", dir=args.dir))
    workloads: Workloads | None = None
    journal: dict[str, Any] | None = None
    revisions: Revisions | None = None
    asyncio_figures: dict[str, Any] | None = None
    ui: Ui | None = None
    archive: ArchiveMove | None = None
    try:
        if WORKLOADS in sections:
            timed = trio.run(timed_workloads, config, base, progress)
            progress("5/5 memory (child processes)")
            memory_live, memory_churn = measure_memory(config, base)
            workloads = timed(memory_live=memory_live, memory_churn=memory_churn)
        if JOURNAL in sections:
            progress("journal: saves that cost what changed")
            journal_dir = base / "journal"
            journal_dir.mkdir()
            journal = trio.run(partial(run_journal_benchmarks, journal_dir, quick=args.quick))
        if REVISIONS in sections:
            revisions_dir = base / "revisions"
            revisions_dir.mkdir()
            revisions = trio.run(measure_revisions, config, revisions_dir, progress)
        if ASYNCIO in sections:
            progress("asyncio: the aio store and AgentsSession (issue 16)")
            asyncio_dir = base / "asyncio"
            asyncio_dir.mkdir()
            asyncio_figures = run_asyncio_benchmarks(asyncio_dir, quick=args.quick)
        if UI in sections:
            progress("ui: listing, the index's cost, watch latency, update_session (part two)")
            ui_dir = base / "ui"
            ui_dir.mkdir()
            postgres = args.postgres or next(
                (os.environ[name] for name in POSTGRES_ENVIRONMENT if os.environ.get(name)), None
            )
            ui = trio.run(
                partial(
                    measure_ui,
                    config,
                    ui_dir,
                    progress,
                    cache=None if args.quick else args.cache,
                    postgres=postgres,
                )
            )
        if ARCHIVE in sections:
            archive_dir = base / "archive"
            archive_dir.mkdir()
            archive = trio.run(partial(measure_archive, archive_dir, progress, quick=args.quick))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    checks = check_targets(workloads, revisions, ui, archive)
    progress("done")
    document = Document(
        meta=meta(
            quick=args.quick,
            sections=sections,
            started=started,
            duration_s=time.perf_counter() - clock,
            directory=base,
            config=config,
        ),
        workloads=workloads,
        journal=journal,
        revisions=revisions,
        asyncio=asyncio_figures,
        ui=ui,
        archive=archive,
        targets=checks,
    )
    write_document(document, out)
    if workloads is not None:
        print(report(workloads, checks))
    if journal is not None:
        print_journal_table(journal)
    if revisions is not None:
        print()
        print(revisions_report(revisions, checks))
    if asyncio_figures is not None:
        print_asyncio_table(asyncio_figures)
    if ui is not None:
        print()
        print(ui_report(ui, checks))
    if archive is not None:
        print()
        print(archive_report(archive, checks))
    print(f"\nfigures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
