"""Review benchmark: server CPU per concurrent recording review against a live forwarded
pair, and the time from asking for a review to its first frame.

``scripts/bench review --reviews N --seconds S`` records a 640x480 VP8 ~1 Mbit/s 30 fps +
Opus clip with the real recorder (sealed segments on disk), then, side by side on this
machine:

- live: N citizen -> staff pairs through the SFU in its own process (as ``bench sfu``);
- review: N aiortc reviewers of that recording, each its own ``ReviewSession`` (decrypt
  one segment at a time, demux, packetise, pace, forward) in a server process of its own.

CPU is the server process's user+sys seconds per second of media per pair / per review,
over the window after warm-up. First frame: offer sent -> first complete keyframe at the
reviewer (includes unwrapping nothing: the data key is given; reading the manifest, the
first segment's decryption and demux, ICE and DTLS). Prints a table and
``RESULT reviews=N review_cpu=X live_cpu=Y ratio=X/Y first_frame_ms_p50=F ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from madoguchi.clock import SystemClock
from madoguchi.config import RecordingConfig
from recorder.datakey import data_key_id
from recorder.reader import RecordingReader
from recorder.recorder import Recorder

from .media import ClientPeer, load_clip, staff_client
from .record import packetize
from .sfu_bench import CLIP_PARAMS, ServerProcess, run_load

CID = "bench-review"


def make_recording(folder: Path, repeat: int) -> tuple[bytes, float]:
    """Record the benchmark clip (keyframes every 2 s) ``repeat`` times over; (key, s)."""
    clip = load_clip(**{**CLIP_PARAMS, "gop_seconds": 2.0})
    audio = clip.audio
    packets = packetize(clip.codec, clip.fps, [(f.data, f.keyframe) for f in clip.video],
                        audio, audio, repeat=repeat)
    key = os.urandom(32)
    rec = Recorder(CID, key, data_key_id(key), RecordingConfig(queue_packets=1_000_000),
                   folder)
    rec.start()
    for p in packets:
        rec.on_packet(p)
    rec.close_blocking()
    if rec.status != "stopped":
        raise RuntimeError(f"recording failed: {rec.status}")
    return key, RecordingReader(folder, CID, key).manifest().duration


async def start_review(folder: str, key_hex: str, offer: str, host: str) -> tuple[Any, str]:
    """(in the server process) one review session of the benchmark recording."""
    from review.session import ReviewSession
    from sfu.candidates import CandidatePolicy
    from sfu.peer import PeerSettings
    from sfu.replay import Replay

    reader = RecordingReader(Path(folder), CID, bytes.fromhex(key_hex))
    holder: dict[str, ReviewSession] = {}
    settings = PeerSettings(host_addresses=[host],
                            candidate_policy=CandidatePolicy.from_config([f"{host}/32"]))
    replay = Replay(f"r{time.monotonic_ns()}", CID, settings, "VP8",
                    on_state=lambda s: holder["s"].peer_state(s),
                    on_keyframe_request=lambda r: holder["s"].keyframe_requested(r))

    async def exists() -> bool:
        return True

    session = holder["s"] = ReviewSession(
        review_id=replay.id, consultation_id=CID, reader=reader, replay=replay,
        deadline=time.time() + 86400, clock=SystemClock(), still_exists=exists,
        on_update=lambda state: None, on_end=lambda s, r: None)
    answer = await replay.connect(offer)
    session.start()
    return session, answer


def segment_cost(folder: Path, key: bytes) -> tuple[float, float]:
    """(ms to decrypt + demux one segment, its seconds of media), mean over all segments."""
    reader = RecordingReader(folder, CID, key)
    segments = reader.manifest().segments
    cpu = time.thread_time()
    for s in segments:
        reader.frames(s.index)
    cpu = time.thread_time() - cpu
    return cpu / len(segments) * 1000, sum(s.duration for s in segments) / len(segments)


async def run_reviews(folder: Path, key: bytes, reviews: int, seconds: float,
                      warmup: float) -> dict[str, Any]:
    server = ServerProcess("review", uvloop=False)
    await server.start()
    viewers: list[ClientPeer] = []
    first: list[float] = []
    try:
        starts = []
        for _ in range(reviews):
            v = staff_client("VP8", mode="packets")
            viewers.append(v)
            offer = await v.offer()
            start = time.monotonic()
            reply = await server.call("review", folder=str(folder), key=key.hex(), sdp=offer)
            await v.accept(reply["sdp"])
            await asyncio.wait_for(v.connected.wait(), 20)
            starts.append(start)
        await asyncio.sleep(warmup)
        for v, start in zip(viewers, starts, strict=True):
            col = v.collectors.get("video")
            if col is not None and col.first_keyframe_at is not None:
                first.append((col.first_keyframe_at - start) * 1000)
            for c in v.collectors.values():
                c.counting = True
        cpu0, t0 = server.cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = server.cpu(), time.monotonic()
        for v in viewers:
            for c in v.collectors.values():
                c.counting = False
        expected = received = 0
        for v in viewers:
            for c in v.collectors.values():
                e, r = c.expected_received()
                expected += e
                received += r
    finally:
        for v in viewers:
            await v.close()
        await server.stop()
    return {"cpu": (cpu1 - cpu0) / (t1 - t0) / reviews, "first_ms": first,
            "loss_pct": 100.0 * (expected - received) / expected if expected else 0.0,
            "packets": received}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench review", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, default=4, help="concurrent reviews (4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (3)")
    parser.add_argument("--no-live", action="store_true", help="skip the live reference")
    args = parser.parse_args(argv)
    n = max(1, args.reviews)
    with tempfile.TemporaryDirectory(prefix="madoguchi-bench-review-") as tmp:
        folder = Path(tmp)
        repeat = max(1, int((args.seconds + args.warmup + 10) // 10) + 1)
        key, duration = make_recording(folder, repeat)
        seg_ms, seg_s = segment_cost(folder, key)
        print(f"recording: {duration:.0f} s of 640x480 VP8 ~1 Mbit/s 30 fps + 2x Opus, "
              f"segments of ~{seg_s:.1f} s; decrypt+demux {seg_ms:.1f} ms CPU per segment")
        review = asyncio.run(run_reviews(folder, key, n, args.seconds, args.warmup))
    live: dict[str, Any] | None = None
    if not args.no_live:
        clip = load_clip(**CLIP_PARAMS)
        live = asyncio.run(run_load("sfu", clip, n, args.seconds, args.warmup, False))
    p50 = statistics.median(review["first_ms"]) if review["first_ms"] else float("nan")
    worst = max(review["first_ms"]) if review["first_ms"] else float("nan")
    print(f"{'':<28}{'CPU s/s per stream':>20}")
    print(f"{'review (per reviewer)':<28}{review['cpu']:>20.4f}")
    live_cpu = float(live["cpu_per_pair"]) if live else float("nan")
    if live:
        print(f"{'live pair (per pair)':<28}{live_cpu:>20.4f}")
    print(f"review click-to-first-frame: p50 {p50:.0f} ms, max {worst:.0f} ms "
          f"({len(review['first_ms'])} reviewers); review loss {review['loss_pct']:.2f} %")
    ratio = review["cpu"] / live_cpu if live else float("nan")
    print(f"RESULT reviews={n} review_cpu={review['cpu']:.4f} live_cpu={live_cpu:.4f} "
          f"ratio={ratio:.2f} first_frame_ms_p50={p50:.0f} first_frame_ms_max={worst:.0f} "
          f"segment_decrypt_demux_ms={seg_ms:.1f} loss_pct={review['loss_pct']:.2f}")
    return 0
