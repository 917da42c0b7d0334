"""Where a store keeps its sessions: the backend a root names.

A root is a directory (the file store), a ``postgresql://`` or
``postgres://`` URL (PostgreSQL), or ``memory://`` / ``memory://name`` (this
process's memory). Backends never import the actor, the store or the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

from .memory import SCHEME as MEMORY_SCHEME
from .memory import MemoryBackend
from .protocol import Backend

__all__ = ["Backend", "open_backend", "waits_on_network"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def waits_on_network(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` names a database server (its calls wait on the network)."""
    return isinstance(root, str) and root.startswith(_POSTGRES_SCHEMES)


def open_backend(
    root: str | os.PathLike[str], *, fsync: bool, max_connections: int
) -> tuple[Backend, Path | str]:
    """The backend ``root`` names, and where it is, as the store reports it.

    Nothing is opened yet (the backend's ``aopen`` does that). A URL's
    password is left out of where it is.
    """
    backend: Backend
    if isinstance(root, str) and root.startswith(_POSTGRES_SCHEMES):
        from .postgres import PostgresBackend  # psycopg is an optional extra

        postgres = PostgresBackend(root, fsync=fsync, max_connections=max_connections)
        backend = postgres
        return backend, postgres.display_url
    if isinstance(root, str) and root.startswith(MEMORY_SCHEME):
        backend = MemoryBackend(root)
        return backend, root
    from .files import FileBackend  # imports this package's protocol

    path = Path(root)
    return FileBackend(path, fsync), path
