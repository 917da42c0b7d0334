"""Where the CPU time of one call goes, per workload, across all threads (py-spy).

Usage, from the repository root (py-spy is a tool for this script only: pip install py-spy)::

    .venv/bin/python benchmarks/where_time_goes.py [--workload NAME ...] [--rate HZ]
        [--postgres DSN] [--blocking] [--raw DIR]

Workloads, sessionactors only, durability "fsync" unless said, each built from the bench
modules' own code: ``contended`` (bench/contended.py, shared=False), ``many``
(bench/many_sessions.py), ``usage`` (bench/token_usage.py), ``turn-flush`` and ``rewrite``
(bench/latency.py's variants; turn with durability "flush"), ``postgres`` (the actors'
"many sessions" of benchmarks/postgres.py; only with ``--postgres``).

Each runs in a child process that prepares untimed (sessions made, first saves, schemas),
then prints ``ready``; the parent attaches ``py-spy record --pid --threads -f raw
--nonblocking`` (``--blocking`` pauses the process at each sample: more overhead, and idle
threads interrupted by ptrace show up as active), says ``go``, and stops py-spy (SIGINT) as
soon as the child reports its calls and wall time. Idle samples are left out (py-spy's
default), so waiting is not counted; a thread blocked in fsync/fdatasync, or in psycopg's
wait for the server, is not idle to the kernel and is counted: the ``fsync`` column is time
threads spend waiting for the disk, not interpreter work. The server's own CPU is not seen.
Per call: samples / rate / calls (thread-time of all threads, so it can exceed wall time).

Each sample (a folded stack) goes to one category, first match wins: (1) dropped if a frame
is the harness's untimed code (bench ``setup``, ``prepare``, ``settle``, ``fresh_dir``,
``verify``, ``open_design``, shutil, this file's ``untimed_*``); (2) the leaf frame's source
line: an fsync/fdatasync/sync call -> fsync, flock -> locking, ``orjson.`` -> encoding, any
other ``os.*`` or ``open(`` call -> system calls; (3) the innermost frame whose file is known,
walking leaf to root (attrs, outcome, contextlib... pass it on): psycopg -> postgres;
files/lock.py -> locking; files/index.py, sqlite3 -> listing index; cattrs, files/records.py,
postgres/rows.py, ``encode*`` in _values.py -> encoding; _values.py, _ids.py, ``check*`` in
_model.py -> checking; _model.py -> encoding; _plan.py, _planned.py, _merge.py,
_transcript.py, _update.py -> planner; files/durable.py -> system calls; _runner.py, trio's
_threads.py, _thread_cache.py, _entry_queue.py, _wakeup_socketpair.py, threading.py ->
thread hop; _actor.py, _store.py, _messages.py, trio's _channel.py -> channel; _batch.py,
_steps.py, the rest of sessionactors/storage -> store logic; the rest of trio/_core (run
loop, epoll), asyncio, selectors -> event loop; benchmarks/ and anything else -> other.
"""

from __future__ import annotations

