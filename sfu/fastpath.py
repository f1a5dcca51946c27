"""The publisher-side fast path: decrypted RTP bytes straight to our streams.

aiortc turns every received datagram into an ``RtpPacket`` (header extensions decoded
into a dataclass, router lookups) before a receiver sees it; at ~160 packets per second
per citizen that is the largest single cost of forwarding. On a publisher peer's DTLS
transport we read the few header fields forwarding needs (payload type, marker,
sequence, timestamp, SSRC, the RFC 6464 audio level and the transport-wide sequence
number when negotiated) and hand a small
packet object to the :class:`~sfu.publisher.PublisherStream` that owns the payload
type. Anything we do not recognise (unknown payload type) takes aiortc's normal path,
which ends in the same hooked receiver. Installed through ``hooks.guard_transport``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .publisher import PublisherStream

_SEQ_TS_SSRC = struct.Struct("!HII")
_EXT_HEAD = struct.Struct("!HH")


class FastPacket:
    """The subset of ``aiortc.rtp.RtpPacket`` the SFU uses (same attribute names)."""

    __slots__ = ("payload_type", "marker", "sequence_number", "timestamp", "ssrc",
                 "payload", "padding_size", "audio_level", "transport_sequence_number")
    payload_type: int
    marker: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes
    padding_size: int
    audio_level: Any
    transport_sequence_number: int | None

    @property
    def extensions(self) -> FastPacket:
        return self  # ``packet.extensions.audio_level`` as on aiortc's packets


def find_extension(data: bytes, start: int, end: int, profile: int, ext_id: int
                   ) -> tuple[int, int]:
    """(offset, length) of extension ``ext_id``'s value in an RFC 8285 block, or (-1, 0)."""
    pos = start
    if profile == 0xBEDE:
        while pos < end:
            b = data[pos]
            if b == 0:
                pos += 1
                continue
            xid, length = b >> 4, (b & 0x0F) + 1
            if xid == 15:
                break
            if xid == ext_id:
                return (pos + 1, length) if pos + length < end else (-1, 0)
            pos += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while pos + 1 < end:
            xid = data[pos]
            if xid == 0:
                pos += 1
                continue
            length = data[pos + 1]
            if xid == ext_id:
                return (pos + 2, length) if length and pos + 1 + length < end else (-1, 0)
            pos += 2 + length
    return (-1, 0)


def audio_level(data: bytes, start: int, end: int, profile: int, ext_id: int) -> Any:
    """(voice, level) from an RFC 8285 extension block, or None."""
    pos, _ = find_extension(data, start, end, profile, ext_id)
    if pos < 0:
        return None
    v = data[pos]
    return (bool(v & 0x80), v & 0x7F)


def transport_sequence(data: bytes, start: int, end: int, profile: int, ext_id: int
                       ) -> int | None:
    """The transport-wide sequence number (transport-cc), or None."""
    pos, length = find_extension(data, start, end, profile, ext_id)
    if pos < 0 or length < 2:
        return None
    return (data[pos] << 8) | data[pos + 1]


class RtpDispatcher:
    """Routes decrypted RTP datagrams of one transport to its publisher streams."""

    def __init__(self, streams: list[PublisherStream]) -> None:
        self.streams = streams
        self._by_pt: dict[int, PublisherStream] = {}
        self.malformed = 0

    def configure(self) -> None:
        """Map payload types to streams once negotiation fixed them."""
        by_pt: dict[int, PublisherStream] = {}
        clash = False
        for stream in self.streams:
            for pt in (stream.media_pt, stream.rtx_pt):
                if pt is None:
                    continue
                if pt in by_pt:
                    clash = True
                by_pt[pt] = stream
        # payload types shared by two streams: let aiortc route them by SSRC instead
        self._by_pt = {} if clash else by_pt

    async def __call__(self, data: bytes) -> bool:
        """Handle one datagram; False hands it to aiortc's own parsing and routing."""
        n = len(data)
        if n < 12 or data[0] & 0xC0 != 0x80:
            return False
        stream = self._by_pt.get(data[1] & 0x7F)
        if stream is None:
            return False
        b0 = data[0]
        pos = 12 + (b0 & 0x0F) * 4
        level = tseq = None
        if b0 & 0x10:
            if n < pos + 4:
                self.malformed += 1
                return True
            profile, words = _EXT_HEAD.unpack_from(data, pos)
            end = pos + 4 + words * 4
            if end > n:
                self.malformed += 1
                return True
            if stream.level_id:
                level = audio_level(data, pos + 4, end, profile, stream.level_id)
            if stream.twcc_id:
                tseq = transport_sequence(data, pos + 4, end, profile, stream.twcc_id)
            pos = end
        pad = 0
        if b0 & 0x20:
            pad = data[-1]
            if not pad or pad > n - pos:
                self.malformed += 1
                return True
        packet = FastPacket()
        packet.payload_type = data[1] & 0x7F
        packet.marker = data[1] >> 7
        packet.sequence_number, packet.timestamp, packet.ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        packet.payload = data[pos:n - pad]
        packet.padding_size = pad
        packet.audio_level = level
        packet.transport_sequence_number = tseq
        await stream.on_rtp(packet, 0)  # type: ignore[arg-type]
        return True
