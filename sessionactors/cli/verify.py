"""``sessionactors verify``: check every session and log; ``--repair`` fixes what is safe.

It reads through the file backend's own checks (``verify_session``), one
session at a time, and prints each problem with its path on stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import SessionStoreError
from ..storage.files import Problem, SessionReport, Severity, session_names, verify_session
from .common import EXIT_OK, EXIT_PROBLEMS, existing_root
from .progress import Progress
from .text import plural

__all__ = ["PROGRESS_MIN_SESSIONS", "Progress", "run"]

#: ``verify`` draws a progress bar on a terminal from this many sessions on.
PROGRESS_MIN_SESSIONS = 100


def _problem_line(problem: Problem, *, repair: bool) -> str:
    hint = " (repairable)" if problem.repair is not None and not repair else ""
    return f"{problem.path}: {problem.message}{hint}"


def _verify_one(root: Path, name: str, *, repair: bool, history: int | None) -> SessionReport:
    """One session's report; a session that cannot be checked is a problem, not the end."""
    try:
        return verify_session(root, name, repair=repair, history=history)
    except OSError as exc:
        doing = "repaired" if repair else "checked"
        problem = Problem(root / name, f"cannot be {doing}: {exc.strerror or exc}")
    except SessionStoreError as exc:  # changed under our feet between check and repair
        problem = Problem(root / name, f"cannot be checked: {exc}")
    return SessionReport([problem], [])


def _remaining(problems: Sequence[Problem], *, repaired: bool) -> str:
    """The summary's count of what is left: how many problems, and how many are damage."""
    text = plural(len(problems), "problem") + (" left" if repaired else "")
    leftovers = sum(problem.severity is Severity.LEFTOVER for problem in problems)
    if leftovers:
        damage = len(problems) - leftovers
        of_writes = "an interrupted write" if leftovers == 1 else "interrupted writes"
        text += f": {damage or 'no'} damage, {plural(leftovers, 'leftover')} of {of_writes}"
    repairable = sum(problem.repair is not None for problem in problems)
    if repairable:
        text += f" ({repairable} repairable with --repair)"
    return text


def run(args: argparse.Namespace) -> int:
    """Check (and with ``args.repair`` repair) every session of ``args.root``."""
    root = existing_root(args.root)
    names = session_names(root)
    progress = Progress(len(names), sys.stderr, minimum=PROGRESS_MIN_SESSIONS)
    remaining: list[Problem] = []
    repaired = 0
    for done, name in enumerate(names, 1):
        report = _verify_one(root, name, repair=args.repair, history=args.history)
        if report.problems or report.repaired:
            progress.clear()
            for problem in report.repaired:
                assert problem.repair is not None
                print(f"{problem.path}: {problem.message}: repaired ({problem.repair.value})")
            for problem in report.problems:
                print(_problem_line(problem, repair=args.repair))
            sys.stdout.flush()
        remaining += report.problems
        repaired += len(report.repaired)
        progress.update(done)
    progress.clear()
    summary = f"checked {plural(len(names), 'session')} in {args.root}: "
    if repaired:
        summary += f"repaired {repaired}, "
    if not remaining:
        summary += "no problems" + (" left" if repaired else "")
    else:
        summary += _remaining(remaining, repaired=bool(repaired))
    print(summary)
    return EXIT_PROBLEMS if remaining else EXIT_OK
