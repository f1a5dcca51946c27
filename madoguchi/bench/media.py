"""Reusable media tooling for SFU tests, recorder tests and benchmarks.

Nothing here encodes or decodes per stream at run time: a clip is encoded ONCE with
PyAV (VP8 or H.264 + Opus) and then replayed as pre-encoded packets.

- :func:`encode_clip` / :func:`load_clip`: a synthetic clip (moving gradient + texture,
  a tone), encoded once, cached on disk by parameters.
- :class:`ReplayTrack`: an aiortc track yielding the clip's ``av.Packet`` objects with
  monotonic pts and real-time pacing (aiortc's sender only packetizes them). On a
  keyframe request (PLI reaching the sender) it jumps to the clip's next keyframe, and
  it logs every frame it sent (``sent``) so a receiver can be compared byte for byte.
- :class:`FrameCollector`: on a receiving aiortc peer, takes the reassembled encoded
  frames from the receiver (aiortc's jitter buffer + depayloader, NACK and RR kept) and
  never decodes them.
- :class:`PacketCounter`: a lighter receiver for benchmarks: counts RTP packets per
  SSRC (loss from sequence numbers) and notes the first keyframe, no reassembly.
- :class:`ClientPeer`: an aiortc peer on loopback playing the citizen (publisher) or a
  staff viewer (subscriber), producing offers for ``Room.connect_*``.
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import json
import math
import os
import queue
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtpPacket

from sfu import ice
from sfu.codecs import preferences
from sfu.keyframe import detector

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_TIME_BASE = fractions.Fraction(1, 48000)
AUDIO_FRAME_SAMPLES = 960  # 20 ms at 48 kHz
# Bumped when the encoder settings change, so no cached clip of older settings is reused.
ENCODER_SETTINGS = 2
DEFAULT_CACHE = Path(os.environ.get("MADOGUCHI_CLIP_CACHE", "/tmp/madoguchi-clips"))


# --------------------------------------------------------------------------- clips
@dataclass
class EncodedFrame:
    data: bytes
    keyframe: bool


@dataclass
class Clip:
    """A pre-encoded clip: video frames at ``fps`` and 20 ms Opus frames."""

    codec: str
    width: int
    height: int
    fps: int
    video: list[EncodedFrame] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)

    @property
    def keyframe_indexes(self) -> list[int]:
        return [i for i, f in enumerate(self.video) if f.keyframe]

    def video_bitrate(self) -> float:
        seconds = len(self.video) / self.fps
        return sum(len(f.data) for f in self.video) * 8 / seconds if seconds else 0.0


def _frames(width: int, height: int, count: int, variant: int = 0) -> list[av.VideoFrame]:
    """Synthetic picture: a diagonal gradient sliding right and a textured band moving
    down (enough detail for the encoder to use its bitrate); ``variant`` changes it."""
    rng = random.Random(1234 + variant)
    span = width + height + 8 * count
    gradient = bytes((i // 2) & 0xFF for i in range(span))
    texture = rng.randbytes(width * 2 + height * 2 + 4 * count)
    chroma_u = bytes([110]) * ((width // 2) * (height // 2))
    chroma_v = bytes([150]) * ((width // 2) * (height // 2))
    band = height // 3
    out = []
    for t in range(count):
        rows = []
        band_top = (t * 3) % max(1, height - band)
        for y in range(height):
            if band_top <= y < band_top + band:
                off = (y * 7 + t * 4) % (len(texture) - width)
                rows.append(texture[off:off + width])
            else:
                off = y + 8 * t
                rows.append(gradient[off:off + width])
        frame = av.VideoFrame(width, height, "yuv420p")
        _fill(frame.planes[0], b"".join(rows), width, height)
        _fill(frame.planes[1], chroma_u, width // 2, height // 2)
        _fill(frame.planes[2], chroma_v, width // 2, height // 2)
        out.append(frame)
    return out


def _fill(plane: Any, data: bytes, width: int, height: int) -> None:
    stride = plane.line_size
    if stride != width:
        pad = b"\0" * (stride - width)
        data = b"".join(data[y * width:(y + 1) * width] + pad for y in range(height))
    plane.update(data)


def _video_encoder(codec: str, width: int, height: int, fps: int, bitrate: int,
                   gop: int) -> Any:
    if codec == "VP8":
        ctx = av.CodecContext.create("libvpx", "w")
        # "good" with a fixed cpu-used: in "realtime" libvpx picks its speed from how
        # long frames take to encode, so the clip would differ from machine to machine
        ctx.options = {"deadline": "good", "cpu-used": "5", "lag-in-frames": "0",
                       "auto-alt-ref": "0", "minrate": str(bitrate), "maxrate": str(bitrate),
                       "bufsize": str(bitrate), "undershoot-pct": "95"}
    elif codec == "H264":
        ctx = av.CodecContext.create("libx264", "w")
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "level": "31",
                       "x264-params": f"repeat-headers=1:keyint={gop}:min-keyint={gop}:"
                                      "scenecut=0:bframes=0:aud=0"}
        ctx.profile = "Baseline"
    else:
        raise ValueError(f"unknown video codec {codec}")
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.bit_rate = bitrate
    ctx.gop_size = gop
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.thread_count = 1  # one thread: the same bytes on every machine
    return ctx


def _is_key(codec: str, data: bytes) -> bool:
    if codec == "VP8":
        return len(data) > 0 and not data[0] & 0x01
    return any(n and (n[0] & 0x1F) == 5 for n in split_annexb(data))


def encode_clip(codec: str = "VP8", width: int = 640, height: int = 480, fps: int = 30,
                seconds: float = 10.0, bitrate: int = 1_000_000, gop_seconds: float = 4.0,
                audio: bool = True, variant: int = 0) -> Clip:
    """Encode a synthetic clip once (the only encoding anywhere in the tooling)."""
    count = int(seconds * fps)
    gop = max(1, int(gop_seconds * fps))
    ctx = _video_encoder(codec, width, height, fps, bitrate, gop)
    clip = Clip(codec=codec, width=width, height=height, fps=fps)
    for i, frame in enumerate(_frames(width, height, count, variant)):
        frame.pts = i
        frame.time_base = ctx.time_base
        frame.pict_type = (av.video.frame.PictureType.I if i % gop == 0
                           else av.video.frame.PictureType.NONE)
        for pkt in ctx.encode(frame):
            data = bytes(pkt)
            clip.video.append(EncodedFrame(data, _is_key(codec, data)))
    for pkt in ctx.encode(None):
        data = bytes(pkt)
        clip.video.append(EncodedFrame(data, _is_key(codec, data)))
    if audio:
        clip.audio = encode_opus(seconds)
    return clip


def encode_opus(seconds: float, bitrate: int = 32000) -> list[bytes]:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = 48000
    ctx.layout = "stereo"
    ctx.format = "s16"
    ctx.bit_rate = bitrate
    out: list[bytes] = []
    total = int(seconds * 48000) // AUDIO_FRAME_SAMPLES
    for n in range(total):
        samples = bytearray()
        for i in range(AUDIO_FRAME_SAMPLES):
            t = (n * AUDIO_FRAME_SAMPLES + i) / 48000.0
            v = int(8000 * math.sin(2 * math.pi * 440 * t) * (0.6 + 0.4 * math.sin(t * 3)))
            samples += struct.pack("<hh", v, v)
        frame = av.AudioFrame(format="s16", layout="stereo", samples=AUDIO_FRAME_SAMPLES)
        frame.planes[0].update(bytes(samples))
        frame.sample_rate = 48000
        frame.pts = n * AUDIO_FRAME_SAMPLES
        frame.time_base = AUDIO_TIME_BASE
        out.extend(bytes(p) for p in ctx.encode(frame))
    out.extend(bytes(p) for p in ctx.encode(None))
    return out


def load_clip(cache_dir: Path | None = None, **params: Any) -> Clip:
    """:func:`encode_clip` with an on-disk cache keyed by the parameters."""
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    versioned = {**params, "encoder": ENCODER_SETTINGS}
    key = hashlib.sha256(json.dumps(versioned, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / f"clip-{key}.bin"
    if path.exists():
        try:
            return _read_clip(path.read_bytes())
        except (ValueError, struct.error, KeyError):
            pass
    clip = encode_clip(**params)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(_write_clip(clip))
    tmp.replace(path)
    return clip


def _write_clip(clip: Clip) -> bytes:
    head = json.dumps({"codec": clip.codec, "width": clip.width, "height": clip.height,
                       "fps": clip.fps, "video": len(clip.video),
                       "audio": len(clip.audio)}).encode()
    parts = [b"MDCLIP1\n", struct.pack("!I", len(head)), head]
    for f in clip.video:
        parts += [struct.pack("!IB", len(f.data), int(f.keyframe)), f.data]
    for a in clip.audio:
        parts += [struct.pack("!I", len(a)), a]
    return b"".join(parts)


def _read_clip(raw: bytes) -> Clip:
    if not raw.startswith(b"MDCLIP1\n"):
        raise ValueError("not a clip file")
    pos = 8
    (n,) = struct.unpack_from("!I", raw, pos)
    pos += 4
    head = json.loads(raw[pos:pos + n])
    pos += n
    clip = Clip(head["codec"], head["width"], head["height"], head["fps"])
    for _ in range(head["video"]):
        size, key = struct.unpack_from("!IB", raw, pos)
        pos += 5
        clip.video.append(EncodedFrame(raw[pos:pos + size], bool(key)))
        pos += size
    for _ in range(head["audio"]):
        (size,) = struct.unpack_from("!I", raw, pos)
        pos += 4
        clip.audio.append(raw[pos:pos + size])
        pos += size
    if pos != len(raw):
        raise ValueError("trailing bytes in clip file")
    return clip


def split_annexb(data: bytes) -> list[bytes]:
    """H.264 Annex B byte stream -> NAL units (without start codes)."""
    nals = []
    i, n = 0, len(data)
    starts = []
    while i < n - 2:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            starts.append(i + 3)
            i += 3
        else:
            i += 1
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else n
        nal = data[s:end]
        while nal.endswith(b"\0") and k + 1 < len(starts):
            nal = nal[:-1]  # the zero of a 4-byte start code belongs to the next one
        nals.append(nal)
    return nals


# ------------------------------------------------------------------------- replay
class ReplayTrack(MediaStreamTrack):
    """Replays a clip's pre-encoded packets in real time (monotonic pts, looping).

    ``request_keyframe()`` (wired to the sender's PLI handling by
    :meth:`ClientPeer.publish`) makes the next frame the clip's next keyframe.
    ``sent`` keeps (rtp_timestamp, bytes) of every frame sent when ``keep_sent``;
    ``loop_from`` is where the replay continues after the clip's last frame.
    """

    def __init__(self, clip: Clip, kind: str, keep_sent: bool = False,
                 start_index: int = 0, loop_from: int = 0) -> None:
        super().__init__()
        self.kind = kind
        self.clip = clip
        self.keep_sent = keep_sent
        self.sent: list[tuple[int, bytes]] = []
        self.keyframe_requests = 0
        self.keyframes_sent = 0
        self._frames: list[bytes] = ([f.data for f in clip.video] if kind == "video"
                                     else list(clip.audio))
        self._keys = [f.keyframe for f in clip.video] if kind == "video" else []
        self._step = (90000 // clip.fps) if kind == "video" else AUDIO_FRAME_SAMPLES
        self._interval = (1.0 / clip.fps) if kind == "video" else AUDIO_FRAME_SAMPLES / 48000
        self._time_base = VIDEO_TIME_BASE if kind == "video" else AUDIO_TIME_BASE
        self._index = start_index % len(self._frames)
        # where the replay continues after the clip's end (1: past the opening keyframe,
        # so that every later keyframe is one that was asked for)
        self._loop_from = loop_from % len(self._frames)
        self._n = 0
        self._t0: float | None = None
        self._want_key = False
        self.paused = False

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._want_key = True

    def _next_index(self) -> int:
        i = self._index
        if self._want_key and self._keys:
            self._want_key = False
            n = len(self._frames)
            for k in range(n):
                if self._keys[(i + k) % n]:
                    i = (i + k) % n
                    break
        self._index = i + 1 if i + 1 < len(self._frames) else self._loop_from
        return i

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self._t0 is None:
            self._t0 = time.monotonic()
        target = self._t0 + self._n * self._interval
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        while self.paused:
            await asyncio.sleep(self._interval)
            self._n += 1
        i = self._next_index()
        data = self._frames[i]
        if self._keys and self._keys[i]:
            self.keyframes_sent += 1
        pts = self._n * self._step
        self._n += 1
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = self._time_base
        if self.keep_sent:
            self.sent.append((pts, data))
        return packet


# ----------------------------------------------------------------------- receiving
@dataclass
class ReceivedFrame:
    timestamp: int
    data: bytes
    keyframe: bool
    at: float


class _CaptureQueue:
    """Stands in for aiortc's decoder queue: frames go to us, the decoder thread idles."""

    def __init__(self, on_frame: Callable[[Any, Any], None]) -> None:
        self._on_frame = on_frame
        self._inner: queue.Queue[Any] = queue.Queue()

    def put(self, item: Any) -> None:
        if item is None:
            self._inner.put(None)  # lets the idle decoder thread exit
        else:
            codec, frame = item
            self._on_frame(codec, frame)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.get(*args, **kwargs)


