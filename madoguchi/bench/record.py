"""Recording cost: what the recorder adds to forwarding, per publisher->viewer pair.

Two uses:

- Inside the SFU benchmark (``scripts/bench sfu ... --record``): the bench's SFU process
  runs in mode "record", where :class:`RoomRecorders` attaches a recorder to every room;
  :func:`overhead_line` prints that process's extra CPU per pair as a percentage of
  forwarding alone (target <= 15 %). Recording noise: compare runs at similar load.
- Standalone (``python -m madoguchi.bench.record --pairs 10 --seconds 20``): replays
  pre-encoded 640x480 ~1 Mbit/s VP8 + Opus (+ staff Opus) as forwarded packets, paced in
  real time on an event loop (as the SFU calls ``on_packet``), once into null sinks and once
  into recorders; the CPU difference is the recording cost per pair and media-second.

:func:`packetize` turns pre-encoded frames into ``ForwardedPacket`` objects with aiortc's
own packetisers (``pack()``); the recorder tests use it too.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder

from sfu.interfaces import ForwardedPacket

VIDEO_PT = {"VP8": 96, "H264": 102}
OPUS_PT = 111
TARGET_PERCENT = 15.0
# Raw RTP forwarding measured on this machine (shared/notes/aiortc.md), CPU-s per media-s
# per pair at N=10; used only when no forwarding figure is measured alongside.
REFERENCE_FORWARDING_CPU = 0.023


def packetize(codec: str, fps: int, video: Sequence[tuple[bytes, bool]],
              citizen_audio: Sequence[bytes], staff_audio: Sequence[bytes], *,
              start: float = 1000.0, video_seq: int = 65500, video_ts: int = 0xFFFF0000,
              audio_seq: int = 65530, audio_ts: int = 0xFFFFF000, staff_delay: float = 0.2,
              repeat: int = 1, ssrc_base: int = 1111) -> list[ForwardedPacket]:
    """Every packet of a pre-encoded clip as the SFU hands it to sinks, by arrival time.

    ``video`` holds (frame bytes, keyframe) at ``fps``; audio lists hold 20 ms Opus
    packets. Sequence numbers and timestamps start near their wrap-around on purpose; with
    ``repeat`` the clip plays several times on one continuing timeline.
    """
    packer = Vp8Encoder() if codec == "VP8" else H264Encoder()
    out: list[ForwardedPacket] = []
    seq = video_seq
    tb = Fraction(1, fps)
    n = len(video)
    for r in range(repeat):
        for i, (data, key) in enumerate(video):
            k = r * n + i
            packet = av.Packet(data)
            packet.pts = k
            packet.time_base = tb
            payloads, ts = packer.pack(packet)
            arrival = start + k / fps
            for j, payload in enumerate(payloads):
                out.append(ForwardedPacket(
                    track="citizen-video", codec=codec, clock_rate=90000,
                    payload_type=VIDEO_PT[codec], sequence=seq & 0xFFFF,
                    timestamp=(video_ts + ts) & 0xFFFFFFFF, marker=j == len(payloads) - 1,
                    payload=payload, keyframe=key and j == 0, arrival=arrival + j * 1e-4,
                    extra={"ssrc": ssrc_base}))
                seq += 1
    for track, packets, delay, ssrc, base_seq in (
            ("citizen-audio", citizen_audio, 0.005, ssrc_base + 1, audio_seq),
            ("staff-audio", staff_audio, staff_delay, ssrc_base + 2, 1000)):
        m = len(packets)
        for r in range(repeat):
            for i, payload in enumerate(packets):
                k = r * m + i
                out.append(ForwardedPacket(
                    track=track, codec="opus", clock_rate=48000, payload_type=OPUS_PT,
                    sequence=(base_seq + k) & 0xFFFF,
                    timestamp=(audio_ts + k * 960) & 0xFFFFFFFF, marker=k == 0,
                    payload=payload, keyframe=False, arrival=start + delay + k * 0.02,
                    extra={"ssrc": ssrc}))
    out.sort(key=lambda p: p.arrival)
    return out


# ----------------------------------------------------------------------------- SFU bench

@dataclass
class RecordingSummary:
    recorders: int
    failed: int
    segments: int
    bytes: int
    dropped: int
    packets: int
    processing_cpu_seconds: float  # on the event loop: depacketise, timeline, mux
    writer_cpu_seconds: float  # writer threads: seal, write, fsync
    on_packet_cpu_seconds: float  # estimated: packets x measured cost of a hand-off
    media_seconds: float  # summed over recorders (wall time recorded)
    process_cpu_seconds: float  # the whole process over the same time

    @property
    def recorder_cpu_seconds(self) -> float:
        return self.processing_cpu_seconds + self.writer_cpu_seconds + \
            self.on_packet_cpu_seconds

    def line(self) -> str:
        """The recorder's own CPU inside the SFU process against the rest of that process
        over the same run (one run, so machine noise hits both alike)."""
        media = self.media_seconds or float("nan")  # pair-seconds recorded
        own = self.recorder_cpu_seconds / media
        rest = (self.process_cpu_seconds - self.recorder_cpu_seconds) / media
        return (f"# recorder in the SFU process: {own:.4f} CPU-s per media-s per pair "
                f"(mux {self.processing_cpu_seconds / media:.4f}, seal+write "
                f"{self.writer_cpu_seconds / media:.4f}, hand-off "
                f"{self.on_packet_cpu_seconds / media:.4f}); rest of the process "
                f"{rest:.4f}; recorder = {100 * own / rest:.1f} % of it; {self.segments} "
                f"segments, {self.bytes / 1e6:.1f} MB, {self.dropped} dropped, "
                f"{self.failed} failed")


def hand_off_cost(samples: int = 20000) -> float:
    """CPU seconds of one ForwardedPacket construction + on_packet (the SFU-side cost)."""
    from madoguchi.config import RecordingConfig
    from recorder.recorder import Recorder
    rec = Recorder("cost", bytes(32), "cost", RecordingConfig(queue_packets=samples + 16),
                   Path(tempfile.gettempdir()))
    rec._accepting = True  # measuring the hand-off only: no folder, no threads
    t0 = time.process_time()
    for i in range(samples):
        rec.on_packet(ForwardedPacket("citizen-video", "VP8", 90000, 96, i & 0xFFFF, i, False,
                                      b"x", False, 0.0, None))
    return (time.process_time() - t0) / samples


class RoomRecorders:
    """Attach a recorder (fresh data key, no store) to each benchmark room."""

    def __init__(self, recording_dir: Path | None = None, segment_seconds: float = 4.0) -> None:
        from madoguchi.config import RecordingConfig
        self._own_dir = recording_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="madoguchi-bench-rec-")) \
            if recording_dir is None else Path(recording_dir)
        self.cfg = RecordingConfig(segment_seconds=segment_seconds)
        self.recorders: list[Any] = []
        self._started: list[float] = []
        self._cpu0: float | None = None
        self._closed = False

    def attach(self, room: Any) -> Any:
        from recorder.datakey import data_key_id, new_data_key
        from recorder.recorder import Recorder
        if self._cpu0 is None:
            self._cpu0 = time.process_time()
        key = new_data_key()
        rec = Recorder(room.id, key, data_key_id(key), self.cfg, self.dir,
                       request_keyframe=room.request_keyframe)
        rec.start()
        room.add_sink(rec)
        room.request_keyframe()
        self.recorders.append(rec)
        self._started.append(time.monotonic())
        return rec

    async def close(self, report: bool = True) -> RecordingSummary | None:
        """Close every recorder (once; later calls return None) and summarise."""
        if self._closed:
            return None
        self._closed = True
        ended = time.monotonic()
        process_cpu = time.process_time() - (self._cpu0 or time.process_time())
        await asyncio.gather(*(r.close() for r in self.recorders))
        rs = self.recorders
        packets = sum(r.stats.packets for r in rs)
        summary = RecordingSummary(
            recorders=len(rs), failed=sum(r.status == "failed" for r in rs),
            segments=sum(r.stats.segments for r in rs), bytes=sum(r.stats.bytes for r in rs),
            dropped=sum(r.stats.dropped for r in rs), packets=packets,
            processing_cpu_seconds=sum(r.stats.processing_cpu_seconds for r in rs),
            writer_cpu_seconds=sum(r.stats.writer_cpu_seconds for r in rs),
            on_packet_cpu_seconds=packets * hand_off_cost() if packets else 0.0,
            media_seconds=sum(ended - t for t in self._started),
            process_cpu_seconds=process_cpu)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if report and rs:
            print(summary.line(), file=sys.stderr, flush=True)
        return summary


def overhead_line(forwarding_per_pair: float, recording_per_pair: float) -> str:
    """One line for the SFU bench: the SFU process's CPU-s per media-second per pair with
    recorders attached, against forwarding alone (the ``--record`` run against the plain one)."""
    extra = recording_per_pair - forwarding_per_pair
    percent = 100 * extra / forwarding_per_pair if forwarding_per_pair > 0 else float("inf")
    verdict = "within" if percent <= TARGET_PERCENT else "ABOVE"
    return (f"RECORDING overhead_cpu_per_pair={extra:.4f} forwarding={forwarding_per_pair:.4f} "
            f"forwarding_and_recording={recording_per_pair:.4f} overhead_pct={percent:.1f} "
            f"({verdict} the {TARGET_PERCENT:.0f} % target)")


# ----------------------------------------------------------------------------- standalone

class _NullSink:
    def on_packet(self, packet: ForwardedPacket) -> None:
        pass

    def on_close(self) -> None:
        pass


async def _feed(sinks: Sequence[Any], streams: Sequence[list[ForwardedPacket]]) -> float:
    """Hand every stream's packets to its sink at their arrival times; returns CPU used."""
    loop = asyncio.get_running_loop()
    merged = heapq.merge(*[[(p.arrival, n, p) for p in s] for n, s in enumerate(streams)])
    base = min(s[0].arrival for s in streams)
    t0 = loop.time()
    cpu0 = time.process_time()
    for arrival, n, packet in merged:
        wait = (arrival - base) - (loop.time() - t0)
        if wait > 0.002:
            await asyncio.sleep(wait)
        sinks[n].on_packet(packet)
    return time.process_time() - cpu0


