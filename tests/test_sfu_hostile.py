"""Hostile or broken input: a clear SfuError or a clean teardown, never a crashed room,
a dead media path or a stuck task."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import pylibsrtp
import pytest
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
)

from madoguchi.bench.media import ClientPeer, Clip, citizen_client, staff_client
from sfu.candidates import CandidatePolicy
from sfu.interfaces import SfuError
from sfu.peer import PeerSettings
from sfu.sfu import LocalSfu
from tests.fixtures.sfu import join_citizen, join_staff, sfu_config
from tests.fixtures.wait import wait_until


async def test_bad_offers_get_clear_errors(sfu: LocalSfu, vp8_clip: Clip,
                                           h264_clip: Clip) -> None:
    room = sfu.room("bad-offers")
    tasks_before = len(asyncio.all_tasks())
    for bad in ("", "hello", None, 42, "v=0\r\nm=video\r\n", "x" * 100_000,
                "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
                "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n"):
        with pytest.raises(SfuError):
            await room.connect_citizen(bad)  # type: ignore[arg-type]

    # H.264 only, to a VP8 room: the error names the codec the room needs
    h264_only = citizen_client(h264_clip)
    try:
        with pytest.raises(SfuError, match="VP8"):
            await room.connect_citizen(await h264_only.offer())
    finally:
        await h264_only.close()

    good = citizen_client(vp8_clip)
    offer = await good.offer()
    with pytest.raises(SfuError, match="Opus"):
        await room.connect_citizen(offer.replace("opus/48000/2", "G7221/16000"))
    with pytest.raises(SfuError, match="ICE"):
        await room.connect_citizen("\r\n".join(
            ln for ln in offer.split("\r\n") if not ln.startswith("a=ice-ufrag")))
    doubled = offer.replace("\r\nm=audio", "\r\n" + offer[offer.index("m=video"):
                                                          offer.index("m=audio")] + "m=audio")
    with pytest.raises(SfuError):
        await room.connect_citizen(doubled)
    with pytest.raises(SfuError):
        await room.connect_staff("", offer)
    with pytest.raises(SfuError, match="VP8"):
        await room.connect_citizen(offer.replace("VP8/90000", "AV1/90000"))

    assert room.citizen is None and not room.staff
    await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before + 1,
                     what="the refused offers' tasks to end")
    # the same room still works after all that
    try:
        await join_citizen(room, good)
    finally:
        await good.close()


def garbage_rtp(rng: random.Random, pt: int, ssrc: int, seq: int) -> list[bytes]:
    hdr = struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, rng.getrandbits(32), ssrc)
    return [
        hdr,                                                   # empty payload
        hdr + b"\x90",                                         # truncated VP8 descriptor
        hdr + b"\x90\x80",                                     # X+I, no picture id
        hdr + bytes([0xFF]) * 3,                               # every flag set
        hdr + rng.randbytes(rng.randrange(1, 1200)),           # random payload
        struct.pack("!BBHII", 0x90, pt, seq & 0xFFFF, 0, ssrc) + b"\xbe\xde\x00\x02"
        + b"\x1f\xff\xfe\xfd\xfc\xfb\xfa\xf9" + b"\x10\x00",   # bad extension values
        struct.pack("!BBHII", 0x90, pt, seq & 0xFFFF, 0, ssrc) + b"\xbe\xde\xff\xff",
        struct.pack("!BBHII", 0x8F, pt, seq & 0xFFFF, 0, ssrc),  # 15 CSRC, none there
        struct.pack("!BBHII", 0xA0, pt, seq & 0xFFFF, 0, ssrc) + b"\x01\x02\xff",  # padding
        struct.pack("!BBHII", 0x80, pt, (seq + 30000) & 0xFFFF, 0, ssrc) + b"\x10\0",
    ]


def garbage_rtcp(rng: random.Random, ssrc: int) -> list[bytes]:
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=ssrc)
    nack.lost = sorted({rng.getrandbits(16) for _ in range(200)})
    return [
        b"\x80\xc8\x00\x01" + rng.randbytes(4),                 # SR, too short
        b"\x81\xc9\x00\x07" + rng.randbytes(28),                # RR, random block
        b"\x8f\xcd\x00\x02" + rng.randbytes(8),                 # RTPFB fmt 15
        bytes(nack),
        bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=ssrc)),
        bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0,
                             fci=b"REMB" + rng.randbytes(4))),
        bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=b"xxxx")),
        bytes(RtcpByePacket(sources=[ssrc, 12345])),
        b"\x80\xc8\xff\xff" + rng.randbytes(40),                # length lies
    ]


async def test_garbage_rtp_and_rtcp_keep_the_room_alive(sfu: LocalSfu, vp8_clip: Clip) -> None:
    room = sfu.room("garbage")
    citizen = citizen_client(vp8_clip)
    staff = staff_client("VP8", talk=vp8_clip)
    rng = random.Random(7)
    try:
        await join_citizen(room, citizen)
        await join_staff(room, "v", staff)
        video = staff.collectors["video"]
        await video.wait_frames(5)
        citizen_dtls = citizen.pc.getTransceivers()[0].sender.transport
        staff_dtls = staff.pc.getTransceivers()[0].receiver.transport
        leg = room.tracks["citizen-video"].legs[0]
        async def send(dtls, data: bytes) -> None:
            try:
                await dtls._send_rtp(data)
            except pylibsrtp.Error:
                pass  # too broken for the sender's own SRTP: the SFU would never see it

        for round_ in range(30):
            # authenticated garbage from both peers (SRTP-protected by their DTLS keys)
            for pt in (96, 97, 111, 0, 127):
                for data in garbage_rtp(rng, pt, rng.getrandbits(32), round_ * 7):
                    await send(citizen_dtls, data)
                    await send(staff_dtls, data)
            for data in garbage_rtcp(rng, leg.ssrc):
                await send(staff_dtls, data)
                await send(citizen_dtls, data)
            await asyncio.sleep(0.01)
        # unauthenticated datagrams straight at the SFU's media socket
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        conn = room.citizen.pc.getTransceivers()[0].receiver.transport.transport._connection
        port = conn.local_candidates[0].port
        for _ in range(300):
            first = rng.choice([0, 1, 22, 23, 128, 129, 200, 255])
            sock.sendto(bytes([first]) + rng.randbytes(rng.randrange(0, 1400)),
                        ("127.0.0.1", port))
        sock.close()
        count = len(video.frames)
        await video.wait_frames(count + 30)
        assert room.citizen.pc.connectionState == "connected"
        assert room.staff["v"].pc.connectionState == "connected"
    finally:
        await staff.close()
        await citizen.close()


def vanish(client: ClientPeer) -> None:
    """The client disappears without a word: its sockets close, nothing is sent."""
    for t in client.pc.getTransceivers():
        conn = t.receiver.transport.transport._connection
        for protocol in list(conn._protocols):
            protocol.transport.abort()


async def test_vanishing_peers_are_dropped_cleanly(vp8_clip: Clip) -> None:
    settings = PeerSettings(host_addresses=["127.0.0.1"], peer_timeout=1.0,
                            candidate_policy=CandidatePolicy.from_config(["127.0.0.1/32"]))
    sfu = LocalSfu(sfu_config(), settings=settings)
    room = sfu.room("vanish")
    events: list[tuple[str, dict]] = []
    room.on_event(lambda n, d: events.append((n, d)))
    citizen = citizen_client(vp8_clip)
    gone = staff_client("VP8")
    stays = staff_client("VP8")
    try:
        await join_citizen(room, citizen)
        await join_staff(room, "gone", gone)
        await join_staff(room, "stays", stays)
        await gone.collectors["video"].wait_frames(3)
        vanish(gone)
        await wait_until(lambda: ("staff_disconnected", {"viewer": "gone"}) in events,
                         what="the vanished viewer to be dropped")
        assert "gone" not in room.staff
        assert len(room.tracks["citizen-video"].legs) == 1
        n = len(stays.collectors["video"].frames)
        await stays.collectors["video"].wait_frames(n + 20)  # the other viewer is fine
        vanish(citizen)
        await wait_until(lambda: ("citizen_disconnected", {}) in [(a, b) for a, b in events],
                         what="the vanished citizen to be dropped")
        assert room.citizen is None
    finally:
        for c in (gone, stays, citizen):
            await c.close()
        await sfu.close()

    def leftovers() -> list[asyncio.Task]:
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                and "sfu" in repr(t.get_coro())]
    await wait_until(lambda: not leftovers(), what="the SFU's tasks to end")


async def test_closed_room_refuses_and_close_is_idempotent(sfu: LocalSfu, vp8_clip: Clip) -> None:
    room = sfu.room("closed")
    citizen = citizen_client(vp8_clip)
    offer = await citizen.offer()
    await room.close()
    await room.close()
    with pytest.raises(SfuError, match="closed"):
        await room.connect_citizen(offer)
    assert sfu.room("closed") is not room  # a new room for the same consultation
    await citizen.close()
