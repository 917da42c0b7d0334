"""The command line: list, show, history, watch, rewind, fork, usage, verify, export,
import, prune, du, demo, on a store.

Every command reads the store through the library (``open_store`` and its
methods; ``verify`` and ``du`` through the file backend's own decoders), never
through a second reader of the files. Exit status: 0 done, 1 problems found (a corrupt
file, a damaged log, an OS error), 2 a usage error (bad arguments, a missing
root, an unknown or invalid session id). Expected conditions print one line
on stderr, never a traceback. A command over every session (``list``,
``usage``, ``verify``, ``du``, ``prune``) never lets one damaged or unreadable session hide the
others: it names each one it skips on stderr, with the reason, shows the
rest, and exits 1.

``parser`` builds the arguments and runs a command; ``common`` holds what
the commands share (exit statuses, warnings, opening a store); ``text``
fits text to a terminal; ``progress`` draws a progress bar on a terminal;
``durable`` writes the files a command makes for the user (archives) whole
and synced; each command is a module of its own (``listing``, ``show``,
``history``, ``watch``, ``rewind``, ``fork``, ``usage`` with
``usage_records``, ``verify``, ``archive`` for ``export`` and ``import``,
``prune`` with ``durations`` and ``freed``, ``du``, ``demo``). ``rewind``,
``fork``, ``import`` and ``prune`` are the only ones that write to a store,
and only through the library, as an application would. ``du`` and ``prune``
count bytes through the backends' own ``disk_use`` modules. ``list``,
``watch``, ``export``, ``import``, ``prune`` and ``du`` also take a
``postgresql://`` URL for the root; ``watch`` runs until Ctrl-C (or SIGTERM)
and then exits 0.
"""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
