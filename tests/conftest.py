"""Fixtures shared by the contract tests: a fresh root and a store open on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import sessionactors


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A store root that does not exist yet (open_store creates it)."""
    return tmp_path / "store"


@pytest.fixture
async def store(root: Path) -> AsyncIterator[sessionactors.SessionStore]:
    """A store on ``root``; "flush" durability, since fsync is not what these tests check."""
    async with sessionactors.open_store(root, durability="flush") as opened:
        yield opened
