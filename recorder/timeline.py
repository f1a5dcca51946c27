"""One monotonic recording timeline (milliseconds) for every track and every segment.

Each track's RTP timestamps are mapped to the timeline once, at its first packet (or when
its SSRC changes, or when its RTP time leaps by more than ``resync_seconds`` while the
arrival clock does not: a new stream origin); RTP time is trusted after that (a delayed
burst of packets keeps its capture timing). Never re-mapped per RTCP report: re-mapping on
every sender report is what produced the duplicate/non-monotonic DTS of aiortc's
MediaRecorder (aiortc#546).
The anchor is the arrival clock, or the publisher's RTCP wall clock (``ntp_time``) when it
is known, which keeps a publisher's audio and video in sync. Per-stream monotonic DTS is
enforced by the recorder on top of this.
"""

from __future__ import annotations

from dataclasses import dataclass

RESYNC_SECONDS = 2.0


@dataclass(slots=True)
class _TrackClock:
    rate: int
    ssrc: object
    anchor_ext: int
    anchor_time: float
    last_raw: int
    ext: int
    last_now: float = 0.0
    publisher: str = ""  # "citizen" of "citizen-video": tracks of one publisher share NTP


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
        t0 = self._t0
        if t0 is None:
            t0 = self._t0 = arrival
        now = arrival - t0
        clock = self._tracks.get(track)
        if clock is None or clock.ssrc != ssrc or clock.rate != rate:
            clock = self._anchor(track, timestamp, rate, now, ntp_time, ssrc)
        else:
            delta = ((timestamp - clock.last_raw + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            jump = delta / rate
            resync = self.resync
            if (jump > resync or -jump > resync) \
                    and abs(jump - (now - clock.last_now)) > resync:
                # RTP time leapt and the arrival clock did not follow: a new stream origin
                # (not a pause, whose RTP gap matches the arrival gap, and not a delayed
                # burst, whose RTP steps stay small): map it anew.
                self.resyncs += 1
                clock = self._anchor(track, timestamp, rate, now, None, ssrc)
            else:
                clock.ext += delta
                clock.last_raw = timestamp
        clock.last_now = now
        seconds = clock.anchor_time + (clock.ext - clock.anchor_ext) / clock.rate
        if ntp_time is not None and clock.publisher not in self._ntp_ref:
            self._ntp_ref[clock.publisher] = (ntp_time, seconds)
        ms = round(seconds * 1000)
        return self.offset_ms + (ms if ms > 0 else 0)

    def _anchor(self, track: str, timestamp: int, rate: int, now: float,
                ntp_time: float | None, ssrc: object) -> _TrackClock:
        when = now
        publisher = track.split("-", 1)[0]
        ref = self._ntp_ref.get(publisher)
        if ntp_time is not None and ref is not None:
            synced = ref[1] + (ntp_time - ref[0])
            if abs(synced - now) <= self.resync:
                when = synced
        clock = _TrackClock(rate, ssrc, timestamp, when, timestamp, timestamp, now, publisher)
        self._tracks[track] = clock
        return clock
