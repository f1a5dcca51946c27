"""Subscriber side: one outgoing track of one peer, written packet by packet.

A :class:`DownTrack` owns a hooked :class:`RTCRtpSender` that never encodes: aiortc
negotiates it (SSRC, payload type, header extension ids) and starts it once DTLS is up;
we then write each forwarded packet ourselves through the DTLS transport, with this
leg's SSRC, payload type, sequence number and timestamp. A retransmission history
answers the subscriber's NACKs; NACKs we cannot answer go to the publisher; PLI/FIR go
upstream through the room track; RR feeds the metrics. A viewer's REMB is ignored: the
phone's rate follows its uplink (twcc.py), a slow viewer skips ahead instead.
Our RTCP loop sends SR + SDES with an NTP/RTP pair taken from the publisher's own SR,
so browsers can lip-sync the citizen's audio and video.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from madoguchi.logs import event
from madoguchi.metrics import (
    RTX_SENT,
    SFU_ERRORS,
    SUBSCRIBER_JITTER,
    SUBSCRIBER_LOSS,
    SUBSCRIBER_RTT,
)

from . import hooks
from .ice import datagram_transport
from .rewriter import LegMap
from .rtcpstats import middle32, ntp64
from .rtphistory import RtpHistory

if TYPE_CHECKING:
    from .track import RoomTrack

log = logging.getLogger(__name__)

HEADER = struct.Struct("!BBHII")
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
BACKLOG_BYTES = 256 * 1024  # socket write backlog beyond which a leg skips ahead


class DownTrack:
    """One subscriber leg of a room track (e.g. citizen video to one staff viewer)."""

    def __init__(self, *, kind: str, sender: RTCRtpSender, track: RoomTrack,
                 consultation: str, viewer: str | None,
                 on_first_keyframe: Callable[[DownTrack], None] | None = None) -> None:
        self.kind = kind
        self.video = kind == "video"
        self.sender = sender
        self.track = track
        self.consultation = consultation
        self.viewer = viewer
        self.on_first_keyframe = on_first_keyframe
        self.created = time.monotonic()
        self.ready = False
        self.closed = False
        self.waiting_keyframe = self.video
        self.first_keyframe_at: float | None = None
        self.map = LegMap()
        self.history = RtpHistory()
        self.ssrc = sender._ssrc
        self.payload_type = 0
        self.cname = ""
        self.mid = ""
        self._ext_ids: dict[str, int] = {}
        self._ext_fixed = b""
        self._abs_id = 0
        self._level_id = 0
        self.dtls: Any = None
        self._dgram: Any = None
        self.packets = 0
        self.octets = 0
        self.rtx = 0
        self.duplicates = 0
        self.send_failures = 0
        self.marker_next = False
        self.last_cts = -1
        self.rtt: float | None = None
        self._errors = 0
        hooks.hook_sender(sender, self._on_start, self.on_rtcp, self._rtcp_loop)

    # negotiation ---------------------------------------------------------------
    def configure(self, header_extensions: list[Any], mid: str, cname: str) -> None:
        """Learn extension ids, mid and cname from the negotiated description."""
        self.mid = mid or ""
        self.cname = cname
        self._ext_ids = {e.uri: e.id for e in header_extensions}
        mid_id = self._ext_ids.get(MID_URI, 0)
        fixed = b""
        if mid_id and 0 < len(self.mid.encode()) <= 16 and mid_id <= 14:
            raw = self.mid.encode()
            fixed = bytes([(mid_id << 4) | (len(raw) - 1)]) + raw
        self._ext_fixed = fixed
        self._abs_id = self._ext_ids.get(ABS_SEND_TIME_URI, 0) if self.video else 0
        self._level_id = 0 if self.video else self._ext_ids.get(AUDIO_LEVEL_URI, 0)
        if self._abs_id > 14:
            self._abs_id = 0
        if self._level_id > 14:
            self._level_id = 0

    def _on_start(self, codec: Any) -> None:
        """aiortc starts the sender (DTLS up): we may write packets from now on."""
        self.payload_type = int(codec.payloadType)
        self.dtls = self.sender.transport
        if self.video:
            # FIR carries media SSRC 0 in its header: let the router give it to us too.
            self.dtls._rtp_router.senders.setdefault(0, self.sender)
        self.ready = not self.closed
        if self.video:
            self.track.request_keyframe("join")

    # writing -------------------------------------------------------------------
    def _extensions(self, audio_level: Any) -> bytes:
        body = self._ext_fixed
        if self._abs_id:
            abs_time = int(time.time() * 262144) & 0xFFFFFF
            body += bytes((self._abs_id << 4 | 2, abs_time >> 16, (abs_time >> 8) & 0xFF,
                           abs_time & 0xFF))
        if self._level_id and audio_level is not None:
            vad, level = audio_level
            body += bytes((self._level_id << 4, (0x80 if vad else 0) | (int(level) & 0x7F)))
        if not body:
            return b""
        pad = -len(body) % 4
        return b"\xbe\xde" + struct.pack("!H", (len(body) + pad) // 4) + body + b"\0" * pad

    def backlogged(self) -> bool:
        dgram = self._dgram
        if dgram is None:
            dgram = self._dgram = datagram_transport(self.dtls)
            if dgram is None:
                return False
        return bool(dgram.get_write_buffer_size() > BACKLOG_BYTES)

    async def write(self, cext: int, cts: int, marker: int, payload: bytes,
                    padding: int, audio_level: Any) -> bool:
        """Send one canonical packet on this leg; False if it was not sent."""
        out_seq = (cext + self.map.seq_off) & 0xFFFF
        if self.history.has(out_seq):
            self.duplicates += 1
            return False  # already sent (a duplicate or an upstream retransmission)
        if self.marker_next:
            marker = 1
            self.marker_next = False
        ext = self._extensions(audio_level)
        first = (0x90 if ext else 0x80) | (0x20 if padding else 0)
        data = HEADER.pack(first, (marker << 7) | self.payload_type, out_seq,
                           (cts + self.map.ts_off) & 0xFFFFFFFF, self.ssrc) + ext + payload
        if padding:
            data += b"\0" * (padding - 1) + bytes((padding,))
        self.history.put(out_seq, data)
        self.last_cts = cts
        if ((out_seq - self.map.last_seq) & 0xFFFF) < 0x8000:
            self.map.last_seq = out_seq
        try:
            await self.dtls._send_rtp(data)
        except ConnectionError:
            self.send_failures += 1
            self.ready = False
            return False
        except Exception:  # SRTP refused the packet: count it, keep the leg
            self.send_failures += 1
            self._error("send")
            return False
        self.packets += 1
        self.octets += len(payload)
        return True

    # RTCP from the subscriber --------------------------------------------------
    async def on_rtcp(self, packet: AnyRtcpPacket) -> None:
        try:
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    if report.ssrc == self.ssrc:
                        self._receiver_report(report)
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                await self.handle_nack(list(packet.lost))
            elif isinstance(packet, RtcpPsfbPacket):
                if packet.fmt == RTCP_PSFB_PLI and self.video:
                    self.track.request_keyframe("pli")
                elif packet.fmt == RTCP_PSFB_FIR and self.video:
                    self.track.request_keyframe("fir")
        except Exception:
            self._error("rtcp")

    def _receiver_report(self, report: Any) -> None:
        SUBSCRIBER_LOSS.labels(kind=self.kind).observe(report.fraction_lost / 256.0)
        SUBSCRIBER_JITTER.labels(kind=self.kind).observe(
            report.jitter / float(self.track.clock_rate))
        if report.lsr:
            now = middle32(ntp64(time.time()))
            rtt = ((now - report.lsr - report.dlsr) & 0xFFFFFFFF) / 65536.0
            if rtt < 60:
                self.rtt = rtt
                SUBSCRIBER_RTT.labels(kind=self.kind).observe(rtt)

    async def handle_nack(self, lost: list[int]) -> None:
        missing = []
        for seq in lost:
            data = self.history.get(seq)
            if data is None:
                missing.append(seq)
                continue
            try:
                await self.dtls._send_rtp(data)
            except ConnectionError:
                return
            self.rtx += 1
            RTX_SENT.labels(kind=self.kind).inc()
        if missing:
            self.track.nack_upstream(self, missing)

    # RTCP to the subscriber ----------------------------------------------------
    async def _rtcp_loop(self) -> None:
        try:
            while True:
                await asyncio.sleep(0.5 + random.random())
                if not self.ready or not self.packets:
                    continue
                await self._send_rtcp(self.sender_report())
        finally:
            if self.ready and self.packets:
                await self._send_rtcp(bytes(RtcpByePacket(sources=[self.ssrc])))

    def sender_report(self) -> bytes:
        now = time.time()
        cts = self.track.rtp_time_at(now)
        if cts is None:
            return b""
        info = RtcpSenderInfo(ntp_timestamp=ntp64(now),
                              rtp_timestamp=(cts + self.map.ts_off) & 0xFFFFFFFF,
                              packet_count=self.packets & 0xFFFFFFFF,
                              octet_count=self.octets & 0xFFFFFFFF)
        data = bytes(RtcpSrPacket(ssrc=self.ssrc, sender_info=info))
        if self.cname:
            data += bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(
                ssrc=self.ssrc, items=[(1, self.cname.encode("utf-8"))])]))
        return data

    async def _send_rtcp(self, data: bytes) -> None:
        if not data or self.dtls is None:
            return
        try:
            await self.dtls._send_rtp(data)
        except ConnectionError:
            pass

    def _error(self, where: str) -> None:
        self._errors += 1
        SFU_ERRORS.labels(reason=f"subscriber_{where}").inc()
        if self._errors <= 3:
            event(log, "sfu_subscriber_error", level=logging.WARNING, exc_info=True,
                  consultation=self.consultation, track=self.track.name, where=where)

    def close(self) -> None:
        self.closed = True
        self.ready = False
