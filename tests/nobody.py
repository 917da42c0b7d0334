"""Run a child process as the user ``nobody``: the way tests meet a real EACCES.

Root reads through any permission, so only another user's process sees one.
That process must run an interpreter and import the library wherever the
checkout is, even under a directory only root may enter (a CI clone in a
private temporary directory, a virtual environment under ``/root``): the
library and what it imports are copied into a directory every user may
read, and the interpreter is the first one every user may run.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: Top-level modules the library imports, with theirs (those installed).
LIBRARIES = (
    "sessionactors",
    "trio",
    "outcome",
    "sniffio",
    "sortedcontainers",
    "idna",
    "attr",
    "attrs",
    "cattrs",
    "orjson",
    "typing_extensions",
    "exceptiongroup",
)


def prefix() -> list[str]:
    """The command prefix that runs what follows as ``nobody``."""
    if os.geteuid() != 0:
        pytest.skip("running a process as another user needs root")
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    return ["runuser", "-u", "nobody", "--"]


def interpreter() -> str:
    """A Python of this version every user may run (this one may sit under /root)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}", sys.executable):
        if os.path.exists(candidate):
            return candidate
    return sys.executable  # pragma: no cover


def readable_libraries(top: Path) -> Path:
    """Copies of the library and its imports under ``top``, readable by every user."""
    target = top / "pylib"
    target.mkdir(parents=True, exist_ok=True)
    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # not needed on this Python (exceptiongroup before 3.11)
        origin = Path(module.__file__ or "")
        if origin.name == "__init__.py":
            shutil.copytree(
                origin.parent,
                target / name,
                ignore=shutil.ignore_patterns("__pycache__"),
                dirs_exist_ok=True,
            )
        else:
            shutil.copy2(origin, target / origin.name)
    for directory, _, files in os.walk(top):
        os.chmod(directory, 0o755)
        for file in files:
            os.chmod(os.path.join(directory, file), 0o644)
    return target


def command(top: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """``python ARGS`` as nobody, and its environment, importing from copies under ``top``.

    Raises (fails the test, never skips it) when that user cannot run it.
    """
    libraries = readable_libraries(top)
    env = {
        **os.environ,
        "PYTHONPATH": str(libraries),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    argv = [*prefix(), interpreter(), *args]
    probe = subprocess.run(
        [*prefix(), interpreter(), "-c", "import sessionactors, trio"],
        capture_output=True,
        text=True,
        env=env,
        cwd=top,
        check=False,
    )
    assert probe.returncode == 0, f"nobody cannot run the library: {probe.stderr}"
    return argv, env
