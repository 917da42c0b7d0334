"""A private PostgreSQL cluster for tests that crash, restart or stop the server.

The shared test server (``SESSIONACTORS_TEST_POSTGRES_DSN``) must never be
restarted; these tests run a cluster of their own: a fresh data directory
under ``/tmp``, a free port on 127.0.0.1, trust authentication. The binaries
are found as ``.ci/run`` finds them (``initdb`` on the PATH, or the newest
``/usr/lib/postgresql/*/bin``); as root, the server runs as ``postgres``
(PostgreSQL refuses to run as root), through ``runuser``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

#: Bounds every pg_ctl call (seconds): a broken cluster fails the test, never hangs it.
PG_CTL_TIMEOUT = 60


def find_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: [
            int(part) for part in path.parent.parent.name.split(".") if part.isdigit()
        ],
    )
    return candidates[-1].parent if candidates else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """One running cluster: its URL, and the means to restart, stop and start it."""

    def __init__(self, bindir: Path, directory: Path, port: int) -> None:
        self.bindir = bindir
        self.directory = directory
        self.data = directory / "data"
        self.port = port
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        # PostgreSQL refuses to run as root: run its programs as postgres then.
        self._as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _pg_ctl(self, *args: str) -> None:
        command = [*self._as_pg, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=PG_CTL_TIMEOUT + 10)

    def init(self) -> None:
        command = [str(self.bindir / "initdb"), "-D", str(self.data)]
        command += ["-A", "trust", "-U", "postgres", "--no-sync"]
        subprocess.run([*self._as_pg, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory}"
            " -c max_connections=100 -c fsync=on"
        )
        log = str(self.directory / "log")
        self._pg_ctl("-l", log, "-w", "-t", str(PG_CTL_TIMEOUT), "-o", options, "start")

    def restart_immediately(self) -> None:
        """Crash the server (``-m immediate``: no checkpoint, recovery on start) and start it."""
        # -l: the server's output to the log, not to a pipe run() would wait on.
        log = str(self.directory / "log")
        self._pg_ctl("-l", log, "-w", "-t", str(PG_CTL_TIMEOUT), "-m", "immediate", "restart")

    def stop(self) -> None:
        self._pg_ctl("-w", "-t", str(PG_CTL_TIMEOUT), "-m", "immediate", "stop")

    def new_schema(self) -> str:
        """A new, empty schema's name: a test's tables live in one of their own."""
        schema = f"sa_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return schema

    def url(self, schema: str, port: int | None = None) -> str:
        """The URL of ``schema``'s tables; through ``port`` (a proxy) if given."""
        query = urllib.parse.urlencode({"options": f"-csearch_path={schema}"})
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/postgres?{query}"


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    """A new running cluster, stopped and removed on exit."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL binaries (initdb) on this machine")
    directory = Path(tempfile.mkdtemp(prefix="sessionactors-test-pg-"))
    try:
        if os.geteuid() == 0:
            os.chown(directory, pwd.getpwnam("postgres").pw_uid, -1)
        cluster = Cluster(bindir, directory, free_port())
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                cluster.stop()  # unless stopped already
    finally:
        shutil.rmtree(directory, ignore_errors=True)
