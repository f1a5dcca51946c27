"""One segment's container, muxed with PyAV into memory without decoding anything.

Streams (always all three, so every segment has the same layout):
    0 citizen-video (VP8 in WebM, H.264 in Matroska), 1 citizen-audio, 2 staff-audio (Opus)
Time base 1/1000 (milliseconds on the recording timeline).
"""

from __future__ import annotations

import io
import struct
import threading
from fractions import Fraction

import av
from av.packet import Packet

TIME_BASE = Fraction(1, 1000)
TRACKS = ("citizen-video", "citizen-audio", "staff-audio")
VIDEO, CITIZEN_AUDIO, STAFF_AUDIO = 0, 1, 2
CONTAINERS = {"VP8": "webm", "H264": "matroska"}
_MUX_CODEC = {"VP8": "vp8", "H264": "h264"}
# Clusters of at most ~64 KiB: the muxer writes each out as it fills instead of growing one
# buffer to the whole segment and copying it at the end (~0.5 ms less CPU per segment).
MUX_OPTIONS = {"cluster_size_limit": "65536"}
# RTP Opus: 48 kHz, declared stereo, no pre-skip (RFC 7587).
OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 0, 48000, 0, 0)

_template_lock = threading.Lock()
_opus_template: av.audio.stream.AudioStream | None = None
_template_container: av.container.OutputContainer | None = None


def _opus_stream_template() -> av.audio.stream.AudioStream:
    """A never-opened Opus stream whose parameters new streams copy (no encoder is run)."""
    global _opus_template, _template_container
    with _template_lock:
        if _opus_template is None:
            _template_container = av.open(io.BytesIO(), "w", format="webm")
            _opus_template = _template_container.add_stream("libopus", rate=48000,
                                                            layout="stereo")
        return _opus_template


def container_for(video_codec: str) -> str:
    try:
        return CONTAINERS[video_codec.upper()]
    except KeyError:
        raise ValueError(f"no recording container for video codec {video_codec}") from None


class SegmentMuxer:
    """Mux encoded packets of the three tracks into one in-memory container file."""

    def __init__(self, video_codec: str, width: int, height: int) -> None:
        codec = video_codec.upper()
        self.format = container_for(codec)
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, "w", format=self.format, options=MUX_OPTIONS)
        video = self._out.add_mux_stream(_MUX_CODEC[codec], width=width, height=height)
        streams: list[av.stream.Stream] = [video]
        template = _opus_stream_template()
        for _ in TRACKS[1:]:
            audio = self._out.add_stream_from_template(template, opaque=True)
            audio.codec_context.extradata = OPUS_HEAD
            streams.append(audio)
        for name, stream in zip(TRACKS, streams, strict=True):
            stream.time_base = TIME_BASE
            stream.metadata["title"] = name
        self._streams = streams
        self._mux_one = self._out.mux_one
        self.size = (width, height)
        self.packets = [0, 0, 0]

    def add(self, stream: int, pts: int, data: bytes, keyframe: bool, duration: int = 0) -> None:
        # The packet's time base is left unset: muxing gives it the stream's (1/1000).
        packet = Packet(data)
        packet.stream = self._streams[stream]
        packet.pts = pts
        packet.dts = pts
        if duration:
            packet.duration = duration
        packet.is_keyframe = keyframe
        self._mux_one(packet)
        self.packets[stream] += 1

    def finish(self) -> bytes:
        """Write the trailer and return the complete file (plaintext: seal it at once)."""
        self._out.close()
        data = self._buf.getvalue()
        self._buf.close()
        return data

    def abort(self) -> None:
        try:
            self._out.close()
        except Exception:  # noqa: BLE001 - discarding anyway
            pass
        self._buf.close()
