"""The recording folder as retention sees it: ``<recording_dir>/<consultation_id>/``
(layout in recorder/layout.py) plus anything else that ended up there."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from recorder.layout import LayoutError, check_consultation_id


@dataclass(frozen=True)
class FolderEntry:
    """One top-level entry of the recording folder."""

    name: str
    path: Path
    is_dir: bool
    newest_mtime: float  # newest modification time of the entry and everything inside
    consultation_id: str | None  # the folder name, when it can be a consultation id


def _newest_mtime(path: str) -> float:
    """Newest mtime of ``path`` and everything below it (missing parts are skipped)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0.0
    newest = st.st_mtime
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path) as it:
                for entry in it:
                    newest = max(newest, _newest_mtime(entry.path))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return newest


def _remove_tree(path: str) -> int:
    """Delete ``path`` (file or folder, recursively); the number of files removed.
    Missing parts are fine (idempotent); any other failure raises OSError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
            return 1
        except FileNotFoundError:
            return 0
    count = 0
    try:
        with os.scandir(path) as it:
            entries = [e.path for e in it]
    except FileNotFoundError:
        return 0
    for child in entries:
        count += _remove_tree(child)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    return count


class RecordingFolder:
    """Deletes and lists what the recorder wrote under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def consultation_dir(self, consultation_id: str) -> Path | None:
        """The folder of a consultation, None if the id cannot name one."""
        try:
            return self.root / check_consultation_id(consultation_id)
        except LayoutError:
            return None

    def remove_consultation(self, consultation_id: str) -> int:
        """Delete a consultation's recording folder (segments, manifest, temporary files);
        the number of files removed (0 when already gone)."""
        folder = self.consultation_dir(consultation_id)
        return _remove_tree(str(folder)) if folder is not None else 0

    def remove_entry(self, entry: FolderEntry) -> int:
        return _remove_tree(str(entry.path))

    def entries(self) -> list[FolderEntry]:
        """Every top-level entry (an absent folder has none)."""
        out: list[FolderEntry] = []
        try:
            with os.scandir(self.root) as it:
                found = [(e.name, e.path, e.is_dir(follow_symlinks=False)) for e in it]
        except FileNotFoundError:
            return out
        for name, path, is_dir in found:
            try:
                cid: str | None = check_consultation_id(name) if is_dir else None
            except LayoutError:
                cid = None
            out.append(FolderEntry(name=name, path=Path(path), is_dir=is_dir,
                                   newest_mtime=_newest_mtime(path), consultation_id=cid))
        return out
