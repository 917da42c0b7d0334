"""The command line under real faults: a full disk, a killed writer, EACCES, extreme dates.

Issue #11, items 7, 12 and 13, with real means: a small tmpfs filled until a
snapshot slot's rewrite fails with ENOSPC, a writer process SIGKILLed between
a slot's rewrite and the cut after it, and the commands run as ``nobody`` on a
store where one session is ``chmod 000`` (a real EACCES, which root never
gets). Every command runs as a user runs it: ``python -m sessionactors``.
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

import nobody
import pytest
import trio

from sessionactors import Message, Session, open_store
from sessionactors.storage.files import SLOT_FILES, decode_snapshot, encode_head, read_snapshot_at

SLOT_0 = "session.json"
SLOT_1 = "session.1.json"
PAD = 3000  # bytes of metadata: a slot of about one 4 KiB page
LOWEST = datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))
HIGHEST = datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))
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


def newer_slot(directory: Path) -> Any:
    snapshot = read_snapshot_at(str(directory), directory.name)
    assert snapshot is not None
    return snapshot


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


# --- item 13: show prints dates UTC cannot hold ---------------------------------------------


def test_show_prints_dates_outside_utc_in_their_own_offset(tmp_path: Path) -> None:
    root = tmp_path / "store"
    session = Session(
        id="edges",
        created_at=LOWEST,
        messages=[
            Message(id="first", role="user", content="hi", created_at=LOWEST),
            Message(id="last", role="assistant", content="bye", created_at=HIGHEST),
        ],
    )
    save(root, session)
    result = run("show", root, "edges")
    assert result.returncode == 0, result.stderr
    assert "#1 user  first  0001-01-01 00:00:00+05:00" in result.stdout
    assert "#2 assistant  last  9999-12-31 23:59:59-05:00" in result.stdout
    assert "created       0001-01-01T00:00:00+05:00" in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    shown = run("show", root, "edges", "--json")
    assert shown.returncode == 0, shown.stderr
    assert '"9999-12-31T23:59:59.999999-05:00"' in shown.stdout


def test_list_prints_an_updated_at_outside_utc_in_its_own_offset(tmp_path: Path) -> None:
    """The library sets ``updated_at`` itself; a snapshot written by hand may hold any."""
    root = tmp_path / "store"
    save(root, Session(id="edge"), Session(id="plain"))
    snapshot = newer_slot(root / "edge")
    Path(snapshot.path).write_bytes(
        encode_head({**snapshot.head, "updated_at": LOWEST.isoformat()})
    )
    result = run("list", root)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert rows[0].split()[0] == "plain"
    assert rows[1].split() == ["edge", "no", "0", "0001-01-01", "+05:00"]


# --- item 12: verify tells an interrupted slot rewrite from damage, and repairs it ----------


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


async def save_until_the_disk_is_full(root: Path, disk: Path) -> None:
    """Two saves, then a third whose slot rewrite fails with ENOSPC (raised to the caller)."""
    async with open_store(root) as store:
        session = Session(id="s", metadata={"pad": "a" * PAD})
        await store.save_runtime_session(session)  # slot 0, seq 1
        session.metadata = {"pad": "b" * PAD}
        await store.save_runtime_session(session)  # slot 1, seq 2: the newer
        await trio.to_thread.run_sync(fill, disk)
        # Slot 0's rewrite needs a second page the disk does not have.
        session.metadata = {"pad": "c" * (2 * PAD)}
        with pytest.raises(OSError) as failed:
            await store.save_runtime_session(session)
        assert failed.value.errno == errno.ENOSPC


def test_verify_repairs_a_slot_emptied_by_a_real_enospc(small_disk: Path) -> None:
    root = small_disk / "store"
    session_path = root / "s"
    trio.run(save_until_the_disk_is_full, root, small_disk)
    assert (session_path / SLOT_0).stat().st_size == 0  # the library cut it to nothing
    newer_bytes = (session_path / SLOT_1).read_bytes()
    assert load(root, "s").metadata == {"pad": "b" * PAD}  # readers use slot 1

    slot_line = (
        f"{session_path / SLOT_0}: older snapshot slot left empty by a rewrite that failed "
        "(a full disk, say); readers use the newer slot (seq 2), which is whole, and the "
        "next save rewrites this one"
    )
    found = run("verify", root)
    assert found.stdout.splitlines() == [
        f"{slot_line} (repairable)",
        f"checked 1 session in {root}: 1 problem: no damage, 1 leftover of an interrupted "
        "write (1 repairable with --repair)",
    ]
    assert found.returncode == 1

    repaired = run("verify", root, "--repair")  # on the disk still full
    assert repaired.stdout.splitlines() == [
        f"{slot_line}: repaired (made absent; the newer slot is kept)",
        f"checked 1 session in {root}: repaired 1, no problems left",
    ]
    assert repaired.returncode == 0
    assert not (session_path / SLOT_0).exists()
    assert (session_path / SLOT_1).read_bytes() == newer_bytes
    assert load(root, "s").metadata == {"pad": "b" * PAD}

    (small_disk / "filler").unlink()
    save(root, Session(id="s", metadata={"pad": "d"}))  # makes the missing slot whole
    assert load(root, "s").metadata == {"pad": "d"}
    assert run("verify", root).stdout == f"checked 1 session in {root}: no problems\n"


#: Confirms ``argv[2]`` saves (each with about a page of metadata), then dies by
#: SIGKILL inside the next one, at the instant between the rewrite of the older
#: slot (shorter than the bytes it replaces) and the cut of those old bytes' tail:
#: that os.ftruncate of a slot kills the process instead.
KILLED_WRITER = """
import os, signal, sys
import trio
from sessionactors import Message, Session, open_store

