"""Bit-exact forwarding: what a staff viewer reassembles is exactly what the citizen sent
(VP8, H.264, Opus) — proof that nothing is decoded or re-encoded on the way."""

from __future__ import annotations

import pytest

from madoguchi.bench.media import Clip, ReceivedFrame, citizen_client, split_annexb, staff_client
from sfu.sfu import LocalSfu
from tests.fixtures.sfu import join_citizen, join_staff


def assert_bit_exact(received: list[ReceivedFrame], sent: list[tuple[int, bytes]],
                     codec: str, min_frames: int) -> None:
    """Every received frame equals the sent frame with the same relative RTP timestamp,
    and no sent frame is missing between the first and the last received one."""
    assert len(received) >= min_frames, f"only {len(received)} frames received"
    by_ts = {pts: data for pts, data in sent}

    def same(a: bytes, b: bytes | None) -> bool:
        if b is None:
            return False
        return split_annexb(a) == split_annexb(b) if codec == "H264" else a == b

    first = received[0]
    # align: the first received frame is one of the sent frames (try each candidate)
    starts = [pts for pts, data in sent if same(first.data, data)]
    assert starts, "the first received frame was never sent: it was transformed"
    matched = None
    for base in starts:
        if all(same(f.data, by_ts.get(base + f.timestamp - first.timestamp))
               for f in received):
            matched = base
            break
    assert matched is not None, "a received frame differs from the frame sent at its time"
    span = [pts for pts, _ in sent
            if matched <= pts <= matched + received[-1].timestamp - first.timestamp]
    assert len(span) == len(received), "frames missing between first and last"


async def run_pair(sfu: LocalSfu, clip: Clip, video_frames: int = 45, audio_frames: int = 65):
    """Citizen and viewer connected until the viewer has the given numbers of frames."""
    room = sfu.room("bit-exact")
    citizen = citizen_client(clip, keep_sent=True)
    staff = staff_client(clip.codec)
    try:
        await join_citizen(room, citizen)
        await join_staff(room, "v1", staff)
        await staff.collectors["video"].wait_frames(video_frames)
        await staff.collectors["audio"].wait_frames(audio_frames)
        return citizen, staff
    finally:
        await staff.close()
        await citizen.close()


async def test_vp8_video_and_opus_bit_exact(sfu: LocalSfu, vp8_clip: Clip) -> None:
    citizen, staff = await run_pair(sfu, vp8_clip)
    video = staff.collectors["video"].frames
    assert video[0].keyframe, "a viewer must start on a keyframe"
    assert_bit_exact(video, citizen.video.sent, "VP8", min_frames=40)
    audio = staff.collectors["audio"].frames
    assert_bit_exact(audio, citizen.audio.sent, "opus", min_frames=60)


async def test_h264_video_bit_exact(h264_sfu: LocalSfu, h264_clip: Clip) -> None:
    citizen, staff = await run_pair(h264_sfu, h264_clip)
    video = staff.collectors["video"].frames
    assert video[0].keyframe
    assert_bit_exact(video, citizen.video.sent, "H264", min_frames=40)


async def test_transformed_frames_would_fail(vp8_clip: Clip) -> None:
    """The comparison itself can fail: a re-encoded (altered) frame is detected."""
    sent = [(i * 3000, f.data) for i, f in enumerate(vp8_clip.video[:10])]
    received = [ReceivedFrame(i * 3000, d, False, 0.0) for i, (_, d) in enumerate(sent)]
    assert_bit_exact(received, sent, "VP8", min_frames=5)
    received[3] = ReceivedFrame(3 * 3000, received[3].data[:-1] + bytes([received[3].data[-1] ^ 0xFF]), False, 0.0)
    with pytest.raises(AssertionError):
        assert_bit_exact(received, sent, "VP8", min_frames=5)