import argparse
import json
import linecache
import math
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "where-time-goes.md"
CATEGORIES = (
    *("event loop", "channel", "thread hop", "checking", "encoding", "planner"),
    *("store logic", "system calls", "fsync", "locking", "listing index", "postgres", "other"),
)
# name: (description, repeats at 200 Hz for about 3,000 active samples)
WORKLOADS = {
    "contended": ("64 tasks x 10 saves, 200 messages, own copies", 60),
    "many": ("1,000 sessions x 5 saves", 1),
    "usage": ("10,000 usage records, 500 tasks, 5 sessions", 18),
    "turn-flush": ("one-message save, 200 messages, flush", 900),
    "rewrite": ("save after editing message 0, 200 messages", 100),
    "postgres": ("PostgreSQL, 1,000 sessions x 5 saves", 3),
}
_FRAME = re.compile(r"^(.*) \((.*):(\d+)\)$")
_UNTIMED = {"setup", "prepare", "settle", "fresh_dir", "verify", "open_design", "rmtree"}
_LINE_RULES = (
    (re.compile(r"\b(fsync|fdatasync|sync)\("), "fsync"),
    (re.compile(r"\bflock\("), "locking"),
    (re.compile(r"\borjson\."), "encoding"),
    (re.compile(r"\bos\.\w+\(|\bopen\("), "system calls"),
)
_PATH_RULES = (
    (("psycopg",), "postgres"),
    (("storage/files/lock.py",), "locking"),
    (("storage/files/index.py", "/sqlite3/"), "listing index"),
    (("/cattrs/", "storage/files/records.py", "storage/postgres/rows.py"), "encoding"),
    (("sessionactors/_values.py", "sessionactors/_ids.py"), "checking"),
    (("sessionactors/_model.py",), "encoding"),
    (("_plan.py", "_planned.py", "_merge.py", "_transcript.py", "_update.py"), "planner"),
    (("storage/files/durable.py",), "system calls"),
    (("sessionactors/_runner.py", "trio/_threads.py", "_thread_cache.py"), "thread hop"),
    (("trio/_core/_entry_queue.py", "_wakeup_socketpair.py", "/threading.py"), "thread hop"),
    (("sessionactors/_actor.py", "sessionactors/_store.py", "_messages.py"), "channel"),
    (("trio/_channel.py",), "channel"),
    (
        ("sessionactors/_batch.py", "sessionactors/_steps.py", "sessionactors/storage/"),
        "store logic",
    ),
    (("trio/_core/", "/asyncio/", "/selectors.py"), "event loop"),
    (("/benchmarks/", "/bench/", "/where_time_goes.py"), "other"),
)


def classify(stack: str) -> str | None:
    """The category of one folded stack (root first), or None for untimed harness code."""
    frames = [m.groups() for m in map(_FRAME.match, stack.split(";")) if m]
    for func, path, _ in frames:
        bench = path.startswith("bench/") or "/benchmarks/" in path
        name = func.rpartition(".")[2]  # py-spy names a nested function outer.<locals>.inner
        if (name in _UNTIMED and bench) or name.startswith("untimed_") or "shutil.py" in path:
            return None
    if not frames:
        return "other"
    func, path, line = frames[-1]
    source = linecache.getline(path, int(line))
    if "gc.collect(" in source:  # the harness's, before a timed part
        return None
    for pattern, category in _LINE_RULES:
        if pattern.search(source):
            return category
    for func, path, _ in reversed(frames):
        if path.endswith("_values.py") and func.startswith("encode"):
            return "encoding"
        if path.endswith("_model.py") and (func.startswith("check") or func == "_aware"):
            return "checking"
        for needles, category in _PATH_RULES:
            if any(needle in "/" + path for needle in needles):
                return category
    return "other"


# --- the child: prepare, wait for "go", run the timed part, report -----------------------


async def start() -> None:
    """Tell the parent the preparation is done; wait for its ``go`` (py-spy attached)."""
    import trio

    print("ready", flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)


async def finish(calls: int, wall: float) -> None:
    """Report the timed calls and their wall time; wait until py-spy has stopped."""
    import trio

    print(json.dumps({"calls": calls, "wall": wall}), flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)


