"""One monotonic recording timeline (milliseconds) for every track and every segment.

Each track's RTP timestamps are mapped to the timeline once, at its first packet (or when
its SSRC changes, or when its timestamps jump far from the arrival clock: a new publisher
peer after a reconnect), never re-mapped per RTCP report: re-mapping on every sender report
is what produced the duplicate/non-monotonic DTS of aiortc's MediaRecorder (aiortc#546).
The anchor is the arrival clock, or the publisher's RTCP wall clock (``ntp_time``) when it
is known, which keeps a publisher's audio and video in sync. Per-stream monotonic DTS is
enforced by the recorder on top of this.
"""

from __future__ import annotations

from dataclasses import dataclass

RESYNC_SECONDS = 2.0


@dataclass
class _TrackClock:
    rate: int
    ssrc: object
    anchor_ext: int
    anchor_time: float
    last_raw: int
    ext: int


class Timeline:
    def __init__(self, offset_ms: int = 0, resync_seconds: float = RESYNC_SECONDS) -> None:
        self.offset_ms = offset_ms
        self.resync = resync_seconds
        self._t0: float | None = None
        self._tracks: dict[str, _TrackClock] = {}
        self._ntp_ref: dict[str, tuple[float, float]] = {}  # publisher -> (ntp, time)
        self.resyncs = 0

    def to_ms(self, track: str, timestamp: int, rate: int, arrival: float,
              ntp_time: float | None = None, ssrc: object = None) -> int:
        if self._t0 is None:
            self._t0 = arrival
        now = arrival - self._t0
        clock = self._tracks.get(track)
        if clock is None or clock.ssrc != ssrc or clock.rate != rate:
            clock = self._anchor(track, timestamp, rate, now, ntp_time, ssrc)
        else:
            delta = ((timestamp - clock.last_raw + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            clock.ext += delta
            clock.last_raw = timestamp
        seconds = clock.anchor_time + (clock.ext - clock.anchor_ext) / clock.rate
        if abs(seconds - now) > self.resync:
            self.resyncs += 1
            clock = self._anchor(track, timestamp, rate, now, None, ssrc)
            seconds = clock.anchor_time
        publisher = track.split("-", 1)[0]
        if ntp_time is not None and publisher not in self._ntp_ref:
            self._ntp_ref[publisher] = (ntp_time, seconds)
        return self.offset_ms + max(0, round(seconds * 1000))

    def _anchor(self, track: str, timestamp: int, rate: int, now: float,
                ntp_time: float | None, ssrc: object) -> _TrackClock:
        when = now
        ref = self._ntp_ref.get(track.split("-", 1)[0])
        if ntp_time is not None and ref is not None:
            synced = ref[1] + (ntp_time - ref[0])
            if abs(synced - now) <= self.resync:
                when = synced
        clock = _TrackClock(rate, ssrc, timestamp, when, timestamp, timestamp)
        self._tracks[track] = clock
        return clock
