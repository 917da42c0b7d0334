"""The JSON file of a run: where and with what it ran, every section's figures, the targets."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
import trio

import sessionactors

from .config import Config
from .results import ArchiveMove, Revisions, Ui, Workloads, converter
from .targets import Checked


@attrs.frozen(kw_only=True)
class Meta:
    """The run itself: its size, when and where, and the versions it ran with."""

    quick: bool
    sections: tuple[str, ...]
    started: str
    duration_s: float
    directory: str
    python: str
    platform: str
    cpus: int | None
    trio: str
    sessionactors: str
    config: Config


@attrs.frozen(kw_only=True)
class Document:
    """Everything one run measured; ``journal`` is ``benchmarks/journal.py``'s own dict.

    A section left out of the run (``run.py --only``) is null.
    """

    meta: Meta
    workloads: Workloads | None
    journal: dict[str, Any] | None
    revisions: Revisions | None
    #: ``bench/asyncio_embedding.py``'s own dict (issue 16).
    asyncio: dict[str, Any] | None
    #: Part two's workloads for a UI (``bench/ui.py``).
    ui: Ui | None
    #: Issue 15's export and import against cp (``bench/archive.py``).
    archive: ArchiveMove | None
    targets: tuple[Checked, ...]


def meta(
    *,
    quick: bool,
    sections: tuple[str, ...],
    started: float,
    duration_s: float,
    directory: Path,
    config: Config,
) -> Meta:
    """The run's ``meta``: ``started`` is a POSIX timestamp, written as ISO 8601 UTC."""
    return Meta(
        quick=quick,
        sections=sections,
        started=datetime.fromtimestamp(started, timezone.utc).isoformat(),
        duration_s=duration_s,
        directory=str(directory),
        python=sys.version,
        platform=platform.platform(),
        cpus=os.cpu_count(),
        trio=trio.__version__,
        sessionactors=sessionactors.__version__,
        config=config,
    )


def write_document(document: Document, path: Path) -> None:
    """Write ``document`` to ``path`` as indented JSON, making its directory if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(converter.unstructure(document), indent=2) + "\n", encoding="utf-8")