async def child(name: str, repeats: int, dsn: str | None) -> None:
    """Run workload ``name`` ``repeats`` times between :func:`start` and :func:`finish`."""
    import attrs
    from bench import contended, many_sessions, throughput, token_usage
    from bench.config import FULL
    from bench.designs import OURS

    async def ours_only(
        name: str,
        rounds: int,
        calls: int,
        base: Path,
        setup: Any,
        verify: Any = None,
        *_: Any,
        **__: Any,
    ) -> dict[str, Any]:
        # bench.throughput.measure_rates for sessionactors alone (no classic, no floor).
        await start()
        rates = await throughput.measure_rates(name, rounds, calls, base, setup, verify, (OURS,))
        await finish(calls * rounds, sum(rates[OURS].elapsed_s))
        return rates

    for module in (contended, many_sessions, token_usage):
        module.measure_rates = ours_only  # type: ignore[attr-defined]
        module.compare = lambda *_: None  # type: ignore[attr-defined]
    base = Path(tempfile.mkdtemp(prefix="where-time-goes-"))
    try:
        if name == "contended":
            config = attrs.evolve(FULL, contended_rounds=repeats)
            await contended.measure_contended(config, base, shared=False)
        elif name == "many":
            await many_sessions.measure_many_sessions(attrs.evolve(FULL, many_rounds=repeats), base)
        elif name == "usage":
            await token_usage.measure_token_usage(attrs.evolve(FULL, usage_rounds=repeats), base)
        elif name == "postgres":
            await postgres_child(repeats, dsn or "")
        else:
            await latency_child(name, repeats, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def latency_child(name: str, repeats: int, base: Path) -> None:
    """``bench/latency.py``'s saves: ``repeats`` sessions, each saved once (untimed), then
    ``latency_saves`` times, changed as ``latency.change()`` does (messages made beforehand)."""
    from bench.config import FULL
    from bench.data import make_message, make_session, text

    from sessionactors import open_store

    durability: Literal["fsync", "flush"] = "flush" if name == "turn-flush" else "fsync"
    saves, size = FULL.latency_saves, FULL.latency_messages
    async with open_store(base, durability=durability, idle_timeout=3600) as store:
        sessions = [make_session(f"latency-{n}", size) for n in range(repeats)]
        for session in sessions:
            await store.save_runtime_session(session)
        texts = [text(step, 1450) for step in range(saves)]
        new = [[make_message(size + step) for step in range(saves)] for _ in sessions]
        await start()
        wall = 0.0
        for session, messages in zip(sessions, new, strict=True):
            for step in range(saves):
                if name == "turn-flush":
                    session.messages.append(messages[step])
                else:
                    session.messages[0].content = texts[step]
                began = time.perf_counter()
                await store.save_runtime_session(session)
                wall += time.perf_counter() - began
        await finish(repeats * saves, wall)


async def postgres_child(repeats: int, dsn: str) -> None:
    """``benchmarks/postgres.py``'s many-sessions run of the actors, a fresh schema each time."""
    import postgres as bench_pg
    import psycopg

    from sessionactors import open_store

    schemas = [f"sa_where_{uuid.uuid4().hex[:12]}" for _ in range(repeats)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f"CREATE SCHEMA {schema}")
    try:
        await start()
        wall = 0.0
        for schema in schemas:
            manager = open_store(
                bench_pg._schema_url(dsn, schema), durability="fsync", max_threads=bench_pg.THREADS
            )
            store = await untimed_enter(manager)
            seconds, _ = await bench_pg.many_sessions(store)
            wall += seconds
            await untimed_exit(manager)
        await finish(5000 * repeats, wall)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def untimed_enter(manager: Any) -> Any:
    """Open a store (its main-thread frames are left out of the profile, as any untimed_*)."""
    return await manager.__aenter__()


async def untimed_exit(manager: Any) -> None:
    """Close it."""
    await manager.__aexit__(None, None, None)


# --- the parent: one child under py-spy per workload, then the table ---------------------


def profile(name: str, args: argparse.Namespace, raw: Path) -> dict[str, Any]:
    """Run one workload's child under py-spy; its calls, wall time and samples by category."""
    repeats = max(1, math.ceil(WORKLOADS[name][1] * 200 / args.rate))
    command = [sys.executable, __file__, "--child", name, "--repeats", str(repeats)]
    if args.postgres:
        command += ["--postgres", args.postgres]
    kid = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert kid.stdin is not None and kid.stdout is not None
    if kid.stdout.readline().strip() != "ready":
        raise SystemExit(f"{name}: the child failed before it was ready")
    spy_command = [args.py_spy, "record", "--pid", str(kid.pid), "--threads", "-f", "raw"]
    spy_command += [
        "-r",
        str(args.rate),
        "-o",
        str(raw),
        *(["--nonblocking"] * (not args.blocking)),
    ]
    spy = subprocess.Popen(spy_command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaching
    kid.stdin.write("go\n")
    kid.stdin.flush()
    result = kid.stdout.readline()
    spy.send_signal(signal.SIGINT)
    spy.communicate(timeout=60)
    kid.stdin.write("done\n")
    kid.stdin.close()
    kid.wait(timeout=120)
    if not result:
        raise SystemExit(f"{name}: the child failed (exit status {kid.returncode})")
    samples: Counter[str] = Counter()
    dropped = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        category = classify(stack)
        if category is None:
            dropped += int(count)
        else:
            samples[category] += int(count)
    return {**json.loads(result), "samples": samples, "dropped": dropped, "repeats": repeats}


def table(rows: dict[str, dict[str, Any]], rate: int) -> str:
    """Two markdown tables: microseconds of CPU per call by category, and shares in %."""
    head = ["workload", *CATEGORIES, "CPU/call", "wall/call", "samples"]
    rule = "|" + "|".join(["---", *["---:"] * (len(head) - 1)]) + "|"
    per_call, shares = ["| " + " | ".join(head) + " |", rule], [rule]
    shares.insert(0, "| " + " | ".join(["workload (share %)", *CATEGORIES, "CPU/call"]) + " |")
    shares[1] = "|" + "|".join(["---", *["---:"] * (len(CATEGORIES) + 1)]) + "|"
    for name, row in rows.items():
        total = sum(row["samples"].values())
        micro = [row["samples"][c] / rate / row["calls"] * 1e6 for c in CATEGORIES]
        cells = [f"{value:.0f}" for value in micro]
        cpu, wall = total / rate / row["calls"] * 1e6, row["wall"] / row["calls"] * 1e6
        label = f"{name}: {WORKLOADS[name][0]}"
        per_call.append(f"| {label} | {' | '.join(cells)} | {cpu:.0f} | {wall:.0f} | {total} |")
        pct = [f"{row['samples'][c] / total * 100:.0f}" if total else "-" for c in CATEGORIES]
        shares.append(f"| {name} | {' | '.join(pct)} | {cpu:.0f} µs |")
    return "\n".join(per_call) + "\n\n" + "\n".join(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", action="append", choices=list(WORKLOADS))
    parser.add_argument("--rate", type=int, default=200, help="samples a second (100-250)")
    parser.add_argument("--postgres", help="DSN of a PostgreSQL server (workload postgres)")
    parser.add_argument("--blocking", action="store_true", help="py-spy pausing the process")
    parser.add_argument("--raw", help="keep py-spy's raw stacks in this directory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.child:
        import trio

        trio.run(child, args.child, args.repeats, args.postgres)
        return
    args.py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
        "py-spy"
    )
    if args.py_spy is None:
        raise SystemExit("py-spy not found: pip install py-spy (a tool for this script only)")
    names = args.workload or [n for n in WORKLOADS if n != "postgres" or args.postgres]
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        if args.raw:
            Path(args.raw).mkdir(parents=True, exist_ok=True)
        scratch = args.raw or scratch
        for name in names:
            if name == "postgres" and not args.postgres:
                print("postgres: skipped (no --postgres DSN)", file=sys.stderr)
                continue
            started = time.perf_counter()
            rows[name] = row = profile(name, args, Path(scratch) / f"{name}.txt")
            print(
                f"{name}: {row['calls']} calls, {sum(row['samples'].values())} samples "
                f"({row['dropped']} untimed dropped), {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
    version = subprocess.run([args.py_spy, "--version"], capture_output=True, text=True).stdout
    command = " ".join([".venv/bin/python", "benchmarks/where_time_goes.py", *sys.argv[1:]])
    text = (
        f"# Where the time goes\n\nCommand: `{command}`  \n{version.strip()}, {args.rate} Hz, "
        f"{'' if args.blocking else 'non'}blocking, active samples only; microseconds of "
        "CPU per call (all threads) by category, total CPU and wall time per call.\n\n"
        f"{table(rows, args.rate)}\n"
    )
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
