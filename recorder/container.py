"""Read back a decrypted segment (in memory) without decoding: demux with PyAV and check
that it starts on a video keyframe and that timestamps only move forward."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av

from recorder.bitstream import (
    annexb_nal_units,
    avcc_nal_units,
    opus_duration_samples,
    vp8_is_keyframe,
)


class ContainerError(Exception):
    """The decrypted bytes are not a readable recording container."""


GAP_MS = 1000  # video frames further apart than this: a gap (network loss)

@dataclass
class ContainerInfo:
    format: str = ""
    video_codec: str = ""
    tracks: list[str] = field(default_factory=list)
    video_frames: int = 0
    audio_packets: int = 0
    first_pts: int | None = None  # ms
    last_pts: int | None = None  # ms
    end_pts: int | None = None  # ms, last packet + its duration
    first_by_stream: dict[int, int] = field(default_factory=dict)
    last_by_stream: dict[int, int] = field(default_factory=dict)
    starts_with_keyframe: bool = False
    problems: list[str] = field(default_factory=list)
    first_video_pts: int | None = None  # ms
    last_video_pts: int | None = None  # ms
    # (at ms, length ms): video frames further apart than GAP_MS (the path was lost)
    video_gaps: list[tuple[int, int]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        if self.first_pts is None or self.end_pts is None:
            return 0.0
        return (self.end_pts - self.first_pts) / 1000


def h264_access_unit_is_key(data: bytes) -> bool:
    try:
        nals = list(avcc_nal_units(data))
    except ValueError:
        nals = list(annexb_nal_units(data))
    return any(n and n[0] & 0x1F == 5 for n in nals)


def inspect_container(plaintext: bytes) -> ContainerInfo:
    """Demux every packet; raises ContainerError if the container cannot be read."""
    info = ContainerInfo()
    try:
        with av.open(io.BytesIO(plaintext), "r") as container:
            info.format = container.format.name
            streams = list(container.streams)
            video = next((s for s in streams if s.type == "video"), None)
            info.tracks = [s.metadata.get("title", s.type) for s in streams]
            if video is None:
                info.problems.append("no video track")
                return info
            info.video_codec = video.codec_context.name
            first_video = True
            prev_video: int | None = None
            interval = 0
            for packet in container.demux():
                if packet.size == 0 or packet.pts is None:
                    continue
                idx = packet.stream.index
                tb = packet.stream.time_base
                pts = int(packet.pts * tb * 1000) if tb else int(packet.pts)
                last = info.last_by_stream.get(idx)
                if last is not None and pts <= last:
                    info.problems.append(f"timestamps go backwards in track {idx} "
                                         f"({last} ms then {pts} ms)")
                info.last_by_stream[idx] = pts
                info.first_by_stream.setdefault(idx, pts)
                data = bytes(packet)
                if packet.stream is video:
                    if first_video:
                        key = vp8_is_keyframe(data) if info.video_codec == "vp8" \
                            else h264_access_unit_is_key(data)
                        info.starts_with_keyframe = key
                        first_video = False
                    if prev_video is not None:
                        step = pts - prev_video
                        if step > GAP_MS:
                            info.video_gaps.append((prev_video, step))
                        else:
                            interval = step
                    else:
                        info.first_video_pts = pts
                    prev_video = info.last_video_pts = pts
                    info.video_frames += 1
                    end = pts + max(interval, 1)
                else:
                    info.audio_packets += 1
                    end = pts + opus_duration_samples(data) * 1000 // 48000
                info.first_pts = pts if info.first_pts is None else min(info.first_pts, pts)
                info.last_pts = pts if info.last_pts is None else max(info.last_pts, pts)
                info.end_pts = end if info.end_pts is None else max(info.end_pts, end)
    except av.FFmpegError as exc:
        raise ContainerError(f"container unreadable ({type(exc).__name__})") from None
    if info.video_frames == 0:
        info.problems.append("no video frames")
    elif not info.starts_with_keyframe:
        info.problems.append("does not start with a video keyframe")
    return info
