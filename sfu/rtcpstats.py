"""RTCP bookkeeping: receiver statistics for RR, NTP time, SR mapping."""

from __future__ import annotations

import time

from aiortc.rtp import RtcpReceiverInfo, clamp_packets_lost

NTP_EPOCH_OFFSET = 2208988800  # 1900-01-01 -> 1970-01-01


def ntp64(unix: float) -> int:
    """64-bit NTP timestamp of a Unix time."""
    secs = int(unix)
    frac = int((unix - secs) * (1 << 32)) & 0xFFFFFFFF
    return ((secs + NTP_EPOCH_OFFSET) << 32) | frac


def unix_from_ntp64(ntp: int) -> float:
    return (ntp >> 32) - NTP_EPOCH_OFFSET + (ntp & 0xFFFFFFFF) / (1 << 32)


def middle32(ntp: int) -> int:
    return (ntp >> 16) & 0xFFFFFFFF


def signed32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


class ReceiveStats:
    """What we received from one publisher SSRC: the numbers an RTCP RR block needs."""

    __slots__ = ("clock_rate", "base_ext", "max_ext", "received", "_jitter",
                 "_last_transit", "_expected_prior", "_received_prior",
                 "lsr", "lsr_time")

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.base_ext: int | None = None
        self.max_ext = 0
        self.received = 0
        self._jitter = 0.0
        self._last_transit: float | None = None
        self._expected_prior = 0
        self._received_prior = 0
        self.lsr = 0
        self.lsr_time = 0.0

    def add(self, ext_seq: int, timestamp: int, arrival: float, newest: bool,
            recovered: bool = False) -> None:
        """Count one packet (``ext_seq`` unwrapped; ``arrival`` in seconds).

        A packet ``recovered`` by retransmission is not counted as received: the sender
        must see the loss in fraction_lost to adapt (as libwebrtc counts it).
        """
        if not recovered:
            self.received += 1
        if self.base_ext is None:
            self.base_ext = self.max_ext = ext_seq
        elif ext_seq > self.max_ext:
            self.max_ext = ext_seq
        if newest and not recovered:  # a retransmission's delay is not network jitter
            transit = arrival * self.clock_rate - timestamp
            last = self._last_transit
            if last is not None:
                d = transit - last
                # timestamps wrap at 2**32: fold the difference back near zero
                if d > 2147483648.0:
                    d -= 4294967296.0
                elif d < -2147483648.0:
                    d += 4294967296.0
                self._jitter += (abs(d) - self._jitter) / 16.0
            self._last_transit = transit

    def sender_report(self, ntp: int) -> None:
        self.lsr = middle32(ntp)
        self.lsr_time = time.time()

    @property
    def expected(self) -> int:
        return 0 if self.base_ext is None else self.max_ext - self.base_ext + 1

    def report(self, ssrc: int) -> RtcpReceiverInfo:
        expected = self.expected
        exp_int = expected - self._expected_prior
        rec_int = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_int = exp_int - rec_int
        fraction = 0 if exp_int <= 0 or lost_int <= 0 else min(255, (lost_int << 8) // exp_int)
        dlsr = 0
        if self.lsr:
            delay = time.time() - self.lsr_time
            if 0 < delay < 65536:
                dlsr = int(delay * 65536)
        return RtcpReceiverInfo(
            ssrc=ssrc, fraction_lost=fraction,
            packets_lost=clamp_packets_lost(expected - self.received),
            highest_sequence=self.max_ext & 0xFFFFFFFF, jitter=int(self._jitter),
            lsr=self.lsr, dlsr=dlsr)