SLOTS = ("/session.json", "/session.1.json")
cut = os.ftruncate
armed = False

def ftruncate(fd, length):
    if armed and os.readlink(f"/proc/self/fd/{fd}").endswith(SLOTS):
        os.kill(os.getpid(), signal.SIGKILL)
    cut(fd, length)

os.ftruncate = ftruncate

async def main():
    global armed
    async with open_store(sys.argv[1]) as store:
        session = Session(id="s", messages=[Message(id="m1", role="user", content="one")])
        for letter in "abc"[: int(sys.argv[2])]:
            session.metadata = {"pad": letter * PAD}
            await store.save_runtime_session(session)
        armed = True
        session.metadata = {"pad": "z"}
        session.messages[0].content = "edited"  # a new journal too
        await store.save_runtime_session(session)  # killed
    print("not killed")

trio.run(main)
""".replace("PAD", str(PAD))


@pytest.mark.parametrize("confirmed", [2, 3])
def test_verify_repairs_a_slot_torn_by_a_real_kill(tmp_path: Path, confirmed: int) -> None:
    root = tmp_path / "store"
    session_path = root / "s"
    torn_slot, newer_slot_name = SLOT_FILES[confirmed % 2], SLOT_FILES[(confirmed + 1) % 2]
    last_metadata = {"pad": "abc"[confirmed - 1] * PAD}
    writer = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(root), str(confirmed)],
        capture_output=True,
        timeout=60,
    )
    assert writer.returncode == -signal.SIGKILL, writer.stderr.decode(errors="replace")
    # The byte state the kill left: the older slot holds a whole snapshot one seq
    # above the newer, then the tail of the bytes it was written over.
    torn = (session_path / torn_slot).read_bytes()
    line, _, rest = torn.partition(b"\n")
    checksum, _, stale = rest.partition(b"\n")
    unconfirmed = decode_snapshot(torn_slot, line + b"\n" + checksum + b"\n", "s", 0)
    assert unconfirmed.seq == confirmed + 1 and stale
    newer_bytes = (session_path / newer_slot_name).read_bytes()
    assert decode_snapshot(newer_slot_name, newer_bytes, "s", 0).seq == confirmed
    orphan = session_path / unconfirmed.head["journal"]
    assert orphan.exists()
    loaded = load(root, "s")  # readers use the newer slot: the last confirmed save
    assert (loaded.metadata, loaded.messages[0].content) == (last_metadata, "one")

    slot_line = (
        f"{session_path / torn_slot}: older snapshot slot torn by a crash between its "
        f"rewrite and the cut after it: a snapshot no save confirmed (seq {confirmed + 1}), "
        f"then {len(stale)} bytes of the one before; readers use the newer slot "
        f"(seq {confirmed}), which is whole, and the next save rewrites this one"
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
    assert (loaded.metadata, loaded.messages[0].content) == (last_metadata, "one")

    loaded.metadata = {"pad": "d"}
    save(root, loaded)  # makes the cleared slot whole again
    assert load(root, "s").metadata == {"pad": "d"}
    assert run("verify", root).stdout == f"checked 1 session in {root}: no problems\n"


def flipped(head: dict[str, Any]) -> bytes:
    """A whole slot with one byte changed: its checksum no longer matches."""
    whole = encode_head({**head, "seq": head["seq"] + 1})
    return whole.replace(b'"title":"', b'"title":"X', 1)


def skipped_seq(head: dict[str, Any]) -> bytes:
    """A whole slot and a tail, but not the next ``seq``: no rewrite left this."""
    return encode_head({**head, "seq": head["seq"] + 5}) + b"0123abcd\n"


def unterminated(head: dict[str, Any]) -> bytes:
    """The next ``seq``, whole, then a tail the old slot cannot have ended with."""
    return encode_head({**head, "seq": head["seq"] + 1}) + b"0123abcd"


def save_twice(root: Path) -> None:
    """Session ``s`` saved twice: both slots whole, slot 1 the newer."""
    session = Session(id="s", messages=[Message(id="m1", role="user", content="one")])
    save(root, session)
    session.metadata = {"k": 1}
    save(root, session)


@pytest.mark.parametrize("damaged", [flipped, skipped_seq, unterminated])
def test_verify_calls_other_undecodable_slots_damage(tmp_path: Path, damaged: Any) -> None:
    root = tmp_path / "store"
    save_twice(root)
    older = root / "s" / SLOT_0
    older.write_bytes(damaged(newer_slot(root / "s").head))
    kept = older.read_bytes()
    found = run("verify", root, "--repair")
    assert found.stdout.startswith(f"{older}: corrupt:"), found.stdout
    assert "repaired" not in found.stdout and "leftover" not in found.stdout
    assert found.returncode == 1
    assert older.read_bytes() == kept


def test_verify_calls_an_empty_slot_damage_when_the_session_does_not_read(
    tmp_path: Path,
) -> None:
    """An empty older slot beside a newer one whose journal is gone is not repaired away."""
    root = tmp_path / "store"
    save_twice(root)
    older = root / "s" / SLOT_0
    older.write_bytes(b"")
    newer = newer_slot(root / "s")
    (root / "s" / newer.head["journal"]).unlink()
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


@pytest.mark.parametrize("unreadable", ["directory", "snapshot"])
def test_a_session_nobody_may_read_hides_no_other(shared_dir: Path, unreadable: str) -> None:
    root = shared_dir / "store"
    build_three(root)
    target = root / "b" if unreadable == "directory" else root / "b" / SLOT_0
    target.chmod(0)
    if unreadable == "snapshot":
        (root / "b" / SLOT_1).unlink()  # the empty second slot: no other to fall back to

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


def test_a_session_whose_slot_is_a_directory_hides_no_other(tmp_path: Path) -> None:
    root = tmp_path / "store"
    build_three(root)
    slot = root / "b" / SLOT_0
    slot.unlink()
    slot.mkdir()  # and slot 1 is the empty one a first save leaves: no whole slot

    skipped = f"sessionactors: warning: skipped session 'b': {slot}: "
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
    assert str(root / "b") in verified.stdout
    assert verified.returncode == 1


# --- item 4 (verify's side): a damaged journal the store kept is reported, never removed ----


def test_verify_reports_a_kept_damaged_journal_and_never_removes_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    session = Session(id="s", messages=[Message(id="m1", role="user", content="one")])
    save(root, session)
    journal = root / "s" / newer_slot(root / "s").head["journal"]
    damaged = b"x" * (len(journal.read_bytes()) - 1) + b"\n"  # counted size and lines kept
    journal.write_bytes(damaged)
    save(root, Session(id="s", messages=[Message(id="m1", role="user", content="anew")]))
    kept = [path for path in (root / "s").iterdir() if path.name.endswith(".corrupt")]
    assert [path.read_bytes() for path in kept] == [damaged]  # the store kept it aside

    line = (
        f"{kept[0]}: a damaged file the store kept rather than delete (a save replaced it): "
        "look into it, then remove it yourself; verify never does"
    )
    for args in (("verify", root), ("verify", root, "--repair")):
        found = run(*args)
        assert found.stdout.splitlines() == [line, f"checked 1 session in {root}: 1 problem"]
        assert found.returncode == 1
    assert kept[0].read_bytes() == damaged
    assert load(root, "s").messages[0].content == "anew"