class FrameCollector:
    """Encoded frames as an aiortc receiver reassembled them (no decoding).

    Must be attached in the peer connection's "track" handler (before aiortc starts the
    receiver); aiortc's jitter buffer, NACK generator and receiver reports stay active.
    """

    DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"

    def __init__(self, kind: str, codec: str) -> None:
        self.kind = kind
        self.codec = codec
        self.frames: list[ReceivedFrame] = []
        self.first_frame_at: float | None = None
        self._event = asyncio.Event()

    def attach(self, receiver: RTCRtpReceiver) -> None:
        if not hasattr(receiver, self.DECODER_QUEUE):
            raise RuntimeError("aiortc's receiver has no decoder queue hook (version?)")
        setattr(receiver, self.DECODER_QUEUE, _CaptureQueue(self._on_frame))

    def _on_frame(self, codec: Any, frame: Any) -> None:
        data = bytes(frame.data)
        if self.kind == "video":
            key = _is_key(self.codec, data)
        else:
            key = False
        now = time.monotonic()
        if self.first_frame_at is None:
            self.first_frame_at = now
        self.frames.append(ReceivedFrame(int(frame.timestamp), data, key, now))
        self._event.set()

    async def wait_frames(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.kind}: {len(self.frames)} of {count} frames")
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), left)
            except TimeoutError:
                pass


