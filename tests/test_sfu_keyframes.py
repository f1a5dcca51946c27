"""Keyframes: a late joiner starts on a keyframe the SFU asked for (PLI relayed upstream),
and a viewer's PLI/FIR reaches the citizen as a PLI and brings a new keyframe."""

from __future__ import annotations

import asyncio
import time

from aiortc.rtp import RTCP_PSFB_FIR, RtcpPsfbPacket

from madoguchi.bench.media import ClientPeer, Clip, citizen_client, staff_client
from sfu.sfu import LocalSfu
from tests.fixtures.sfu import join_citizen, join_staff
from tests.fixtures.wait import wait_until


def video_receiver(client: ClientPeer):
    return next(t.receiver for t in client.pc.getTransceivers() if t.kind == "video")



async def test_late_joiner_starts_on_a_requested_keyframe(sfu: LocalSfu, vp8_clip: Clip) -> None:
    # The clip has ONE keyframe and the replay loops past it: a viewer joining later can
    # only start on a keyframe the SFU asked the citizen for (no timing threshold needed).
    assert vp8_clip.keyframe_indexes == [0]
    room = sfu.room("late")
    events: list[tuple[str, dict]] = []
    room.on_event(lambda n, d: events.append((n, d)))
    citizen = citizen_client(vp8_clip, keep_sent=True, loop_from=1)
    staff = staff_client("VP8")
    try:
        await join_citizen(room, citizen)
        assert citizen.video is not None
        await wait_until(lambda: len(citizen.video.sent) >= 30, what="1 s of citizen video")
        requests_before = citizen.video.keyframe_requests
        await join_staff(room, "late-viewer", staff)
        connected = time.monotonic()
        video = staff.collectors["video"]
        await video.wait_frames(1)
        assert video.first_frame_at is not None
        print(f"late joiner: first frame {(video.first_frame_at - connected) * 1000:.0f} ms "
              "after DTLS up")
        assert video.frames[0].keyframe, "the first frame a late joiner gets is a keyframe"
        assert citizen.video.keyframe_requests > requests_before, "no PLI reached the citizen"
        first = [d for n, d in events if n == "first_frame"]
        assert first and first[0]["viewer"] == "late-viewer"
    finally:
        await staff.close()
        await citizen.close()


async def test_viewer_pli_and_fir_bring_new_keyframes(sfu: LocalSfu, vp8_clip: Clip) -> None:
    room = sfu.room("pli")
    citizen = citizen_client(vp8_clip)
    staff = staff_client("VP8")
    try:
        await join_citizen(room, citizen)
        await join_staff(room, "v", staff)
        video = staff.collectors["video"]
        await video.wait_frames(5)
        receiver = video_receiver(staff)
        await wait_until(lambda: receiver.getSynchronizationSources(), what="a source")
        ssrc = receiver.getSynchronizationSources()[0].source
        await asyncio.sleep(0.4)  # past the SFU's 300 ms PLI rate limit

        for kind in ("pli", "fir"):
            requests = citizen.video.keyframe_requests
            keys = sum(f.keyframe for f in video.frames)
            if kind == "pli":
                await receiver._send_rtcp_pli(ssrc)
            else:
                fir = RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1234, media_ssrc=0,
                                     fci=ssrc.to_bytes(4, "big") + b"\x01\0\0\0")
                await receiver._send_rtcp(fir)
            await wait_until(lambda r=requests: citizen.video.keyframe_requests > r,
                             what=f"{kind} relayed upstream")
            await wait_until(lambda k=keys: sum(f.keyframe for f in video.frames) > k,
                             what=f"a new keyframe after {kind}")
            await asyncio.sleep(0.4)
    finally:
        await staff.close()
        await citizen.close()


async def test_pli_flood_is_rate_limited(sfu: LocalSfu, vp8_clip: Clip) -> None:
    room = sfu.room("flood")
    citizen = citizen_client(vp8_clip)
    staff = staff_client("VP8")
    try:
        await join_citizen(room, citizen)
        await join_staff(room, "v", staff)
        await staff.collectors["video"].wait_frames(3)
        receiver = video_receiver(staff)
        await wait_until(lambda: receiver.getSynchronizationSources(), what="a source")
        ssrc = receiver.getSynchronizationSources()[0].source
        await asyncio.sleep(0.4)
        before = citizen.video.keyframe_requests
        start = time.monotonic()
        for _ in range(100):
            await receiver._send_rtcp_pli(ssrc)
            await asyncio.sleep(0.01)
        await wait_until(lambda: citizen.video.keyframe_requests > before, what="a PLI relayed")
        await asyncio.sleep(0.4)  # the last one the limiter may still send
        # the bound scales with the time the flood took, however slow the machine
        elapsed = time.monotonic() - start
        relayed = citizen.video.keyframe_requests - before
        assert relayed <= elapsed / 0.3 + 2, f"{relayed} PLIs relayed in {elapsed:.1f}s"
    finally:
        await staff.close()
        await citizen.close()


async def test_viewer_that_falls_behind_skips_to_next_keyframe(sfu: LocalSfu,
                                                               vp8_clip: Clip) -> None:
    """No per-viewer queue: a leg whose socket backlog is too long drops video from the
    next frame boundary to the next keyframe (requested), then resumes without a
    sequence gap; every frame the viewer gets is complete and unaltered."""
    room = sfu.room("skip")
    citizen = citizen_client(vp8_clip, keep_sent=True)
    staff = staff_client("VP8")
    try:
        await join_citizen(room, citizen)
        await join_staff(room, "v", staff)
        video = staff.collectors["video"]
        await video.wait_frames(10)
        await asyncio.sleep(0.4)
        track = room.tracks["citizen-video"]
        leg = track.legs[0]
        requests = citizen.video.keyframe_requests
        leg.backlogged = lambda: True  # type: ignore[method-assign]
        await wait_until(lambda: leg.waiting_keyframe and track.skipped_backlog > 0,
                         what="the backlogged leg to skip")
        await asyncio.sleep(0.2)  # frames already on the wire arrive
        frozen = len(video.frames)
        await asyncio.sleep(0.2)
        assert len(video.frames) <= frozen + 1  # nothing new while skipping
        del leg.backlogged  # the socket drained
        await video.wait_frames(frozen + 15)
        assert citizen.video.keyframe_requests > requests, "no keyframe asked for the skip"
        # where frames were skipped (a timestamp jump), the next frame is a keyframe
        stamps = [f.timestamp for f in video.frames]
        jumps = [i for i in range(1, len(stamps)) if stamps[i] - stamps[i - 1] > 3000]
        assert jumps, "no frames were skipped"
        assert all(video.frames[i].keyframe for i in jumps), "a skip did not end on a keyframe"
        sent = {d for _, d in citizen.video.sent}
        assert all(f.data in sent for f in video.frames), "a frame arrived altered or partial"
        assert leg.rtx == 0, "the skip left sequence gaps that the viewer NACKed"
    finally:
        await staff.close()
        await citizen.close()
