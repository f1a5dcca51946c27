"""Transport-wide congestion control feedback toward a publisher (the citizen's phone).

The SFU terminates the phone's leg, so only the SFU can tell the phone's encoder how its
uplink is doing. We negotiate transport-cc (the header extension and the ``transport-cc``
RTCP feedback) and report, every :data:`FEEDBACK_INTERVAL`, when each packet arrived at
our socket. The phone's browser runs its own delay- and loss-based estimator (Google
congestion control) on these reports and sets its encoder's target bitrate from them.

Wire format: draft-holmer-rmcat-transport-wide-cc-extensions-01, RTCP PT 205 FMT 15, as
libwebrtc writes and parses it: base sequence number, packet status count, 24-bit
reference time (64 ms units), feedback packet count, status chunks (run length, 1-bit
or 2-bit status vectors, chosen the way libwebrtc chooses them), then one receive delta
per received packet (250 µs units; 1 byte when 0..255, else 2 bytes signed), padded to
a 32-bit boundary with the RTCP padding bit.
"""

from __future__ import annotations

import struct
from typing import Any

from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpHeaderExtensionParameters

URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
FEEDBACK_INTERVAL = 0.1   # seconds between feedback packets (libwebrtc's default)
MAX_RECEIVED = 300        # received packets per feedback packet (keeps it < ~800 bytes)
MAX_JUMP = 1 << 14        # a sequence jump this large restarts the window (no loss report)

NOT_RECEIVED, SMALL, LARGE = 0, 1, 2
_RUN_MAX = 0x1FFF         # 13-bit run length
_ONE_BIT, _TWO_BIT = 14, 7  # symbols in a 1-bit / 2-bit status vector chunk
_TICK_US = 250            # receive delta unit
_REF_US = 64_000          # reference time unit
_HEAD = struct.Struct("!BBHIIHHI")


def negotiate(codecs: list[Any], extensions: list[Any], offered: list[Any]) -> int:
    """Accept transport-cc for one video section when the offer has it.

    ``codecs``/``extensions``: the transceiver's negotiated lists (hooks.negotiated);
    ``offered``: the offer's header extensions for that section. Returns the extension id,
    0 when the offer has no transport-cc.
    """
    ext_id = next((int(e.id) for e in offered if e.uri == URI), 0)
    if not 0 < ext_id <= 14:  # the fast path reads one-byte header extensions only
        return 0
    if not any(e.uri == URI for e in extensions):
        extensions.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=URI))
    feedback = RTCRtcpFeedback(type="transport-cc")
    for codec in codecs:
        if not is_rtx(codec) and feedback not in codec.rtcpFeedback:
            codec.rtcpFeedback.append(feedback)
    return ext_id


def _chunks(symbols: list[int]) -> bytes:
    """Packet status chunks for ``symbols`` (libwebrtc's choice of chunk types)."""
    out = bytearray()
    buf: list[int] = []

    def can_add(s: int) -> bool:
        n = len(buf)
        if n < _TWO_BIT:
            return True
        if n < _ONE_BIT and LARGE not in buf and s != LARGE:
            return True
        return n < _RUN_MAX and s == buf[0] and buf.count(s) == n

    def emit() -> None:
        n = len(buf)
        if buf.count(buf[0]) == n:  # run length: 0 | symbol | length
            out.extend(((buf[0] << 13) | n).to_bytes(2, "big"))
            buf.clear()
        elif n == _ONE_BIT:  # 1-bit vector: 1 0 | 14 symbols
            word = 0x8000
            for i, s in enumerate(buf):
                word |= s << (13 - i)
            out.extend(word.to_bytes(2, "big"))
            buf.clear()
        else:  # 2-bit vector: 1 1 | 7 symbols (missing ones are "not received")
            word = 0xC000
            for i, s in enumerate(buf[:_TWO_BIT]):
                word |= s << (12 - 2 * i)
            out.extend(word.to_bytes(2, "big"))
            del buf[:_TWO_BIT]

    for s in symbols:
        if not can_add(s):
            emit()
        buf.append(s)
    while buf:
        emit()
    return bytes(out)


