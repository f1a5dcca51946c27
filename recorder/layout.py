"""Where a consultation's recording lives on disk (the retention daemon relies on this).

    <recording_dir>/<consultation_id>/segment-000001.seg   sealed segments, numbered from 1
    <recording_dir>/<consultation_id>/manifest.seg         sealed manifest
    <recording_dir>/<consultation_id>/*.tmp                 in-flight writes (ciphertext only)

Deleting the whole ``<consultation_id>`` folder deletes the recording.
"""

from __future__ import annotations

import re
from pathlib import Path

MANIFEST_NAME = "manifest.seg"
SEGMENT_PREFIX = "segment-"
SEGMENT_SUFFIX = ".seg"
TEMP_SUFFIX = ".tmp"
_SEGMENT_RE = re.compile(r"^segment-(\d{6,})\.seg$")
_CID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


class LayoutError(ValueError):
    """A consultation id that cannot name a folder (path traversal, odd characters)."""


def check_consultation_id(consultation_id: str) -> str:
    if not _CID_RE.match(consultation_id) or consultation_id in (".", ".."):
        raise LayoutError("consultation id must be 1-128 characters of A-Z a-z 0-9 _ - .")
    return consultation_id


def consultation_dir(recording_dir: Path, consultation_id: str) -> Path:
    return Path(recording_dir) / check_consultation_id(consultation_id)


def segment_name(index: int) -> str:
    return f"{SEGMENT_PREFIX}{index:06d}{SEGMENT_SUFFIX}"


def segment_index(name: str) -> int | None:
    """The index a segment file name carries, None for any other name."""
    m = _SEGMENT_RE.match(name)
    return int(m.group(1)) if m else None


def segment_files(folder: Path) -> dict[int, Path]:
    """index -> path of every segment file in ``folder`` (empty if it does not exist)."""
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for path in folder.iterdir():
        index = segment_index(path.name)
        if index is not None:
            out[index] = path
    return out
