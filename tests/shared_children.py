"""Child processes that start together: :func:`run_together`, and ``shared_child.py`` by role.

Each child waits at a file barrier until all are ready, then they go
together. :func:`run_shared_children` runs ``children/shared_child.py`` once
per role on one session (the shared-root and multi-host tests): the
long-running ones (the runtimes) stop once the finite ones are done.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

CHILD = Path(__file__).parent / "children" / "shared_child.py"


async def run_together(
    commands: Mapping[str, Sequence[str]],
    workdir: Path,
    *,
    timeout: float = 60,
    finite: Sequence[str] | None = None,
) -> dict[str, str]:
    """Run ``python COMMAND BARRIER`` for each name at once; each child's stdout.

    A child touches ``BARRIER/ready-NAME`` once set up and starts at
    ``BARRIER/go``, made once all are ready. With ``finite``, the children
    so named end by themselves, and ``BARRIER/stop`` is made once they have,
    for the others. Every child must exit with status 0 (else its stderr is
    shown); one still running at a failure is killed.
    """
    barrier = workdir / "barrier"
    barrier.mkdir()
    processes: dict[str, trio.Process] = {}
    try:
        for name, command in commands.items():
            with (
                (workdir / f"{name}.out").open("wb") as out,
                (workdir / f"{name}.err").open("wb") as err,
            ):
                processes[name] = await trio.lowlevel.open_process(
                    [sys.executable, *command, str(barrier)], stdout=out, stderr=err
                )
        with trio.fail_after(timeout):
            while len(list(barrier.glob("ready-*"))) < len(commands):
                assert all(p.returncode is None for p in processes.values()), "a child died"
                await trio.sleep(0.01)
            (barrier / "go").touch()
            if finite is not None:
                for name in finite:
                    await processes[name].wait()
                (barrier / "stop").touch()
            for process in processes.values():
                await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            for process in processes.values():
                if process.returncode is None:
                    process.kill()
                await process.wait()
    for name, process in processes.items():
        assert process.returncode == 0, (workdir / f"{name}.err").read_text(errors="replace")
    return {name: (workdir / f"{name}.out").read_text(errors="replace") for name in commands}


async def run_shared_children(
    roles: Sequence[tuple[str, str]],
    location: str,
    session_id: str,
    workdir: Path,
    *,
    finite: Sequence[str],
    timeout: float = 40,
) -> dict[str, list[float]]:
    """Run one child per ``(role, name)``; return each child's ``done`` times.

    ``finite`` names the children that end by themselves; the others run
    until those are done. Every child must exit with status 0.
    """
    commands = {name: [str(CHILD), role, name, location, session_id] for role, name in roles}
    outputs = await run_together(commands, workdir, timeout=timeout, finite=finite)
    return {name: json.loads(output)["done"] for name, output in outputs.items()}
