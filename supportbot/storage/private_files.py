"""The data folder and the SQLite database are created readable by their owner only.

The database holds every customer's messages, so a default umask (0644 files, 0755 folders)
would let any local user read them. SQLite gives its ``-wal`` and ``-shm`` files the mode of the
database file, so creating that one file 0600 covers all three. Existing files and folders are
left as the operator set them.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> None:
    """Create ``path`` (0700) and any missing parents (default mode) unless it exists."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=PRIVATE_DIR, exist_ok=True)


def private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists (an empty file is a new SQLite db)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE)
    except FileExistsError:
        return
    os.close(fd)
