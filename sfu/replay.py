"""Replay: a recording's encoded frames to one staff reviewer, through the live path.

A :class:`Replay` is a one-viewer room whose source is not a phone but the review session:
each recorded frame is cut into RTP payloads by aiortc's own packetisers (VP8, H.264;
an Opus frame is one payload) without decoding anything, and handed to a
:class:`RoomTrack` exactly as a publisher's packet would be. From there it is the live
forwarding path: the track's canonical numbering, the viewer's :class:`DownTrack` (SSRC/
seq/timestamp rewriting, NACK history, SR for lip sync). No packet sink is attached: a
replay is never recorded again.

RTP timestamps follow the wall clock of the moment each frame is sent (the session paces
frames in real time), so pause and seek need no renumbering: the stream just goes on,
and every track shares one NTP/RTP mapping (audio and video stay in sync).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket

from madoguchi.logs import event
from madoguchi.metrics import ACTIVE_PEERS, SFU_ERRORS

from . import sdp as sdp_check
from .candidates import SectionBudget
from .codecs import normalize, preferences
from .interfaces import SfuError
from .peer import Peer, PeerSettings
from .rtcpstats import ntp64, unix_from_ntp64
from .subscriber import DownTrack
from .track import RoomTrack

log = logging.getLogger(__name__)

VIDEO_RATE = 90000
AUDIO_RATE = 48000
# The reviewer hears both sides: the first audio section gets the citizen, a second one
# (optional) the staff side of the call.
AUDIO_TRACKS = ("citizen-audio", "staff-audio")
_VIDEO_TB = Fraction(1, VIDEO_RATE)


class _WallClock:
    """The replay's NTP clock is the server's own wall clock."""

    @staticmethod
    def to_local(ntp: int) -> float:
        return unix_from_ntp64(ntp)


class _NoRequester:
    def keyframe_received(self) -> None:
        pass


class ReplayStream:
    """Stands where a :class:`PublisherStream` stands for a room track: the session's
    frames. Keyframe requests go to the session (``on_keyframe_request``); NACKs the
    viewer's history cannot answer are not retried (the frame is past)."""

    def __init__(self, kind: str, label: str, payload_type: int, origin: float,
                 on_keyframe_request: Callable[[str], None]) -> None:
        self.kind = kind
        self.label = label
        self.media_pt = payload_type
        self.epoch = 0
        self.clock = _WallClock()
        self.sr: tuple[int, int] | None = (ntp64(origin), 0)  # RTP 0 at the origin
        self.on_sender_report: Callable[[Any], None] | None = None
        self.keyframes = _NoRequester()
        self._on_keyframe_request = on_keyframe_request
        self.next_ext = 1 << 16

    def request_keyframe(self, reason: str) -> None:
        if self.kind == "video":
            self._on_keyframe_request(reason)

    def nack(self, seqs: list[int]) -> None:
        pass