class PacketCounter:
    """Benchmark receiver: counts packets (unique sequence numbers) per SSRC and times
    the first complete keyframe; replaces the receiver's RTP handling entirely. Like a
    browser it sends an RTCP receiver report about once a second."""

    RR_INTERVAL = 1.0

    def __init__(self, kind: str, codec: str) -> None:
        self.kind = kind
        self.is_key = detector(codec)
        self.first_keyframe_at: float | None = None
        self._in_key = False
        self.ssrcs: dict[int, _SeqTracker] = {}
        self.counting = False
        self.packets = 0
        self._receiver: RTCRtpReceiver | None = None
        self._rr_ssrc = random.getrandbits(32)
        self._next_rr = 0.0
        self._highest: dict[int, int] = {}

    def attach(self, receiver: RTCRtpReceiver) -> None:
        self._receiver = receiver
        receiver._handle_rtp_packet = self._on_rtp  # type: ignore[method-assign]

    async def _on_rtp(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.packets += 1
        self._highest[packet.ssrc] = packet.sequence_number
        now = time.monotonic()
        if now >= self._next_rr and self._receiver is not None:
            self._next_rr = now + self.RR_INTERVAL
            reports = [RtcpReceiverInfo(ssrc=ssrc, fraction_lost=0, packets_lost=0,
                                        highest_sequence=seq, jitter=0, lsr=0, dlsr=0)
                       for ssrc, seq in self._highest.items()]
            await self._receiver._send_rtcp(RtcpRrPacket(ssrc=self._rr_ssrc, reports=reports))
        if self.kind == "video" and self.first_keyframe_at is None:
            if self.is_key(packet.payload):
                self._in_key = True
            if self._in_key and packet.marker:
                self.first_keyframe_at = time.monotonic()
        if self.counting:
            tracker = self.ssrcs.get(packet.ssrc)
            if tracker is None:
                tracker = self.ssrcs[packet.ssrc] = _SeqTracker()
            tracker.add(packet.sequence_number)

    def expected_received(self) -> tuple[int, int]:
        exp = rec = 0
        for t in self.ssrcs.values():
            e, r = t.totals()
            exp += e
            rec += r
        return exp, rec


class _SeqTracker:
    def __init__(self) -> None:
        self.first: int | None = None
        self.max_ext = 0
        self.seen: set[int] = set()

    def add(self, seq: int) -> None:
        if self.first is None:
            self.first = self.max_ext = seq
        delta = (seq - self.max_ext) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        ext = self.max_ext + delta
        if ext > self.max_ext:
            self.max_ext = ext
        if ext >= self.first:
            self.seen.add(ext)

    def totals(self) -> tuple[int, int]:
        if self.first is None:
            return 0, 0
        return self.max_ext - self.first + 1, len(self.seen)


# ------------------------------------------------------------------------ clients
class ClientPeer:
    """An aiortc peer on loopback (citizen or staff viewer), for tests and benchmarks."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.pc = RTCPeerConnection(ice.rtc_configuration([]))
        self.video: ReplayTrack | None = None
        self.audio: ReplayTrack | None = None
        self.channel: RTCDataChannel | None = None
        self.messages: list[str] = []
        self.collectors: dict[str, Any] = {}
        self.senders: dict[str, RTCRtpSender] = {}
        self.connected = asyncio.Event()
        self.pc.on("connectionstatechange", self._state)
        self.pc.on("track", self._on_track)
        self._receive_mode: dict[str, Callable[[], Any]] = {}

    def _state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        make = self._receive_mode.get(track.kind)
        for t in self.pc.getTransceivers():
            if t.receiver.track is track and make is not None:
                collector = make()
                collector.attach(t.receiver)
                self.collectors[track.kind] = collector

    def publish(self, kind: str, track: ReplayTrack, direction: str = "sendrecv",
                codec: str = "VP8") -> RTCRtpSender:
        """Send a replayed track; PLI reaching this sender asks the track for a keyframe."""
        t = self.pc.addTransceiver(track, direction=direction)
        t.setCodecPreferences(preferences(kind, codec, rtx=(kind == "video")))
        t.sender._send_keyframe = track.request_keyframe  # type: ignore[method-assign]
        if kind == "video":
            self.video = track
        else:
            self.audio = track
        self.senders[kind] = t.sender
        return t.sender

    def receive(self, kind: str, codec: str = "VP8", mode: str = "frames",
                direction: str = "recvonly") -> None:
        """Receive ``kind``: mode "frames" (FrameCollector) or "packets" (PacketCounter)."""
        if direction in ("recvonly",):
            t = self.pc.addTransceiver(kind, direction=direction)
            t.setCodecPreferences(preferences(kind, codec, rtx=False))
        if mode == "frames":
            self._receive_mode[kind] = lambda: FrameCollector(kind, codec)
        else:
            self._receive_mode[kind] = lambda: PacketCounter(kind, codec)

    def open_channel(self, label: str = "madoguchi") -> RTCDataChannel:
        self.channel = self.pc.createDataChannel(label)
        self.channel.on("message", self.messages.append)
        return self.channel

    async def offer(self, rcvbuf: int = 4 * 1024 * 1024) -> str:
        with ice.host_addresses([self.host]):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        for t in self.pc.getTransceivers():
            ice.tune_sockets(ice.ice_connection(t.receiver.transport), rcvbuf)
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def close(self) -> None:
        await self.pc.close()


def citizen_client(clip: Clip, *, keep_sent: bool = False, audio_receive: str = "frames",
                   datachannel: bool = True, start_index: int = 0,
                   loop_from: int = 0) -> ClientPeer:
    """A citizen: video sendonly + audio sendrecv (hears staff) + the data channel."""
    peer = ClientPeer()
    peer.publish("video", ReplayTrack(clip, "video", keep_sent, start_index, loop_from),
                 direction="sendonly", codec=clip.codec)
    peer.publish("audio", ReplayTrack(clip, "audio", keep_sent), direction="sendrecv",
                 codec=clip.codec)
    peer.receive("audio", codec=clip.codec, mode=audio_receive, direction="sendrecv")
    if datachannel:
        peer.open_channel()
    return peer


def staff_client(codec: str = "VP8", *, mode: str = "frames", talk: Clip | None = None,
                 keep_sent: bool = False) -> ClientPeer:
    """A staff viewer: video recvonly + audio sendrecv (talks when ``talk`` is given)."""
    peer = ClientPeer()
    peer.receive("video", codec=codec, mode=mode, direction="recvonly")
    if talk is not None:
        peer.publish("audio", ReplayTrack(talk, "audio", keep_sent), direction="sendrecv",
                     codec=codec)
        peer.receive("audio", codec=codec, mode=mode, direction="sendrecv")
    else:
        peer.receive("audio", codec=codec, mode=mode, direction="recvonly")
    return peer
