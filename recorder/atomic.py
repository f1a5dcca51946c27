"""Crash-safe file writes: temporary file, fsync, rename, fsync the folder.

A reader (or a restart after SIGKILL) sees either the old file or the complete new one,
never a torn write. Temporary files hold exactly the bytes of the final file (ciphertext).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from recorder.layout import TEMP_SUFFIX


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(folder: Path, mode: int = 0o700) -> None:
    """Create ``folder`` (and parents) and make its entry durable."""
    if folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True, mode=mode)
    fsync_dir(folder.parent)


def write_atomic(path: Path, data: bytes | Sequence[bytes], mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (bytes, or parts written one after the other)
    atomically and durably; raises OSError (ENOSPC...)."""
    tmp = path.with_name(path.name + TEMP_SUFFIX)
    parts = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_temp_files(folder: Path) -> int:
    """Delete leftover ``*.tmp`` files of interrupted writes; returns how many."""
    removed = 0
    if not folder.is_dir():
        return 0
    for path in folder.iterdir():
        if path.name.endswith(TEMP_SUFFIX) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed
