"""Room behaviour: staff audio to the citizen, the data channel, events, packet sinks,
citizen reconnect (a second peer replaces the first), several viewers and the floor."""

from __future__ import annotations

import asyncio
import time

from madoguchi.bench.media import Clip, citizen_client, staff_client
from sfu.interfaces import ForwardedPacket
from sfu.sfu import LocalSfu
from tests.fixtures.sfu import join_citizen, join_staff
from tests.fixtures.wait import wait_until
from tests.test_sfu_forwarding import assert_bit_exact


class ListSink:
    def __init__(self) -> None:
        self.packets: list[ForwardedPacket] = []
        self.closed = False

    def on_packet(self, packet: ForwardedPacket) -> None:
        self.packets.append(packet)

    def on_close(self) -> None:
        self.closed = True



def metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_staff_audio_data_channel_events_and_sink(sfu: LocalSfu, vp8_clip: Clip) -> None:
    forwarded_before = metric("madoguchi_sfu_forwarded_packets_total", kind="video")
    rr_before = metric("madoguchi_sfu_subscriber_loss_ratio_count", kind="video")
    peers_before = metric("madoguchi_sfu_active_peers", role="staff")
    room = sfu.room("room-basics")
    events: list[tuple[str, dict]] = []
    room.on_event(lambda n, d: events.append((n, dict(d))))
    sink = ListSink()
    room.add_sink(sink)
    citizen = citizen_client(vp8_clip)
    staff = staff_client("VP8", talk=vp8_clip, keep_sent=True)
    assert room.send_to_citizen({"type": "link"}) is False  # nobody connected yet
    await join_citizen(room, citizen)
    await join_staff(room, "officer-1", staff)

    # staff audio reaches the citizen, bit for bit
    await citizen.collectors["audio"].wait_frames(40)
    assert_bit_exact(citizen.collectors["audio"].frames, staff.audio.sent, "opus", 40)

    # the data channel carries JSON to the citizen
    await wait_until(lambda: room.send_to_citizen(
        {"type": "link", "url": "https://city.example/hoiku", "title": "保育所"}),
        what="data channel open")
    await wait_until(lambda: citizen.messages, what="data channel message")
    assert '"title": "保育所"' in citizen.messages[0]

    names = [n for n, _ in events]
    for name in ("citizen_connected", "citizen_media", "staff_connected", "first_frame"):
        assert name in names, f"missing event {name}: {names}"
    assert ("staff_connected", {"viewer": "officer-1"}) in events

    # the citizen's RTCP SR gives packets a wall-clock time (aiortc sends one per ~1 s)
    await wait_until(lambda: any(p.ntp_time is not None for p in sink.packets
                                 if p.track == "citizen-video"), what="an SR-timed packet")
    timed = [p for p in sink.packets if p.track == "citizen-video" and p.ntp_time][-1]
    # against the wall clock when it arrived (not now: a loaded machine may be late here)
    arrived = time.time() - (time.monotonic() - timed.arrival)
    assert abs(timed.ntp_time - arrived) < 2.0

    # metrics: packets forwarded (flushed once a second), viewer RRs, peers
    await wait_until(lambda: metric("madoguchi_sfu_forwarded_packets_total", kind="video")
                     > forwarded_before, what="forwarded packets metric")
    await wait_until(lambda: metric("madoguchi_sfu_subscriber_loss_ratio_count", kind="video")
                     > rr_before, what="a viewer RR in the metrics")
    assert metric("madoguchi_sfu_active_peers", role="staff") == peers_before + 1

    await room.disconnect_staff("officer-1")
    assert metric("madoguchi_sfu_active_peers", role="staff") == peers_before
    assert ("staff_disconnected", {"viewer": "officer-1"}) in events
    await staff.close()
    await citizen.close()
    await wait_until(lambda: "citizen_disconnected" in [n for n, _ in events],
                     what="citizen_disconnected")

    # the sink saw every track, in the documented shape
    tracks = {p.track for p in sink.packets}
    assert {"citizen-video", "citizen-audio", "staff-audio"} <= tracks
    video = [p for p in sink.packets if p.track == "citizen-video"]
    assert video[0].keyframe and video[0].codec == "VP8" and video[0].clock_rate == 90000
    seqs = [p.sequence for p in video]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    await room.close()
    assert sink.closed


async def test_citizen_reconnect_replaces_peer_and_video_continues(
        sfu: LocalSfu, vp8_clip: Clip, vp8_clip_b: Clip) -> None:
    room = sfu.room("reconnect")
    events: list[str] = []
    room.on_event(lambda n, d: events.append(n))
    sink = ListSink()
    room.add_sink(sink)
    first = citizen_client(vp8_clip)
    second = citizen_client(vp8_clip_b, keep_sent=True, start_index=50)
    staff = staff_client("VP8")
    try:
        await join_citizen(room, first)
        await join_staff(room, "v", staff)
        video = staff.collectors["video"]
        await video.wait_frames(10)
        before = len(video.frames)
        old_peer = room.citizen
        await join_citizen(room, second)  # the phone switched networks
        assert room.citizen is not old_peer and old_peer.closed
        assert "citizen_disconnected" not in events  # a replacement, not an end
        await video.wait_frames(before + 30)
        after = video.frames[before:]
        second_sent = {d for _, d in second.video.sent}
        from_second = [f for f in after if f.data in second_sent]
        assert len(from_second) >= 20, "the viewer does not get the new peer's video"
        assert from_second[0].keyframe
        # the recorder's timeline stays continuous across the switch
        seqs = [p.sequence for p in sink.packets if p.track == "citizen-video"]
        gaps = [(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:], strict=False)]
        assert all(g == 1 for g in gaps), f"sequence jumps: {set(gaps)}"
        ts = [p.timestamp for p in sink.packets if p.track == "citizen-video"]
        assert all(((b - a) & 0xFFFFFFFF) < 90000 for a, b in zip(ts, ts[1:], strict=False))
    finally:
        await staff.close()
        await first.close()
        await second.close()


async def test_two_viewers_floor_goes_to_remaining_speaker(sfu: LocalSfu, vp8_clip: Clip) -> None:
    room = sfu.room("floor")
    citizen = citizen_client(vp8_clip)
    a = staff_client("VP8", talk=vp8_clip, keep_sent=True)
    b = staff_client("VP8", talk=vp8_clip, keep_sent=True)
    try:
        await join_citizen(room, citizen)
        await join_staff(room, "a", a)
        await join_staff(room, "b", b)
        heard = citizen.collectors["audio"]
        await heard.wait_frames(30)
        # both viewers get the citizen's video
        await a.collectors["video"].wait_frames(5)
        await b.collectors["video"].wait_frames(5)
        a_sent = {d for _, d in a.audio.sent}
        assert all(f.data in a_sent for f in heard.frames[:25]), "the floor is not a's"
        n = len(heard.frames)
        await room.disconnect_staff("a")
        await a.close()
        await heard.wait_frames(n + 40)
        b_sent = {d for _, d in b.audio.sent}
        later = heard.frames[n + 10:]
        assert later and all(f.data in b_sent for f in later), "b did not get the floor"
        # one continuous track: the citizen's receiver saw no timestamp jump back
        stamps = [f.timestamp for f in heard.frames]
        assert all(y > x for x, y in zip(stamps, stamps[1:], strict=False))
    finally:
        await b.close()
        await citizen.close()


async def test_sender_reports_carry_the_citizens_clock(sfu: LocalSfu, vp8_clip: Clip) -> None:
    """Viewers lip-sync audio and video from our RTCP SRs: each SR's (NTP, RTP) pair must
    match the citizen's own SR mapping once our timestamp offsets are taken out."""
    from aiortc.rtp import RtcpSrPacket

    from sfu.rtcpstats import signed32, unix_from_ntp64

    room = sfu.room("sr")
    citizen = citizen_client(vp8_clip)
    staff = staff_client("VP8")
    received: dict[str, list] = {"video": [], "audio": []}
    for t in staff.pc.getTransceivers():
        original = t.receiver._handle_rtcp_packet

        async def capture(packet, kind=t.kind, original=original):  # type: ignore[no-untyped-def]
            if isinstance(packet, RtcpSrPacket):
                received[kind].append(packet)
            await original(packet)

        t.receiver._handle_rtcp_packet = capture
    try:
        await join_citizen(room, citizen)
        await join_staff(room, "v", staff)
        await wait_until(lambda: len(received["video"]) >= 2 and len(received["audio"]) >= 2,
                         what="two SRs per kind at the viewer")
        for kind, name, rate in (("video", "citizen-video", 90000),
                                 ("audio", "citizen-audio", 48000)):
            track = room.tracks[name]
            stream = track.source
            assert stream is not None and stream.sr is not None
            assert track.sr_map is not None, "SRs are not derived from the citizen's SR"
            leg = track.legs[0]
            sr_ntp, sr_rtp = stream.sr
            pub_unix = stream.clock.to_local(sr_ntp)
            for sr in received[kind][-2:]:
                src_rtp = (sr.sender_info.rtp_timestamp - leg.map.ts_off
                           - track.map.ts_off) & 0xFFFFFFFF
                claimed = unix_from_ntp64(sr.sender_info.ntp_timestamp)
                expected = pub_unix + signed32(src_rtp - sr_rtp) / rate
                assert abs(claimed - expected) < 0.03, (kind, claimed - expected)
    finally:
        await staff.close()
        await citizen.close()


async def test_media_sockets_get_large_receive_buffers(sfu: LocalSfu, vp8_clip: Clip) -> None:
    import socket

    room = sfu.room("rcvbuf")
    citizen = citizen_client(vp8_clip)
    try:
        await join_citizen(room, citizen)
        conn = room.citizen.pc.getTransceivers()[0].receiver.transport.transport._connection
        for protocol in conn._protocols:
            sock = protocol.transport.get_extra_info("socket")
            # Linux reports twice the requested size (bookkeeping overhead)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 4 * 1024 * 1024
    finally:
        await citizen.close()


async def test_offer_without_ssrc_lines_still_forwards_and_syncs(sfu: LocalSfu,
                                                                 vp8_clip: Clip) -> None:
    """Browsers need not signal SSRCs: media and the citizen's SRs are still matched."""
    room = sfu.room("no-ssrc")
    citizen = citizen_client(vp8_clip)
    staff = staff_client("VP8")
    try:
        offer = await citizen.offer()
        stripped = "\r\n".join(ln for ln in offer.split("\r\n")
                               if not ln.startswith(("a=ssrc:", "a=ssrc-group:")))
        assert "a=ssrc:" not in stripped
        await citizen.accept(await room.connect_citizen(stripped))
        await asyncio.wait_for(citizen.connected.wait(), 10)
        await join_staff(room, "v", staff)
        await staff.collectors["video"].wait_frames(20)
        await staff.collectors["audio"].wait_frames(20)
        await wait_until(lambda: room.tracks["citizen-video"].sr_map is not None
                         and room.tracks["citizen-audio"].sr_map is not None,
                         what="the citizen's SRs")
    finally:
        await staff.close()
        await citizen.close()
