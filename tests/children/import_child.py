"""Child of the import kill test: imports one archive again and again until SIGKILLed.

Usage: import_child.py LOCATION ARCHIVE FIRST

Opens a store on LOCATION (a directory or a postgresql:// URL, durability
"fsync") and imports the archive in the file ARCHIVE under the ids
``imp-FIRST``, ``imp-FIRST+1``, ... one after the other. After each import
returns it writes the number it used as one line on stdout (one ``write``:
a kill can only lose what no call returned).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

import sessionactors


async def main(location: str, data: bytes, first: int) -> None:
    async with sessionactors.open_store(location) as store:
        number = first
        while True:
            await store.import_session(data, session_id=f"imp-{number}")
            os.write(1, b"%d\n" % number)
            number += 1


if __name__ == "__main__":
    location, archive, first = sys.argv[1:]
    trio.run(main, location, Path(archive).read_bytes(), int(first))