class Replay:
    """One reviewer's peer and its tracks. ``send`` packetises and forwards one frame."""

    def __init__(self, review_id: str, consultation: str, settings: PeerSettings,
                 video_codec: str, on_state: Callable[[str], None],
                 on_keyframe_request: Callable[[str], None]) -> None:
        self.id = review_id
        self.consultation = consultation
        self.settings = settings
        self.video_codec = normalize(video_codec)
        self.origin = time.time()  # RTP time 0 (wall clock, for the SR mapping)
        self.origin_mono = time.monotonic()  # the same instant on the pacing clock
        self._on_state = on_state
        self._on_keyframe_request = on_keyframe_request
        self.peer: Peer | None = None
        self.tracks: dict[str, RoomTrack] = {}
        self.streams: dict[str, ReplayStream] = {}
        self.legs: dict[str, DownTrack] = {}
        self.first_frame_at: float | None = None  # monotonic, first keyframe to the viewer
        self.sent_frames = 0
        self._packer: Any = Vp8Encoder() if self.video_codec == "VP8" else H264Encoder()
        self.closed = False

    # negotiation ---------------------------------------------------------------
    async def connect(self, offer_sdp: str) -> str:
        """Answer the reviewer's offer (video recvonly, one or two audio recvonly)."""
        if self.closed or self.peer is not None:
            raise SfuError("the review is closed")
        desc = self._check_offer(offer_sdp)
        kinds = sdp_check.summarize(sdp_check.parse_offer(desc)).kinds()
        peer = Peer("review", self.id, self.settings, self.consultation, self._peer_state)
        names = ["citizen-video"] + list(AUDIO_TRACKS[:kinds.count("audio")])
        order = sorted(names, key=lambda n: 0 if n.endswith("video") else 1)
        for name in order:
            kind = "video" if name.endswith("video") else "audio"
            t = peer.add_transceiver(kind, "sendonly", preferences(kind, self.video_codec,
                                                                   rtx=False))
            track = RoomTrack(name, kind, self.video_codec if kind == "video" else "opus",
                              self.consultation, [])
            track.on_first_frame = self._first_frame
            leg = DownTrack(kind=kind, sender=t.sender, track=track,
                            consultation=self.consultation, viewer=self.id)
            peer.add_downtrack(leg, t)
            self.tracks[name] = track
            self.legs[name] = leg
        answer = await peer.negotiate(desc)
        if self.closed:
            await peer.close()
            raise SfuError("the review is closed")
        self.peer = peer
        for name, track in self.tracks.items():
            leg = self.legs[name]
            stream = ReplayStream(track.kind, name, leg.payload_type or 0, self.origin,
                                  self._on_keyframe_request)
            self.streams[name] = stream
            track.set_source(stream)  # type: ignore[arg-type]
            track.add_leg(leg)
        peer.counted = True
        ACTIVE_PEERS.labels(role="review").inc()
        return answer

    def _check_offer(self, offer_sdp: str) -> str:
        try:
            text = sdp_check.sanitize_offer(
                offer_sdp, SectionBudget(self.settings.candidate_policy))
            desc = sdp_check.parse_offer(text)
            kinds = sdp_check.summarize(desc).kinds()
            if kinds.count("video") != 1 or kinds.count("audio") > len(AUDIO_TRACKS):
                raise SfuError("a review offer has one video and at most two audio sections")
            sdp_check.check_ice(desc)
            sdp_check.check_codecs(desc, self.video_codec)
        except SfuError as exc:
            SFU_ERRORS.labels(reason="offer").inc()
            event(log, "sfu_offer_refused", level=logging.INFO, consultation=self.consultation,
                  role="review", error=str(exc))
            raise
        return text

    @property
    def ready(self) -> bool:
        """The viewer's video leg is up (DTLS done): frames can go out."""
        leg = self.legs.get("citizen-video")
        return leg is not None and leg.ready and self.peer is not None

    def timed_out(self, now: float) -> bool:
        return self.peer is not None and self.peer.timed_out(now)

    # sending -------------------------------------------------------------------
    async def send(self, track_name: str, data: bytes, at: float) -> None:
        """Forward one recorded frame; ``at`` is its presentation instant on the monotonic
        clock (the session paces frames; RTP time follows ``at``)."""
        track = self.tracks.get(track_name)
        stream = self.streams.get(track_name)
        if track is None or stream is None or self.closed or not data:
            return
        offset = at - self.origin_mono
        if track.video:
            ts = int(offset * VIDEO_RATE) & 0xFFFFFFFF
            packet = av.Packet(data)
            packet.pts = ts
            packet.time_base = _VIDEO_TB
            payloads, _ = self._packer.pack(packet)
        else:
            ts = int(offset * AUDIO_RATE) & 0xFFFFFFFF
            payloads = [data]
        last = len(payloads) - 1
        arrival = time.monotonic()
        for i, payload in enumerate(payloads):
            ext = stream.next_ext
            stream.next_ext = ext + 1
            rtp = RtpPacket(payload_type=stream.media_pt, marker=int(track.video and i == last),
                            sequence_number=ext & 0xFFFF, timestamp=ts, payload=payload)
            await track.forward(stream, rtp, ext, True, arrival)  # type: ignore[arg-type]
        self.sent_frames += 1

    # events --------------------------------------------------------------------
    def _first_frame(self, leg: DownTrack, seconds: float) -> None:
        if leg.kind == "video" and self.first_frame_at is None:
            self.first_frame_at = time.monotonic()

    def _peer_state(self, peer: Peer, state: str) -> None:
        if not peer.closed:
            self._on_state(state)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for track in self.tracks.values():
            track.set_source(None)
            track.legs = ()
        peer, self.peer = self.peer, None
        if peer is not None:
            if peer.counted:
                peer.counted = False
                ACTIVE_PEERS.labels(role="review").dec()
            await peer.close()
