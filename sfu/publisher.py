"""Publisher side: one received media stream, taken from aiortc before any decoding.

A :class:`PublisherStream` owns one hooked :class:`RTCRtpReceiver`: every decrypted RTP
packet arrives in :meth:`on_rtp` (RTX is unwrapped here), is counted for receiver
reports, gaps are NACKed upstream at once, and the packet is handed to the room track
that fans it out. The receiver's RTCP loop is ours: transport-wide congestion control
feedback every 100 ms when negotiated (twcc.py: the phone's own estimator then sets its
rate from our arrival times), RR (+ REMB, the configured ceiling) about once a second.
Keyframe requests (PLI) go upstream through a rate limiter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.codecs import is_rtx
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
)

from madoguchi.logs import event
from madoguchi.metrics import SFU_ERRORS

from . import hooks, twcc
from .codecs import codec_name
from .ice import ArrivalStamps
from .keyframerequest import KeyframeRequester
from .rewriter import SeqUnwrapper
from .rtcpstats import ReceiveStats, unix_from_ntp64

log = logging.getLogger(__name__)

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
MAX_NACK_GAP = 128        # larger holes are not NACKed (a keyframe request follows)
# A packet is NACKed upstream again only after ~1.5 round trips (a retransmission that
# was itself lost is asked for once more instead of freezing the picture for a viewer
# cadence); the round trip is measured from our first NACK to its retransmission.
NACK_REPEAT_AFTER = 0.1   # until a round trip is measured
NACK_REPEAT_MIN, NACK_REPEAT_MAX = 0.02, 0.3
_NEVER = (-1.0, 0)
SSRC_SWITCH_SILENCE = 1.0  # a new SSRC replaces the current one only after this silence

Deliver = Callable[["PublisherStream", RtpPacket, int, bool, float], Awaitable[None]]


class PeerClock:
    """Maps one publisher's NTP clock (from its first RTCP SR) onto our wall clock.

    All streams of a peer share it, so audio and video keep their relative timing.
    """

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset: float | None = None

    def to_local(self, ntp: int) -> float:
        unix = unix_from_ntp64(ntp)
        if self.offset is None:
            self.offset = time.time() - unix
        return unix + self.offset


class PublisherStream:
    """One media stream a peer sends us (citizen video/audio or a staff microphone)."""

    def __init__(self, *, kind: str, receiver: RTCRtpReceiver, rtcp_ssrc: int,
                 clock: PeerClock, deliver: Deliver, label: str, consultation: str,
                 remb: Callable[[], int] | None = None) -> None:
        self.kind = kind
        self.label = label  # "citizen-video", "citizen-audio", "staff-audio"
        self.receiver = receiver
        self.rtcp_ssrc = rtcp_ssrc
        self.clock = clock
        self.consultation = consultation
        self._deliver = deliver
        self._remb = remb
        self.stamps = ArrivalStamps()  # replaced by the peer with its transport's stamps
        self.codec = ""
        self.clock_rate = 90000 if kind == "video" else 48000
        self.media_pt: int | None = None
        self.level_id = 0  # RFC 6464 audio level header extension id, 0 = none
        self.rtx_pt: int | None = None
        self.twcc_id = 0  # transport-cc header extension id, 0 = not negotiated
        self.twcc: twcc.TransportFeedback | None = None
        self.ssrc: int | None = None
        self.epoch = 0
        self.unwrapper = SeqUnwrapper()
        self.stats = ReceiveStats(self.clock_rate)
        self.sr: tuple[int, int] | None = None   # (ntp64, rtp) of the newest SR
        self.on_sender_report: Callable[[PublisherStream], None] | None = None
        self.keyframes = KeyframeRequester(self._send_pli)
        self._nacked: dict[int, tuple[float, int]] = {}  # seq -> (last NACK, how many)
        self.rtt: float | None = None  # smoothed NACK -> retransmission time
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_media = 0.0
        self.packets = 0
        self.rtx_packets = 0
        self.dropped = 0
        self._errors = 0
        self.closed = False
        hooks.hook_receiver(receiver, self.on_rtp, self.on_rtcp, self._rtcp_loop)

    # negotiation ---------------------------------------------------------------
    def configure(self, codecs: list[Any], header_extensions: list[Any] | None = None) -> None:
        """Learn the negotiated payload types and the audio-level extension id."""
        for ext in header_extensions or []:
            if ext.uri == AUDIO_LEVEL_URI and 0 < ext.id <= 14:
                self.level_id = ext.id
            elif ext.uri == twcc.URI and 0 < ext.id <= 14 and self.kind == "video":
                self.twcc_id = ext.id
                if self.twcc is None:
                    self.twcc = twcc.TransportFeedback(self.rtcp_ssrc)
        media = [c for c in codecs if not is_rtx(c)]
        if not media:
            return
        main = media[0]
        self.media_pt = main.payloadType
        self.codec = codec_name(main.mimeType)
        self.clock_rate = main.clockRate
        self.stats = ReceiveStats(self.clock_rate)
        for c in codecs:
            if is_rtx(c) and c.parameters.get("apt") == main.payloadType:
                self.rtx_pt = c.payloadType

    # RTP -----------------------------------------------------------------------
    async def on_rtp(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """aiortc delivers each decrypted packet here (replaces _handle_rtp_packet)."""
        try:
            feedback = self.twcc
            if feedback is not None:  # every packet, probes and retransmissions too
                tseq = packet.extensions.transport_sequence_number
                if tseq is not None:
                    feedback.record(tseq, self.stamps.current)
            pt = packet.payload_type
            recovered = pt != self.media_pt
            if recovered:
                if (pt != self.rtx_pt or self.rtx_pt is None or self.ssrc is None
                        or self.media_pt is None):
                    self.dropped += 1
                    return
                payload = packet.payload
                if len(payload) < 2:  # RTX padding (bandwidth probing)
                    return
                # RFC 4588: the original sequence number, then the original payload
                packet.sequence_number = (payload[0] << 8) | payload[1]
                packet.payload = payload[2:]
                packet.payload_type = self.media_pt
                packet.ssrc = self.ssrc
                self.rtx_packets += 1
                self._rtx_arrived(packet.sequence_number)
            arrival = self.stamps.current
            if packet.ssrc != self.ssrc:
                # browsers keep one SSRC per session; a stray one must not flap the track
                if self.ssrc is not None and arrival - self._last_media < SSRC_SWITCH_SILENCE:
                    self.dropped += 1
                    return
                self._new_ssrc(packet.ssrc)
            unwrapper = self.unwrapper
            restarts = unwrapper.restarts
            unwrapped = unwrapper.unwrap(packet.sequence_number)
            if unwrapped is None:  # wild sequence jump: wait for confirmation
                self.dropped += 1
                return
            if unwrapper.restarts != restarts:  # the sender restarted its numbering
                self.epoch += 1
                self.stats = ReceiveStats(self.clock_rate)
                self._nacked.clear()
            ext, newest = unwrapped
            self._last_media = arrival
            self.packets += 1
            prev_max = self.stats.max_ext
            self.stats.add(ext, packet.timestamp, arrival, newest, recovered)
            if newest and self.kind == "video" and ext > prev_max + 1 and self.stats.received > 1:
                self._nack_gap(prev_max + 1, ext)
            await self._deliver(self, packet, ext, newest, arrival)
        except Exception:
            self._error("rtp")

    def _new_ssrc(self, ssrc: int) -> None:
        self.ssrc = ssrc
        # the fast path bypasses aiortc's router, which learns unsignalled SSRCs from
        # RTP: teach it here so the publisher's RTCP SR still reaches this receiver
        router = getattr(self.receiver.transport, "_rtp_router", None)
        if router is not None:
            router.ssrc_table[ssrc] = self.receiver
        self.epoch += 1
        self.unwrapper = SeqUnwrapper()
        self.stats = ReceiveStats(self.clock_rate)
        self.sr = None
        self._nacked.clear()

    def _nack_gap(self, first_ext: int, end_ext: int) -> None:
        if end_ext - first_ext > MAX_NACK_GAP:
            self.request_keyframe("loss")
            return
        self.nack([e & 0xFFFF for e in range(first_ext, end_ext)])

    def nack(self, seqs: list[int]) -> None:
        """Ask the publisher to retransmit these (source) sequence numbers."""
        if self.ssrc is None or self.closed or not seqs:
            return
        now = time.monotonic()
        nacked = self._nacked
        repeat = self.nack_repeat_after()
        fresh = [s for s in seqs if now - nacked.get(s, _NEVER)[0] >= repeat]
        if not fresh:
            return
        for s in fresh:
            nacked[s] = (now, nacked.get(s, _NEVER)[1] + 1)
        if len(nacked) > 2048:
            for s in [s for s, (t, _) in nacked.items() if now - t > 1.0]:
                del nacked[s]
        rtcp = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self.rtcp_ssrc, media_ssrc=self.ssrc)
        rtcp.lost = sorted(fresh)
        self._spawn_send(bytes(rtcp))

    def nack_repeat_after(self) -> float:
        if self.rtt is None:
            return NACK_REPEAT_AFTER
        return min(NACK_REPEAT_MAX, max(NACK_REPEAT_MIN, 1.5 * self.rtt))

    def _rtx_arrived(self, seq: int) -> None:
        entry = self._nacked.pop(seq, None)
        if entry is None or entry[1] != 1:  # unasked, or which NACK it answers is unclear
            return
        sample = self.stamps.current - entry[0]
        if 0 <= sample < 5:
            self.rtt = sample if self.rtt is None else self.rtt + (sample - self.rtt) / 8

    # keyframes -----------------------------------------------------------------
    def request_keyframe(self, reason: str) -> None:
        if self.kind == "video":
            self.keyframes.request(reason)

    def _send_pli(self) -> None:
        if self.ssrc is None:
            return
        rtcp = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self.rtcp_ssrc, media_ssrc=self.ssrc)
        self._spawn_send(bytes(rtcp))

    # RTCP ----------------------------------------------------------------------
    async def on_rtcp(self, packet: AnyRtcpPacket) -> None:
        """SR/BYE from the publisher (replaces _handle_rtcp_packet)."""
        try:
            if isinstance(packet, RtcpSrPacket) and packet.ssrc == self.ssrc:
                info = packet.sender_info
                self.clock.to_local(info.ntp_timestamp)  # fixes the peer's clock offset
                self.stats.sender_report(info.ntp_timestamp)
                self.sr = (info.ntp_timestamp, info.rtp_timestamp)
                if self.on_sender_report is not None:
                    self.on_sender_report(self)
        except Exception:
            self._error("rtcp")

    async def _rtcp_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_report = loop.time() + 0.5 + random.random()
        while True:
            feedback = self.twcc
            await asyncio.sleep(twcc.FEEDBACK_INTERVAL if feedback is not None
                                else max(0.0, next_report - loop.time()))
            if feedback is not None and self.ssrc is not None:
                feedback.media_ssrc = self.ssrc
                for data in feedback.build():
                    await self._send(data)
            if loop.time() < next_report:
                continue
            next_report = loop.time() + 0.5 + random.random()
            if self.ssrc is None or self.stats.received == 0:
                continue
            data = bytes(RtcpRrPacket(ssrc=self.rtcp_ssrc,
                                      reports=[self.stats.report(self.ssrc)]))
            if self.kind == "video" and self._remb is not None:
                bitrate = self._remb()
                if bitrate > 0:
                    data += bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=self.rtcp_ssrc,
                                                 media_ssrc=0,
                                                 fci=pack_remb_fci(bitrate, [self.ssrc])))
            await self._send(data)

    async def _send(self, data: bytes) -> None:
        try:
            await self.receiver.transport._send_rtp(data)
        except ConnectionError:
            pass

    def _spawn_send(self, data: bytes) -> None:
        if self.closed:
            return
        task = asyncio.ensure_future(self._send(data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _error(self, where: str) -> None:
        self._errors += 1
        SFU_ERRORS.labels(reason=f"publisher_{where}").inc()
        if self._errors <= 3:  # never flood the log from hostile input
            event(log, "sfu_publisher_error", level=logging.WARNING, exc_info=True,
                  consultation=self.consultation, track=self.label, where=where)

    def close(self) -> None:
        self.closed = True
        self.keyframes.close()
        for task in list(self._tasks):
            task.cancel()