async def _standalone(pairs: int, seconds: float, codec: str, segment_seconds: float,
                      forwarding_cpu: float) -> int:
    from madoguchi.bench.media import load_clip
    clip = load_clip(codec=codec, width=640, height=480, fps=30, seconds=10.0,
                     bitrate=1_000_000, gop_seconds=4.0)
    video = [(f.data, f.keyframe) for f in clip.video]
    repeat = max(1, int(seconds * clip.fps / len(video) + 0.999))
    streams = [packetize(codec, clip.fps, video, clip.audio, clip.audio, repeat=repeat,
                         start=1000.0 + k * 0.0073, ssrc_base=1000 * (k + 1))
               for k in range(pairs)]
    end = min(s[0].arrival for s in streams) + seconds
    streams = [[p for p in s if p.arrival < end] for s in streams]
    count = sum(len(s) for s in streams)
    print(f"recording bench: {pairs} pair(s) x {seconds:g} s of {codec} 640x480 "
          f"{clip.video_bitrate() / 1e6:.2f} Mbit/s + 2 Opus, {count} packets, real-time pacing; "
          f"load: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    base_cpu = await _feed([_NullSink() for _ in range(pairs)], streams)
    rooms = RoomRecorders(segment_seconds=segment_seconds)

    class _Room:
        def __init__(self, n: int) -> None:
            self.id = f"bench-{n}"

        def add_sink(self, sink: Any) -> None:
            pass

        def request_keyframe(self) -> None:
            pass

    recs = [rooms.attach(_Room(n)) for n in range(pairs)]
    cpu0 = time.process_time()
    feed_cpu = await _feed(recs, streams)
    summary = await rooms.close(report=False)
    assert summary is not None
    rec_cpu = time.process_time() - cpu0
    extra = max(0.0, rec_cpu - base_cpu)
    per_pair = extra / (pairs * seconds)
    percent = 100 * per_pair / forwarding_cpu
    print(f"  feeding alone: {base_cpu:.3f} CPU-s; feeding + recording: {rec_cpu:.3f} CPU-s "
          f"(feed loop {feed_cpu:.3f}; recorder's own: mux on the loop "
          f"{summary.processing_cpu_seconds:.3f}, writer threads "
          f"{summary.writer_cpu_seconds:.3f}, hand-off {summary.on_packet_cpu_seconds:.3f})")
    print(f"  recorded {summary.segments} segments, {summary.bytes / 1e6:.1f} MB sealed, "
          f"{summary.dropped} packets dropped, {summary.failed} failed")
    print(f"  recording cost: {per_pair:.4f} CPU-s per media-s per pair = {percent:.1f} % of "
          f"forwarding ({forwarding_cpu:.4f} CPU-s per media-s per pair"
          f"{' (reference from notes)' if forwarding_cpu == REFERENCE_FORWARDING_CPU else ''}"
          f"); target <= {TARGET_PERCENT:.0f} %")
    return 0 if summary.failed == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m madoguchi.bench.record",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--codec", choices=("VP8", "H264"), default="VP8")
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--forwarding-cpu", type=float, default=REFERENCE_FORWARDING_CPU,
                        help="forwarding alone, CPU-s per media-s per pair (from the SFU "
                             "bench; default: the figure in shared/notes/aiortc.md)")
    args = parser.parse_args(argv)
    return asyncio.run(_standalone(args.pairs, args.seconds, args.codec, args.segment_seconds,
                                   args.forwarding_cpu))


if __name__ == "__main__":
    sys.exit(main())
