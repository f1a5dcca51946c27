"""Read a recording back for review: the manifest, then one segment at a time, decrypted
in memory and demuxed (never decoded) into the encoded frames the recorder muxed.

    reader = RecordingReader(recording_dir, consultation_id, data_key)
    manifest = reader.manifest()              # ReadError if missing or bad
    frames = reader.frames(index)             # one segment's RecordedFrames, pts order

Nothing is written: the plaintext of a segment lives only inside ``frames`` while it
demuxes. Each segment is checked like ``verify`` does (authenticated header, its index,
the sha256 the manifest lists), so a swapped or modified file is refused, not played.
"""

from __future__ import annotations

import bisect
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import av

from recorder.bitstream import avcc_nal_units, vp8_is_keyframe
from recorder.container import h264_access_unit_is_key
from recorder.datakey import data_key_id
from recorder.layout import consultation_dir
from recorder.manifest import Manifest, SegmentEntry, read_manifest
from recorder.muxer import TRACKS
from recorder.segment import SegmentError, open_segment


class ReadError(Exception):
    """The recording cannot be read (gone, deleted meanwhile, or fails a check)."""


@dataclass(slots=True)
class RecordedFrame:
    track: str  # "citizen-video", "citizen-audio", "staff-audio"
    pts: int  # ms on the recording timeline
    data: bytes  # the encoded frame as recorded (VP8 frame, Opus packet, H.264 access unit
    #              in Annex B: Matroska stores length prefixes, RTP packetisers take start
    #              codes; the NAL units are the recorded ones, unchanged)
    keyframe: bool


class RecordingReader:
    def __init__(self, recording_dir: Path, consultation_id: str, data_key: bytes) -> None:
        self.consultation_id = consultation_id
        self.folder = consultation_dir(Path(recording_dir), consultation_id)
        self._key = data_key
        self._key_id = data_key_id(data_key)
        self._manifest: Manifest | None = None

    def manifest(self) -> Manifest:
        """The sealed manifest (read once); ReadError when there is no usable recording."""
        if self._manifest is None:
            try:
                manifest = read_manifest(self.folder, self._key, key_id=self._key_id,
                                         consultation_id=self.consultation_id)
            except SegmentError as exc:
                raise ReadError(f"manifest: {exc}") from None
            except OSError as exc:
                raise ReadError(f"manifest unreadable ({exc.strerror})") from None
            if manifest is None or not manifest.segments:
                raise ReadError("no recorded segment")
            self._manifest = manifest
        return self._manifest

    def segment_at(self, ms: int) -> int:
        """Index (1-based) of the segment that holds recording time ``ms`` (clamped)."""
        segments = self.manifest().segments
        starts = [s.first_pts for s in segments]
        pos = bisect.bisect_right(starts, ms) - 1
        return segments[max(0, min(pos, len(segments) - 1))].index

    def entry(self, index: int) -> SegmentEntry:
        return self.manifest().segments[index - 1]

    def frames(self, index: int) -> list[RecordedFrame]:
        """Decrypt segment ``index`` in memory and demux it; ReadError if it fails."""
        entry = self.entry(index)
        try:
            blob = (self.folder / entry.file).read_bytes()
        except OSError as exc:
            raise ReadError(f"segment {index} unreadable ({exc.strerror})") from None
        if hashlib.sha256(blob).hexdigest() != entry.sha256:
            raise ReadError(f"segment {index} differs from the manifest")
        try:
            _, plaintext = open_segment(self._key, blob, key_id=self._key_id,
                                        consultation_id=self.consultation_id, index=index)
        except SegmentError as exc:
            raise ReadError(f"segment {index}: {exc}") from None
        del blob
        try:
            return _demux(plaintext)
        finally:
            del plaintext


def _annexb(access_unit: bytes) -> bytes:
    """An H.264 access unit with start codes (it may be stored length-prefixed)."""
    try:
        nals = list(avcc_nal_units(access_unit))
    except ValueError:
        return access_unit  # already Annex B
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


def _demux(plaintext: bytes) -> list[RecordedFrame]:
    out: list[RecordedFrame] = []
    try:
        with av.open(io.BytesIO(plaintext), "r") as container:
            names = {s.index: s.metadata.get("title", "") for s in container.streams}
            video = next((s for s in container.streams if s.type == "video"), None)
            h264 = video is not None and video.codec_context.name == "h264"
            is_key = h264_access_unit_is_key if h264 else vp8_is_keyframe
            for packet in container.demux():
                if packet.size == 0 or packet.pts is None:
                    continue
                track = names.get(packet.stream.index, "")
                if track not in TRACKS:
                    continue
                data = bytes(packet)
                tb = packet.stream.time_base
                pts = int(packet.pts * tb * 1000) if tb else int(packet.pts)
                key = track == TRACKS[0] and is_key(data)
                if h264 and track == TRACKS[0]:
                    data = _annexb(data)
                out.append(RecordedFrame(track, pts, data, key))
    except av.FFmpegError as exc:
        raise ReadError(f"container unreadable ({type(exc).__name__})") from None
    out.sort(key=lambda f: f.pts)  # stable: each track keeps its own order
    return out
