"""Check a consultation's recording without writing any plaintext.

Every segment is decrypted in memory, its authenticated header checked against its place
in the chain (consultation id, index, key id, hash of the previous segment) and against the
manifest (size, sha256), and its container demuxed (not decoded): it must start on a video
keyframe and its timestamps must continue the previous segment's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.container import GAP_MS, ContainerError, ContainerInfo, inspect_container
from recorder.datakey import KeyEncryptionKey, KeyError_, data_key_id, unwrap
from recorder.layout import TEMP_SUFFIX, LayoutError, consultation_dir, segment_files, segment_name
from recorder.manifest import STATE_CLOSED, STATE_FAILED, Manifest, read_manifest
from recorder.segment import ZERO_HASH, SegmentError, open_segment


class VerifyError(Exception):
    """Verification cannot even start (no data key, wrong KEK); the message says why."""


@dataclass
class VerifyReport:
    consultation_id: str
    segments: int = 0  # segments that verified
    listed: int = 0  # segments the manifest lists
    duration: float = 0.0  # seconds, of the segments that verified
    state: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # (at s, length s) from the recording's start: no video for longer than GAP_MS
    # (the phone lost its path or reconnected); the recording went on after it.
    gaps: list[tuple[float, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"consultation {self.consultation_id}: {self.segments} segment(s) verified, "
               f"{self.listed} listed, total duration {self.duration:.1f} s"
               + (f", recording {self.state}" if self.state else "")]
        out += [f"gap of {length:.1f} s without video at {at:.1f} s" for at, length in self.gaps]
        out += [f"note: {n}" for n in self.notes]
        out += [f"problem: {p}" for p in self.problems]
        out.append("OK" if self.ok else f"FAILED: {len(self.problems)} problem(s)")
        return out


def load_data_key(kek: KeyEncryptionKey, record: Any, consultation_id: str) -> bytes:
    """Unwrap a stored ``DataKey`` record; VerifyError with a precise reason otherwise."""
    if record is None:
        raise VerifyError("no data key is stored for this consultation (deleted by retention, "
                          "or never recorded): its segments can no longer be decrypted")
    if record.key_id != kek.key_id:
        raise VerifyError(f"the data key is wrapped under key-encryption key {record.key_id}, "
                          f"but the configured key-encryption key is {kek.key_id} (wrong KEK, "
                          "or re-wrap with `madoguchi keys rotate`)")
    try:
        return unwrap(kek, consultation_id, record.wrapped)
    except (KeyError_, ValueError):
        raise VerifyError("the data key does not unwrap with the configured key-encryption key "
                          "(wrong KEK or a modified key record)") from None


def verify_recording(recording_dir: Path, consultation_id: str, data_key: bytes) -> VerifyReport:
    report = VerifyReport(consultation_id)
    try:
        folder = consultation_dir(Path(recording_dir), consultation_id)
    except LayoutError as exc:
        report.problems.append(str(exc))
        return report
    if not folder.is_dir():
        report.problems.append("no recording folder for this consultation")
        return report
    key_id = data_key_id(data_key)
    manifest: Manifest | None = None
    try:
        manifest = read_manifest(folder, data_key, key_id=key_id,
                                 consultation_id=consultation_id)
        if manifest is None:
            report.problems.append("manifest.seg is missing")
    except SegmentError as exc:
        report.problems.append(f"manifest.seg: {exc}")
    except OSError as exc:
        report.problems.append(f"manifest.seg: unreadable ({exc.strerror})")
    listed = manifest.segments if manifest is not None else []
    report.listed = len(listed)
    if manifest is not None:
        report.state = manifest.state
        if [s.index for s in listed] != list(range(1, len(listed) + 1)):
            report.problems.append("manifest.seg: segments are not numbered 1..n")
        if manifest.state == STATE_FAILED:
            report.notes.append("the recording failed during the call; the segments written "
                                "before the failure are kept")
        elif manifest.state != STATE_CLOSED:
            report.notes.append("the recording did not close cleanly (interrupted); at most the "
                                "segment in progress was lost")
    for leftover in sorted(folder.iterdir()):
        if leftover.name.endswith(TEMP_SUFFIX):
            report.notes.append(f"{leftover.name}: leftover of an interrupted write "
                                "(ciphertext; ignored)")
    files = segment_files(folder)
    last = max([len(listed), *files.keys()])
    prev_hash: bytes | None = ZERO_HASH
    prev_last: dict[int, int] = {}
    video: tuple[int | None, int | None] = (None, None)  # (first, last) video ms so far
    for index in range(1, last + 1):
        entry = listed[index - 1] if index <= len(listed) else None
        name = segment_name(index)
        path = files.get(index)
        if path is None:
            report.problems.append(f"{name}: missing" + (
                " (listed in the manifest: deleted or the recording was truncated)"
                if entry is not None else " (gap in the segment numbering)"))
            prev_hash = bytes.fromhex(entry.sha256) if entry is not None else None
            continue
        try:
            blob = path.read_bytes()
        except OSError as exc:
            report.problems.append(f"{name}: unreadable ({exc.strerror})")
            prev_hash = None
            continue
        digest = hashlib.sha256(blob).digest()
        # the next segment must follow the one the manifest lists here (else this file)
        follows = bytes.fromhex(entry.sha256) if entry is not None else digest
        problems_before = len(report.problems)
        if entry is not None and entry.sha256 != digest.hex():
            report.problems.append(f"{name}: sha256 differs from the manifest ({len(blob)} "
                                   f"bytes, manifest says {entry.size}): file modified, "
                                   "truncated or replaced")
        try:
            _, plaintext = open_segment(data_key, blob, key_id=key_id,
                                        consultation_id=consultation_id, index=index,
                                        prev_sha256=prev_hash)
        except SegmentError as exc:
            report.problems.append(f"{name}: {exc}")
            prev_hash = follows
            continue
        prev_hash = follows
        try:
            info = inspect_container(plaintext)
        except ContainerError as exc:
            report.problems.append(f"{name}: {exc}")
            continue
        finally:
            del plaintext
        report.problems += [f"{name}: {p}" for p in info.problems]
        for stream, first in sorted(info.first_by_stream.items()):
            before = prev_last.get(stream)
            if before is not None and first <= before:
                report.problems.append(
                    f"{name}: track {stream} starts at {first} ms, not after the end of the "
                    f"previous segment ({before} ms)")
        prev_last.update(info.last_by_stream)
        video = _note_gaps(report, info, video)
        if entry is not None and entry.video_frames != info.video_frames:
            report.problems.append(f"{name}: holds {info.video_frames} video frames, the "
                                   f"manifest says {entry.video_frames}")
        if entry is None:
            if index == last and index == len(listed) + 1 and manifest is not None \
                    and manifest.state != STATE_CLOSED:
                report.notes.append(f"{name}: complete and valid, written just before the "
                                    "interruption and not yet listed in the manifest")
            else:
                report.problems.append(f"{name}: not listed in the manifest")
        if len(report.problems) == problems_before:
            report.segments += 1
            report.duration += info.duration
    return report


def _note_gaps(report: VerifyReport, info: ContainerInfo,
               video: tuple[int | None, int | None]) -> tuple[int | None, int | None]:
    """Add the segment's video gaps (and one across the previous segment's end)."""
    first, last = video
    if info.first_video_pts is None:
        return video
    origin = first if first is not None else info.first_video_pts
    gaps = list(info.video_gaps)
    if last is not None and info.first_video_pts - last > GAP_MS:
        gaps.insert(0, (last, info.first_video_pts - last))
    report.gaps += [((at - origin) / 1000, length / 1000) for at, length in gaps]
    return origin, info.last_video_pts


async def verify_consultation(store: Any, kek: KeyEncryptionKey, recording_dir: Path,
                              consultation_id: str) -> VerifyReport:
    """Load the data key from the store, unwrap it and verify (VerifyError if it cannot)."""
    record = await store.get_data_key(consultation_id)
    data_key = load_data_key(kek, record, consultation_id)
    return verify_recording(recording_dir, consultation_id, data_key)
