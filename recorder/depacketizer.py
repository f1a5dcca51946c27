"""Rebuild encoded frames from the forwarded RTP packets (the recorder's own copy).

Video: packets are ordered by (extended) sequence number and a frame is complete when its
packets run without a gap up to the marker bit. A gap that does not fill within
``GAP_PACKETS`` packets or ``GAP_SECONDS`` means loss: the frames up to the next keyframe
are discarded (they would decode corrupt) and a keyframe is requested. Audio: each Opus
packet is one frame; a short reorder window puts late packets back in order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiortc.codecs import h264_depayload

from recorder.bitstream import h264_is_keyframe, vp8_is_keyframe
from sfu.interfaces import ForwardedPacket

GAP_PACKETS = 128
GAP_SECONDS = 0.5
AUDIO_REORDER = 4
MAX_PENDING = 2048


@dataclass(slots=True)
class EncodedFrame:
    track: str
    timestamp: int  # publisher RTP timestamp
    data: bytes
    keyframe: bool
    arrival: float
    ntp_time: float | None
    ssrc: object


_NONE: tuple[EncodedFrame, ...] = ()  # no frame completed (no list allocated per packet)


def vp8_depayload(payload: bytes) -> bytes:
    """Strip the VP8 payload descriptor (RFC 7741 4.2); a fast aiortc.codecs.vp8_depayload."""
    size = 1
    if payload[0] & 0x80:  # X: extension byte
        ext = payload[1]
        size = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            size += 2 if payload[2] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            size += 1
        if ext & 0x30:  # T or K: TID/KEYIDX
            size += 1
    if len(payload) <= size:
        raise ValueError("VP8 payload descriptor without data")
    return payload[size:]


def _ssrc(p: ForwardedPacket) -> object:
    return p.extra.get("ssrc") if p.extra else None


class VideoAssembler:
    """Packets of one video track in, complete frames out (starting at a keyframe)."""

    def __init__(self, codec: str, on_loss: Callable[[], None] | None = None) -> None:
        if codec.upper() not in ("VP8", "H264"):
            raise ValueError(f"unsupported video codec {codec}")
        self.codec = codec.upper()
        self._depayload = vp8_depayload if self.codec == "VP8" else h264_depayload
        self._is_key = vp8_is_keyframe if self.codec == "VP8" else h264_is_keyframe
        self._on_loss = on_loss
        self._highest: int | None = None  # extended sequence numbers (unwrapped inline)
        self._pending: dict[int, ForwardedPacket] = {}
        self._next: int | None = None  # extended seq that starts the next frame
        self._scan = 0  # first seq of the current frame not yet seen
        self._marker: int | None = None  # lowest pending packet with the marker bit
        self.lost_frames = 0
        self.discarded_packets = 0

    def reset(self) -> None:
        """Forget everything (packets were dropped before us): wait for a keyframe."""
        self.discarded_packets += len(self._pending)
        self._pending.clear()
        self._next = None
        self._marker = None
        self._highest = None

    def push(self, p: ForwardedPacket) -> Sequence[EncodedFrame]:
        seq = p.sequence
        highest = self._highest
        if highest is None:
            ext = self._highest = seq
        else:
            ext = highest + ((seq - highest + 0x8000) & 0xFFFF) - 0x8000
            if ext > highest:
                self._highest = ext
        pending = self._pending
        start = self._next
        if start is None:
            if p.keyframe:
                self._start_at(ext)
            elif len(pending) >= MAX_PENDING:
                self.reset()
        elif ext < start:
            return _NONE  # duplicate or too late
        pending[ext] = p
        marker = self._marker
        if p.marker and (marker is None or ext < marker):
            marker = self._marker = ext
        start = self._next
        head = pending.get(start) if start is not None else None
        # A frame can only complete on its marker, on a packet filling a gap before a
        # pending marker, or when the next frame's timestamp shows up (marker lost).
        frames: Sequence[EncodedFrame]
        if p.marker or head is None or p.timestamp != head.timestamp \
                or marker is not None and ext < marker:
            frames = self._drain()
            self._marker = min((s for s, q in pending.items() if q.marker), default=None) \
                if pending else None
            start = self._next
            if start is None or not pending:
                return frames
            head = pending.get(start)
        else:
            frames = _NONE
        assert start is not None
        if ext - start > GAP_PACKETS or p.arrival - (
                head.arrival if head is not None else min(pending.items())[1].arrival) \
                > GAP_SECONDS:
            self._lose()
            frames = [*frames, *self._drain()]
        return frames

    def flush(self) -> list[EncodedFrame]:
        frames = self._drain()
        self.reset()
        return frames

    def _start_at(self, ext: int) -> None:
        self._next = self._scan = ext
        for old in [s for s in self._pending if s < ext]:
            del self._pending[old]
            self.discarded_packets += 1

    def _lose(self) -> None:
        """A gap will not fill: drop up to the next keyframe start and ask for one."""
        self.lost_frames += 1
        assert self._next is not None
        restart = min((s for s, q in self._pending.items() if q.keyframe and s > self._next),
                      default=None)
        for s in [s for s in self._pending if restart is None or s < restart]:
            del self._pending[s]
            self.discarded_packets += 1
        if restart is None:
            self._next = None
        else:
            self._start_at(restart)
        self._marker = min((s for s, q in self._pending.items() if q.marker), default=None)
        if self._on_loss is not None:
            self._on_loss()

    def _drain(self) -> list[EncodedFrame]:
        out: list[EncodedFrame] = []
        pending = self._pending
        while self._next is not None and self._next in pending:
            start = self._next
            ts = pending[start].timestamp
            end = self._scan  # packets start.._scan-1 are known present, same timestamp
            complete = lost = False
            while True:
                q = pending.get(end)
                if q is None:
                    break
                if q.timestamp != ts:
                    # The next frame began but this one never got its marker: its last
                    # packet was lost (or its publisher was replaced mid-frame).
                    for s in range(start, end):
                        del pending[s]
                        self.discarded_packets += 1
                    self._next = end - 1  # so that a keyframe starting at ``end`` counts
                    self._lose()
                    lost = True
                    break
                if q.marker:
                    complete = True
                    break
                end += 1
            if lost:
                continue  # from the next keyframe, if it is here already
            if not complete:
                self._scan = end
                break
            packets = [pending.pop(s) for s in range(start, end + 1)]
            self._next = self._scan = end + 1
            frame = self._frame(packets)
            if frame is not None:
                out.append(frame)
        return out

    def _frame(self, packets: list[ForwardedPacket]) -> EncodedFrame | None:
        first = packets[0]
        try:
            data = b"".join([self._depayload(q.payload) for q in packets])
        except (ValueError, IndexError):
            self.lost_frames += 1
            self.discarded_packets += len(packets)
            self._next = None  # undecodable: wait for the next keyframe
            if self._on_loss is not None:
                self._on_loss()
            return None
        return EncodedFrame(first.track, first.timestamp, data, self._is_key(data),
                            first.arrival, first.ntp_time, _ssrc(first))


class AudioReorder:
    """Opus packets of one audio track in, in sequence order, out (one frame each)."""

    def __init__(self) -> None:
        self._highest: int | None = None  # extended sequence numbers (unwrapped inline)
        self._heap: list[tuple[int, int, ForwardedPacket]] = []
        self._last: int | None = None
        self._n = 0

    def reset(self) -> None:
        self._heap.clear()
        self._last = None
        self._highest = None

    def push(self, p: ForwardedPacket) -> Sequence[EncodedFrame]:
        seq = p.sequence
        highest = self._highest
        if highest is None:
            ext = self._highest = seq
        else:
            ext = highest + ((seq - highest + 0x8000) & 0xFFFF) - 0x8000
            if ext > highest:
                self._highest = ext
        last = self._last
        if last is not None and ext <= last:
            return _NONE  # duplicate or too late
        heap = self._heap
        if not heap and (last is None or ext == last + 1):  # in order: no wait
            self._last = ext
            extra = p.extra
            return (EncodedFrame(p.track, p.timestamp, p.payload, True, p.arrival, p.ntp_time,
                                 extra.get("ssrc") if extra else None),)
        self._n += 1
        heapq.heappush(heap, (ext, self._n, p))
        out: list[EncodedFrame] = []
        while heap and (self._last is None or heap[0][0] == self._last + 1
                        or len(heap) > AUDIO_REORDER):
            ext, _, q = heapq.heappop(heap)
            self._last = ext
            out.append(EncodedFrame(q.track, q.timestamp, q.payload, True, q.arrival,
                                    q.ntp_time, _ssrc(q)))
        return out

    def flush(self) -> list[EncodedFrame]:
        out = [EncodedFrame(q.track, q.timestamp, q.payload, True, q.arrival, q.ntp_time,
                            _ssrc(q)) for _, _, q in sorted(self._heap)]
        self.reset()
        return out
