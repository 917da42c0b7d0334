"""The command line under real faults: a full disk, a killed writer, EACCES, extreme dates.

Issue #11, items 7, 12 and 13, with real means: a small tmpfs filled until a
save fails with ENOSPC, a writer process SIGKILLed in the middle of its
append or of a fork, and the commands run as ``nobody`` on a store where one
session is ``chmod 000`` (a real EACCES, which root never gets). Every command
runs as a user runs it: ``python -m sessionactors``.

The library writes logs (format 3) only; what an older version's interrupted
slot rewrite left of a session of format 2 (still read, until its next write
moves it into a log) is made by hand, byte for byte as that rewrite left it.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import nobody
import pytest
import trio
from support import (
    FORMAT_2_JOURNAL,
    current_generation,
    format_2_head,
    format_2_slot,
    generations,
    links,
    log_record,
    log_records,
    write_format_2,
)

from sessionactors import Message, Session, open_store
from sessionactors.storage.files import SLOT_FILES
from sessionactors.storage.files.layout import temp_name

SLOT_0 = "session.json"
SLOT_1 = "session.1.json"
PAD = 3000  # bytes of metadata: a slot of about one 4 KiB page
LOWEST = datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))
# The first and last instants a session may hold, written west and east of UTC.
EARLIEST = datetime.min.replace(tzinfo=timezone(timedelta(hours=-5)))
LATEST = datetime.max.replace(tzinfo=timezone(timedelta(hours=5)))
REPO = Path(__file__).resolve().parent.parent


def run(
    *args: object, as_nobody: Path | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m sessionactors ARGS``, as root or, with ``as_nobody``, as ``nobody``.

    ``as_nobody``: a directory every user may read, for the copies that user imports.
    """
    if as_nobody is None:
        argv = [sys.executable, "-m", "sessionactors"]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    else:
        argv, env = nobody.command(as_nobody, "-m", "sessionactors")
    result = subprocess.run(
        [*argv, *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        cwd=cwd,
        env=env,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def rewrite_last_commit(path: Path, change: Any) -> None:
    """Give the last record of a generation (its last commit) ``change(json)``, whole."""
    kind, body, start, _ = log_records(path)[-1]
    assert kind == b"c"
    path.write_bytes(path.read_bytes()[:start] + log_record(kind, change(body)))


def load(root: Path, session_id: str) -> Session:
    """The session as a fresh store reads it."""

    async def read() -> Session | None:
        async with open_store(root) as store:
            return await store.load_session(session_id)

    session = trio.run(read)
    assert session is not None
    return session


def save(root: Path, *sessions: Session) -> None:
    """Save each of ``sessions`` in turn, from one fresh store."""

    async def write() -> None:
        async with open_store(root, durability="flush") as store:
            for session in sessions:
                await store.save_runtime_session(session)

    trio.run(write)


# --- item 13: show prints the dates at the edges ---------------------------------------------


def test_show_prints_the_edge_dates_a_session_may_hold(tmp_path: Path) -> None:
    """Messages are listed in UTC; the JSON keeps each date as it was given."""
    root = tmp_path / "store"
    session = Session(
        id="edges",
        created_at=EARLIEST,
        messages=[
            Message(id="first", role="user", content="hi", created_at=EARLIEST),
            Message(id="last", role="assistant", content="bye", created_at=LATEST),
        ],
    )
    save(root, session)
    result = run("show", root, "edges")
    assert result.returncode == 0, result.stderr
    assert "#1 user  first  0001-01-01 05:00:00\n" in result.stdout
    assert "#2 assistant  last  9999-12-31 18:59:59\n" in result.stdout
    assert "created       0001-01-01T00:00:00-05:00" in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    shown = run("show", root, "edges", "--json")
    assert shown.returncode == 0, shown.stderr
    assert '"9999-12-31T23:59:59.999999+05:00"' in shown.stdout


def test_list_prints_an_updated_at_outside_utc_in_its_own_offset(tmp_path: Path) -> None:
    """The library sets ``updated_at`` itself; a commit written by hand may hold any."""
    root = tmp_path / "store"
    save(root, Session(id="edge"), Session(id="plain"))
    rewrite_last_commit(
        current_generation(root / "edge"),
        lambda commit: {
            **commit,
            "session": {**commit["session"], "updated_at": LOWEST.isoformat()},
        },
    )
    result = run("list", root)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert rows[0].split()[0] == "plain"
    assert rows[1].split() == ["edge", "no", "0", "1", "0001-01-01", "+05:00"]
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


# --- item 12: verify tells what an interrupted write left from damage, and repairs it -------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test (unmounted afterwards): a disk that fills."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full to the last byte; return its path."""
    path = directory / "filler"
    chunk = 1 << 16
    with open(path, "wb", buffering=0) as file:
        while chunk:
            try:
                file.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    return path


async def saves_on_a_full_disk(root: Path, disk: Path) -> Session:
    """A save, then an append and a new generation that both fail with ENOSPC.

    Returns the session as its one confirmed save left it.
    """
    async with open_store(root) as store:
        session = Session(id="s", messages=[Message(id="m1", role="user", content="one")])
        await store.save_runtime_session(session)
        confirmed = await store.load_session("s")
        assert confirmed is not None
        await trio.to_thread.run_sync(fill, disk)
        # More than the slack of the generation's last page: the write is cut
        # short by the full disk, then fails.
        session.messages.append(Message(id="m2", role="user", content="x" * (3 * PAD)))
        with pytest.raises(OSError) as failed:
            await store.save_runtime_session(session)  # an append
        assert failed.value.errno == errno.ENOSPC
        session.messages[0] = Message(id="m1", role="user", content="edited " * PAD)
        with pytest.raises(OSError) as failed:
            await store.save_runtime_session(session)  # a new generation
        assert failed.value.errno == errno.ENOSPC
        return confirmed


def test_a_real_enospc_leaves_nothing_for_verify(small_disk: Path) -> None:
    """A failed append is cut back where it began; a failed generation is removed."""
    root = small_disk / "store"
    confirmed = trio.run(saves_on_a_full_disk, root, small_disk)
    before = {path.name: path.read_bytes() for path in generations(root / "s")}
    assert len(before) == 1
    found = run("verify", root)  # on the disk still full
    assert found.stdout == f"checked 1 session in {root}: no problems\n"
    assert found.returncode == 0
    assert load(root, "s") == confirmed
    assert {path.name: path.read_bytes() for path in generations(root / "s")} == before


def two_slots_of_format_2(directory: Path, *, metadata: dict[str, Any]) -> Session:
    """Session ``s`` of format 2 saved twice: both slots whole, slot 1 the newer (seq 2)."""
    session = Session(id="s", messages=[Message(id="m1", role="user", content="one")])
    write_format_2(directory, session)
    session.metadata = metadata
    (directory / SLOT_1).write_bytes(format_2_slot(format_2_head(session, seq=2)))
    return session


def test_verify_repairs_a_slot_of_format_2_a_full_disk_emptied(tmp_path: Path) -> None:
    """What an older version's slot rewrite that failed with ENOSPC left: slot 0 cut to nothing."""
    root = tmp_path / "store"
    session_path = root / "s"
    newer = two_slots_of_format_2(session_path, metadata={"pad": "b" * PAD})
    (session_path / SLOT_0).write_bytes(b"")
    newer_bytes = (session_path / SLOT_1).read_bytes()
    assert load(root, "s").metadata == newer.metadata  # readers use slot 1

    slot_line = (
        f"{session_path / SLOT_0}: older snapshot slot left empty by a rewrite that failed "
        "(a full disk, say); readers use the newer slot (seq 2), which is whole, and the "
        "next write moves the session into a log, without this one"
    )
    found = run("verify", root)
    assert found.stdout.splitlines() == [
        f"{slot_line} (repairable)",
        f"checked 1 session in {root}: 1 problem: no damage, 1 leftover of an interrupted "
        "write (1 repairable with --repair)",
    ]
    assert found.returncode == 1

    repaired = run("verify", root, "--repair")
    assert repaired.stdout.splitlines() == [
        f"{slot_line}: repaired (made absent; the newer slot is kept)",
        f"checked 1 session in {root}: repaired 1, no problems left",
    ]
    assert repaired.returncode == 0
    assert not (session_path / SLOT_0).exists()
    assert (session_path / SLOT_1).read_bytes() == newer_bytes
    assert load(root, "s") == attrs.evolve(newer, revision=1)

    save(root, Session(id="s", metadata={"pad": "d"}))  # moves it into a log
    assert load(root, "s").metadata == {"pad": "d"}
    assert not (session_path / SLOT_1).exists() and generations(session_path)
    assert run("verify", root).stdout == f"checked 1 session in {root}: no problems\n"


@pytest.mark.parametrize("confirmed", [2, 3])
def test_verify_repairs_a_slot_of_format_2_a_kill_tore(tmp_path: Path, confirmed: int) -> None:
    """What an older version's writer SIGKILLed between a slot's rewrite and the cut after
    it left: the older slot holds a whole snapshot one seq above the newer, then the tail
    of the longer bytes it was written over; the journal that snapshot names is an orphan."""
    root = tmp_path / "store"
    session_path = root / "s"
    torn_slot, newer_slot_name = SLOT_FILES[confirmed % 2], SLOT_FILES[(confirmed + 1) % 2]
    session = Session(id="s", messages=[Message(id="m1", role="user", content="one")])
    write_format_2(session_path, session)
    before = attrs.evolve(session, metadata={"pad": "a" * PAD})
    last = attrs.evolve(session, metadata={"pad": "b" * PAD})
    newer_bytes = format_2_slot(format_2_head(last, seq=confirmed))
    (session_path / newer_slot_name).write_bytes(newer_bytes)
    orphan = session_path / "messages.00000000deadbeef.jsonl"
    orphan.write_bytes(b'{"id":"m1","role":"user","content":"edited","created_at":null}\n')
    overwritten = format_2_slot(format_2_head(before, seq=confirmed - 1))
    unconfirmed = format_2_slot(
        format_2_head(
            attrs.evolve(session, metadata={"pad": "z"}), seq=confirmed + 1, journal=orphan.name
        )
    )
    stale = overwritten[len(unconfirmed) :]
    (session_path / torn_slot).write_bytes(unconfirmed + stale)
    loaded = load(root, "s")  # readers use the newer slot: the last confirmed save
    assert (loaded.metadata, loaded.messages[0].content) == (last.metadata, "one")

    slot_line = (
        f"{session_path / torn_slot}: older snapshot slot torn by a crash between its "
        f"rewrite and the cut after it: a snapshot no save confirmed (seq {confirmed + 1}), "
        f"then {len(stale)} bytes of the one before; readers use the newer slot "
        f"(seq {confirmed}), which is whole, and the next write moves the session into a "
        "log, without this one"
    )
    orphan_line = f"{orphan}: journal no snapshot names (a crashed rewrite)"
    found = run("verify", root)
    assert found.stdout.splitlines() == [
        f"{slot_line} (repairable)",
        f"{orphan_line} (repairable)",
        f"checked 1 session in {root}: 2 problems: no damage, 2 leftovers of interrupted "
        "writes (2 repairable with --repair)",
    ]
    assert found.returncode == 1

    repaired = run("verify", root, "--repair")
    assert repaired.stdout.splitlines() == [
        f"{slot_line}: repaired (made absent; the newer slot is kept)",
        f"{orphan_line}: repaired (orphan removed)",
        f"checked 1 session in {root}: repaired 2, no problems left",
    ]
    assert repaired.returncode == 0
    assert not orphan.exists()
    if torn_slot == SLOT_0:
        assert not (session_path / SLOT_0).exists()  # an empty first slot would read torn
    else:
        assert (session_path / SLOT_1).read_bytes() == b""  # an empty second slot is absent
    assert (session_path / newer_slot_name).read_bytes() == newer_bytes
    loaded = load(root, "s")
    assert (loaded.metadata, loaded.messages[0].content) == (last.metadata, "one")

    loaded.metadata = {"pad": "d"}
    save(root, loaded)  # moves it into a log
    assert load(root, "s").metadata == {"pad": "d"}
    assert run("verify", root).stdout == f"checked 1 session in {root}: no problems\n"


#: Confirms two saves (the second an append), then dies by SIGKILL inside the
#: third, an append of one message: the ``write`` of its records puts the first
#: ``argv[2]`` bytes of them (negative: all but that many) in the generation, then
#: the process is killed, before the rest and before the fdatasync.
KILLED_APPENDER = """
import os, signal, sys
import trio
from sessionactors import Message, Session, open_store

write = os.write
armed = False

def tearing_write(fd, data):
    if armed and "/log." in os.readlink(f"/proc/self/fd/{fd}"):
        data = bytes(data)
        write(fd, data[: int(sys.argv[2])])
        os.kill(os.getpid(), signal.SIGKILL)
    return write(fd, data)

os.write = tearing_write

async def main():
    global armed
    async with open_store(sys.argv[1]) as store:
        session = Session(id="s", messages=[Message(id="m1", role="user", content="one")])
        await store.save_runtime_session(session)
        session.messages.append(Message(id="m2", role="assistant", content="two"))
        await store.save_runtime_session(session)
        armed = True
        session.messages.append(Message(id="m3", role="user", content="three " * 50))
        await store.save_runtime_session(session)  # killed
    print("not killed")

trio.run(main)
"""


@pytest.mark.parametrize("written", [100, -1], ids=["in-a-message", "all-but-the-newline"])
def test_verify_repairs_the_tail_a_real_kill_left_in_an_append(
    tmp_path: Path, written: int
) -> None:
    root = tmp_path / "store"
    writer = subprocess.run(
        [sys.executable, "-c", KILLED_APPENDER, str(root), str(written)],
        capture_output=True,
        timeout=60,
    )
    assert writer.returncode == -signal.SIGKILL, writer.stderr.decode(errors="replace")
    generation = current_generation(root / "s")
    data = generation.read_bytes()
    whole = data.split(b"\n")[:-1]  # the last piece has no newline: cut short
    ends = [len(b"\n".join(whole[: number + 1])) + 1 for number in range(len(whole))]
    counted = max(end for end, line in zip(ends, whole, strict=True) if line[:1] == b"c")
    torn = len(data) - counted
    assert torn > 0 and not data.endswith(b"\n")
    confirmed = load(root, "s")  # the torn write is ignored: the second save stands
    assert (confirmed.revision, [m.id for m in confirmed.messages]) == (2, ["m1", "m2"])

    line = (
        f"{generation}: {torn} bytes after the last whole commit (revision 2): what a "
        "crash left of a write; readers ignore them and the next write cuts them off"
    )
    found = run("verify", root)
    assert found.stdout.splitlines() == [
        f"{line} (repairable)",
        f"checked 1 session in {root}: 1 problem: no damage, 1 leftover of an interrupted "
        "write (1 repairable with --repair)",
    ]
    assert found.returncode == 1

    repaired = run("verify", root, "--repair")
    assert repaired.stdout.splitlines() == [
        f"{line}: repaired (cut back to the last whole commit)",
        f"checked 1 session in {root}: repaired 1, no problems left",
    ]
    assert repaired.returncode == 0
    assert generation.read_bytes() == data[:counted]
    assert load(root, "s") == confirmed
    assert run("verify", root).stdout == f"checked 1 session in {root}: no problems\n"


#: Forks ``s`` into ``f`` and dies by SIGKILL when the fork's generation, made
#: whole under a temporary name, is about to be renamed into place: the links
#: to ``s``'s generations are made, the fork is not.
KILLED_FORK = """
import os, signal, sys
import trio
from sessionactors import Message, Session, open_store

rename = os.rename

def dying_rename(src, dst, *args, **kwargs):
    if str(dst).startswith("log.") and os.getenv("ARMED"):
        os.kill(os.getpid(), signal.SIGKILL)
    return rename(src, dst, *args, **kwargs)

os.rename = dying_rename

async def main():
    async with open_store(sys.argv[1]) as store:
        if not os.getenv("ARMED"):
            session = Session(id="s", messages=[Message(id="m1", role="user", content="one")])
            await store.save_runtime_session(session)
        else:
            await store.fork_session("s", "f")  # killed
    print("done")

trio.run(main)
"""


def test_verify_repairs_directories_left_without_a_session_and_keeps_foreign_ones(
    tmp_path: Path,
) -> None:
    """What a killed import or delete leaves (records, temporary files), or nothing at all."""
    root = tmp_path / "store"

    async def one_session() -> None:
        async with open_store(root) as store:
            await store.save_runtime_session(Session(id="s"))

    trio.run(one_session)
    (root / "empty").mkdir()
    (root / "import").mkdir()
    (root / "import" / "token-usage.jsonl").write_bytes(b'{"n":1}\n')
    (root / "import" / temp_name("token-usage.jsonl")).write_bytes(b'{"n":1}\n')
    (root / "delete").mkdir()
    (root / "delete" / temp_name(f"log.0.{'a' * 32}.jsonl")).write_bytes(b"cut short")
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("not the store's")
    # Named like what writers leave, but not as they name it: not the store's either.
    (root / "exports").mkdir()
    (root / "exports" / "messages.2024-06.jsonl").write_text('{"role":"user"}\n')

    found = run("verify", root)
    assert found.returncode == 1
    assert found.stdout.splitlines()[-1].endswith(
        "7 problems: 2 damage, 5 leftovers of interrupted writes (5 repairable with --repair)"
    )
    repaired = run("verify", root, "--repair")
    assert repaired.stdout.splitlines()[-1].endswith("2 problems left")
    names = sorted(path.name for path in root.iterdir())
    assert names == [".sessionactors", "exports", "foreign", "s"]
    assert (root / "foreign" / "notes.txt").read_text() == "not the store's"
    assert (root / "exports" / "messages.2024-06.jsonl").exists()


def test_verify_repairs_what_a_fork_killed_halfway_left(tmp_path: Path) -> None:
    root = tmp_path / "store"
    made = subprocess.run(
        [sys.executable, "-c", KILLED_FORK, str(root)], capture_output=True, timeout=60
    )
    assert made.returncode == 0, made.stderr.decode(errors="replace")
    source = {path: path.read_bytes() for path in generations(root / "s")}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_FORK, str(root)],
        capture_output=True,
        timeout=60,
        env={**os.environ, "ARMED": "1"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode(errors="replace")
    (link,) = links(root / "f")
    (temp,) = (root / "f").glob(".log.*.tmp")
    assert link.stat().st_nlink == 2  # the source's generation, under a second name

    fork_lines = [
        f"{root / 'f'}: a directory without a session, holding at most what a writer makes on"
        " its way (temporary files, a fork's links): what a first write, a fork, an import or"
        " a delete stopped by a crash leaves; no read returns it",
        f"{link}: a link no generation of this session needs (a fork, or a write, that "
        "crashed before removing it): readers ignore it; removing it leaves the other "
        "session's file as it is",
        f"{temp}: stray temporary file (a crashed save)",
    ]
    found = run("verify", root)
    assert found.stdout.splitlines() == [
        f"{fork_lines[0]} (repairable)",
        f"{fork_lines[1]} (repairable)",
        f"{fork_lines[2]} (repairable)",
        f"checked 2 sessions in {root}: 3 problems: no damage, 3 leftovers of interrupted "
        "writes (3 repairable with --repair)",
    ]
    assert found.returncode == 1

    repaired = run("verify", root, "--repair")
    assert repaired.stdout.splitlines() == [
        f"{fork_lines[0]}: repaired (removed, with the leftovers in it)",
        f"{fork_lines[1]}: repaired (link removed; the other session's file is as it was)",
        f"{fork_lines[2]}: repaired (removed)",
        f"checked 2 sessions in {root}: repaired 3, no problems left",
    ]
    assert repaired.returncode == 0
    assert not (root / "f").exists()
    assert {path: path.read_bytes() for path in generations(root / "s")} == source
    assert all(path.stat().st_nlink == 1 for path in source)

    async def fork_again() -> Session:
        async with open_store(root) as store:
            return await store.fork_session("s", "f")

    fork = trio.run(fork_again)  # the directory is used again
    assert load(root, "f") == fork
    assert run("verify", root).stdout == f"checked 2 sessions in {root}: no problems\n"


@pytest.mark.parametrize("damaged", ["flipped", "skipped_seq", "unterminated"])
def test_verify_calls_other_undecodable_slots_damage(tmp_path: Path, damaged: str) -> None:
    """Of format 2: an older slot undecodable in any way no interrupted rewrite leaves."""
    root = tmp_path / "store"
    newer = format_2_head(two_slots_of_format_2(root / "s", metadata={"k": 1}), seq=2)
    whole = format_2_slot({**newer, "seq": newer["seq"] + 1})
    older = root / "s" / SLOT_0
    older.write_bytes(
        {
            # One byte changed: the checksum no longer matches.
            "flipped": whole.replace(b'"title":"', b'"title":"X', 1),
            # A whole slot and a tail, but not the next seq: no rewrite left this.
            "skipped_seq": format_2_slot({**newer, "seq": newer["seq"] + 5}) + b"0123abcd\n",
            # The next seq, whole, then a tail the old slot cannot have ended with.
            "unterminated": whole + b"0123abcd",
        }[damaged]
    )
    kept = older.read_bytes()
    found = run("verify", root, "--repair")
    assert found.stdout.startswith(f"{older}: corrupt:"), found.stdout
    assert "repaired" not in found.stdout and "leftover" not in found.stdout
    assert found.returncode == 1
    assert older.read_bytes() == kept


def test_verify_calls_an_empty_slot_damage_when_the_session_does_not_read(
    tmp_path: Path,
) -> None:
    """Of format 2: an empty older slot beside a newer one whose journal is gone stays."""
    root = tmp_path / "store"
    two_slots_of_format_2(root / "s", metadata={"k": 1})
    older = root / "s" / SLOT_0
    older.write_bytes(b"")
    (root / "s" / FORMAT_2_JOURNAL).unlink()
    found = run("verify", root, "--repair")
    assert found.returncode == 1
    assert f"{older}: corrupt:" in found.stdout
    assert "journal missing" in found.stdout
    assert "repaired" not in found.stdout
    assert older.exists()


# --- item 7: one unreadable session hides no other -----------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A temporary directory every user may traverse (pytest's own is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="sessionactors-eacces-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for directory, _, _ in os.walk(path):  # chmod 000 parts must be readable to remove
            os.chmod(directory, 0o755)
        shutil.rmtree(path)


def build_three(root: Path) -> None:
    """Sessions a, b and c (saved in this order), each with a message and a usage record."""

    async def build() -> None:
        async with open_store(root, durability="flush") as store:
            for session_id in ("a", "b", "c"):
                session = Session(id=session_id, title=f"title {session_id}")
                session.messages.append(Message(id="m1", role="user", content="hi"))
                await store.save_runtime_session(session)
                await store.append_token_usage_record(
                    session_id, {"model": "m", "input_tokens": 10, "output_tokens": 1}
                )

    trio.run(build)


@pytest.mark.parametrize("unreadable", ["directory", "log"])
def test_a_session_nobody_may_read_hides_no_other(shared_dir: Path, unreadable: str) -> None:
    root = shared_dir / "store"
    build_three(root)
    target = root / "b" if unreadable == "directory" else current_generation(root / "b")
    target.chmod(0)

    skipped = "sessionactors: warning: skipped session 'b': Permission denied"
    listed = run("list", root, as_nobody=shared_dir / "py", cwd=shared_dir)
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["c", "a"]
    assert listed.stderr.startswith(skipped), listed.stderr
    assert listed.returncode == 1

    usage = run("usage", root, "--csv", as_nobody=shared_dir / "py", cwd=shared_dir)
    assert [line.split(",")[0] for line in usage.stdout.splitlines()[1:]] == ["a", "c"]
    assert usage.stderr.startswith(skipped), usage.stderr
    assert usage.returncode == 1

    verified = run("verify", root, as_nobody=shared_dir / "py", cwd=shared_dir)
    lines = verified.stdout.splitlines()
    assert lines[-1] == f"checked 3 sessions in {root}: 1 problem"
    assert lines[0].startswith(f"{root / 'b'}") and "Permission denied" in lines[0]
    assert verified.returncode == 1
    assert stat.S_IMODE(target.stat().st_mode) == 0  # nothing was touched


def as_format_2(directory: Path) -> None:
    """The session in ``directory`` as an older version wrote it (its usage log kept)."""
    session = load(directory.parent, directory.name)
    for generation in generations(directory):
        generation.unlink()
    write_format_2(directory, session)


@pytest.mark.parametrize("form", ["slot of format 2", "generation"])
def test_a_session_whose_file_is_no_file_hides_no_other(tmp_path: Path, form: str) -> None:
    """A slot that is a directory (format 2), or a generation that is a symbolic link."""
    root = tmp_path / "store"
    build_three(root)
    if form == "generation":
        bad = current_generation(root / "b")
        elsewhere = tmp_path / "elsewhere.jsonl"
        bad.rename(elsewhere)
        bad.symlink_to(elsewhere)  # the same bytes, through a link: refused
    else:
        as_format_2(root / "b")
        bad = root / "b" / SLOT_0
        bad.unlink()
        bad.mkdir()  # and slot 1 is the empty one a first save leaves: no whole slot

    skipped = f"sessionactors: warning: skipped session 'b': {bad}: "
    listed = run("list", root)
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["c", "a"]
    assert listed.stderr.startswith(skipped), listed.stderr
    assert listed.returncode == 1

    usage = run("usage", root, "--csv")
    assert [line.split(",")[0] for line in usage.stdout.splitlines()[1:]] == ["a", "c"]
    assert usage.stderr.startswith(skipped), usage.stderr
    assert usage.returncode == 1

    verified = run("verify", root)
    assert verified.stdout.splitlines()[-1] == f"checked 3 sessions in {root}: 1 problem"
    assert verified.stdout.startswith(f"{bad}: "), verified.stdout
    assert verified.returncode == 1


# --- item 4 (verify's side): a damaged generation the store kept is reported, never removed --


def test_verify_reports_a_kept_damaged_generation_and_never_removes_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    session = Session(id="s", messages=[Message(id="m1", role="user", content="one")])
    save(root, session)
    generation = current_generation(root / "s")
    data = generation.read_bytes()
    damaged = data.replace(b'"one"', b'"ONE"')  # one message, its checksum wrong
    generation.write_bytes(damaged)
    # A store that never read it saves a whole transcript: a new generation.
    save(root, Session(id="s", messages=[Message(id="m1", role="user", content="anew")]))
    kept = [path for path in (root / "s").iterdir() if path.name.endswith(".corrupt")]
    assert [path.read_bytes() for path in kept] == [damaged]  # the store kept it aside

    line = (
        f"{kept[0]}: a damaged file the store kept rather than delete (a save replaced it): "
        "look into it, then remove it yourself; verify never does"
    )
    for args in (("verify", root), ("verify", root, "--repair")):
        found = run(*args)
        assert line in found.stdout.splitlines()
        assert "repaired" not in found.stdout
        assert found.returncode == 1
    assert kept[0].read_bytes() == damaged
    assert load(root, "s").messages[0].content == "anew"