def feedback_packet(sender_ssrc: int, media_ssrc: int, base_seq: int, fb_count: int,
                    arrivals: list[int | None]) -> bytes:
    """One transport-cc feedback packet.

    ``arrivals[i]``: arrival time in µs of packet ``base_seq + i`` (None: not received);
    at least one must be received, deltas must fit 16 bits (see :class:`TransportFeedback`).
    """
    first = next(a for a in arrivals if a is not None)
    ref = first // _REF_US
    last_tick = ref * (_REF_US // _TICK_US)
    symbols: list[int] = []
    deltas = bytearray()
    for a in arrivals:
        if a is None:
            symbols.append(NOT_RECEIVED)
            continue
        tick = (a + _TICK_US // 2) // _TICK_US
        delta = tick - last_tick
        last_tick = tick
        if 0 <= delta <= 0xFF:
            symbols.append(SMALL)
            deltas.append(delta)
        else:
            symbols.append(LARGE)
            deltas.extend(struct.pack("!h", delta))
    body = _chunks(symbols) + bytes(deltas)
    size = _HEAD.size + len(body)
    pad = -size % 4
    if pad:
        body += b"\0" * (pad - 1) + bytes((pad,))
    head = _HEAD.pack(0x80 | (0x20 if pad else 0) | 15, 205, (size + pad) // 4 - 1,
                      sender_ssrc, media_ssrc, base_seq & 0xFFFF, len(arrivals),
                      ((ref & 0xFFFFFF) << 8) | (fb_count & 0xFF))
    return head + body


class TransportFeedback:
    """Arrival times of one transport's packets, reported as transport-cc feedback.

    :meth:`record` is called for every received packet carrying the transport-wide
    sequence number (media, RTX and padding probes alike); :meth:`build` returns the
    feedback packets for everything recorded since the previous call. Packets missing
    from the reported range are reported as lost; a packet arriving after its range was
    reported is ignored (counted in :attr:`late`).
    """

    def __init__(self, sender_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = 0
        self._arrivals: dict[int, int] = {}   # unwrapped sequence -> arrival µs
        self._next: int | None = None         # first sequence not reported yet
        self._max = -1
        self._fb_count = 0
        self.recorded = 0
        self.late = 0
        self.sent = 0

    def record(self, seq: int, arrival: float) -> None:
        """Packet with transport-wide sequence ``seq`` (16 bit) arrived at ``arrival`` (s)."""
        if self._next is None:
            ext = self._next = seq
        else:
            ref = self._max if self._max >= 0 else self._next
            ext = ref + ((seq - ref + 0x8000) & 0xFFFF) - 0x8000
            if ext < self._next:
                self.late += 1
                return
            if ext - self._next > MAX_JUMP:  # the sender restarted: report from here on
                self._arrivals.clear()
                self._next = ext
        self._arrivals[ext] = int(arrival * 1_000_000)
        if ext > self._max:
            self._max = ext
        self.recorded += 1

    def build(self) -> list[bytes]:
        """Feedback for all packets up to the newest one received; [] if none is new."""
        out: list[bytes] = []
        start = self._next
        arrivals = self._arrivals
        while start is not None and arrivals and start <= self._max:
            seq = start
            window: list[int | None] = []
            received = 0
            last_tick = 0
            while seq <= self._max and received < MAX_RECEIVED:
                a = arrivals.pop(seq, None)
                if a is not None:
                    tick = (a + _TICK_US // 2) // _TICK_US
                    if received == 0:
                        last_tick = (a // _REF_US) * (_REF_US // _TICK_US)
                    if not -0x8000 <= tick - last_tick <= 0x7FFF:
                        arrivals[seq] = a  # too far from the previous one: next packet
                        break
                    last_tick = tick
                    received += 1
                window.append(a)
                seq += 1
            # trailing losses are reported by the next packet, after a received one
            while window and window[-1] is None:
                window.pop()
                seq -= 1
            if not window:
                break
            out.append(feedback_packet(self.sender_ssrc, self.media_ssrc, start,
                                       self._fb_count, window))
            self._fb_count = (self._fb_count + 1) & 0xFF
            start = seq
        self._next = start
        self.sent += len(out)
        return out
