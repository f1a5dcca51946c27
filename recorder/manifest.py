"""The per-consultation manifest: which segments exist, in order, with their hashes.

Sealed like a segment (kind "manifest", index = generation, previous hash = sha256 of the
last listed segment) under the consultation's data key, and replaced atomically after every
segment, so it always lists complete segments only. Times are milliseconds on the
recording's single timeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from recorder.atomic import write_atomic
from recorder.layout import MANIFEST_NAME
from recorder.segment import KIND_MANIFEST, ZERO_HASH, SegmentError, open_segment, seal

MANIFEST_VERSION = 1
STATE_RECORDING = "recording"
STATE_CLOSED = "closed"
STATE_FAILED = "failed"


@dataclass
class SegmentEntry:
    index: int
    file: str
    size: int  # sealed bytes
    sha256: str  # of the sealed file
    duration: float  # seconds
    first_pts: int  # ms, earliest packet of any track
    last_pts: int  # ms, latest packet of any track
    video_frames: int = 0
    audio_packets: int = 0


@dataclass
class Manifest:
    consultation_id: str
    key_id: str
    container: str = ""  # webm | matroska
    video_codec: str = ""
    state: str = STATE_RECORDING
    generation: int = 0
    version: int = MANIFEST_VERSION
    segments: list[SegmentEntry] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    def last_sha256(self) -> bytes:
        return bytes.fromhex(self.segments[-1].sha256) if self.segments else ZERO_HASH

    def to_json(self) -> bytes:
        # what dataclasses.asdict gives (every field holds plain JSON values), without its
        # recursive deep copy: rewritten after every segment, the manifest grows all call
        fields = dict(vars(self))
        fields["segments"] = [vars(s) for s in self.segments]
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Raises ValueError or TypeError on anything but a well-typed manifest."""
        data: Any = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("segments", []), list):
            raise TypeError("not a manifest object")
        segments = [_typed(SegmentEntry(**s)) if isinstance(s, dict) else _typed(s)
                    for s in data.pop("segments", [])]
        manifest = _typed(cls(segments=segments, **data))
        manifest.last_sha256()  # a hex digest (ValueError otherwise)
        return manifest


_TYPES = {"int": (int,), "str": (str,), "float": (int, float)}


def _typed(obj: Any) -> Any:
    """``obj`` if every int/str/float field holds that type (JSON carries no types)."""
    if not isinstance(obj, (Manifest, SegmentEntry)):
        raise TypeError("not a manifest entry")
    for f in fields(obj):
        value = getattr(obj, f.name)
        allowed = _TYPES.get(str(f.type))
        if allowed and (isinstance(value, bool) or not isinstance(value, allowed)):
            raise TypeError(f"manifest field {f.name} has the wrong type")
    return obj


def seal_manifest(data_key: bytes, manifest: Manifest) -> bytes:
    return seal(data_key, manifest.key_id, manifest.consultation_id, manifest.generation,
                manifest.to_json(), prev_sha256=manifest.last_sha256(), kind=KIND_MANIFEST)


def open_manifest(data_key: bytes, blob: bytes, *, key_id: str,
                  consultation_id: str) -> Manifest:
    """Decrypt and check a sealed manifest; raises SegmentError."""
    header, raw = open_segment(data_key, blob, key_id=key_id, consultation_id=consultation_id,
                               kind=KIND_MANIFEST)
    try:
        manifest = Manifest.from_json(raw)
    except (ValueError, TypeError) as exc:
        raise SegmentError(f"unreadable manifest content ({type(exc).__name__})") from None
    if manifest.generation != header.index or manifest.consultation_id != consultation_id \
            or manifest.key_id != key_id or manifest.last_sha256() != header.prev_sha256:
        raise SegmentError("manifest content does not match its authenticated header")
    return manifest


def write_manifest(folder: Path, data_key: bytes, manifest: Manifest) -> None:
    """Bump the generation and replace the manifest atomically (raises OSError)."""
    manifest.generation += 1
    write_atomic(folder / MANIFEST_NAME, seal_manifest(data_key, manifest))


def read_manifest(folder: Path, data_key: bytes, *, key_id: str,
                  consultation_id: str) -> Manifest | None:
    """The manifest in ``folder``, None if there is none; raises SegmentError if bad."""
    try:
        blob = (folder / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        return None
    return open_manifest(data_key, blob, key_id=key_id, consultation_id=consultation_id)
