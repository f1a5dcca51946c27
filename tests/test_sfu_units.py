"""Unit tests of the SFU's pure parts: rewriting, history, keyframe detection, the floor,
keyframe request rate limiting, RTCP statistics, offer sanitising and NAT rewriting."""

from __future__ import annotations

import asyncio

import pytest

from madoguchi.bench.media import Clip, split_annexb
from sfu import keyframe, sdp
from sfu.candidates import CandidatePolicy, SectionBudget
from sfu.floor import Floor
from sfu.interfaces import SfuError
from sfu.keyframerequest import KeyframeRequester
from sfu.rewriter import LegMap, SeqUnwrapper, SourceMap
from sfu.rtcpstats import ReceiveStats, ntp64, unix_from_ntp64
from sfu.rtphistory import RtpHistory


def test_unwrapper_wraps_reorders_and_probes_restarts() -> None:
    u = SeqUnwrapper()
    e1, _ = u.unwrap(65534)
    e2, new2 = u.unwrap(65535)
    e3, new3 = u.unwrap(0)
    e4, new4 = u.unwrap(65533)  # late
    assert (e2 - e1, e3 - e2, new2, new3, new4) == (1, 1, True, True, False)
    assert e4 == e1 - 1
    assert u.unwrap(30000) is None  # wild jump: dropped ...
    again = u.unwrap(30001)  # ... unless the next one continues from it: restart
    assert again is not None and u.restarts == 1
    assert u.unwrap(30002) == (again[0] + 1, True)


def test_source_map_is_continuous_across_sources() -> None:
    m = SourceMap(90000)
    m.switch(first_ext=70000, first_ts=1000, now=10.0, min_step=3000)
    assert (70000 + m.seq_off) & 0xFFFF == 70000 & 0xFFFF and m.ts_off == 0  # identity
    m.advance(70000 + m.seq_off + 99, 1000 + 99 * 3000, now=13.3)
    last_seq, last_ts = m.last_ext, m.last_ts
    m.switch(first_ext=5, first_ts=4_000_000_000, now=13.8, min_step=3000)
    assert 5 + m.seq_off == last_seq + 1
    assert (4_000_000_000 + m.ts_off) & 0xFFFFFFFF == (last_ts + 45000) & 0xFFFFFFFF


def test_leg_map_starts_without_gaps() -> None:
    leg = LegMap()
    leg.last_seq = 65535
    leg.start_at(1234)
    assert (1234 + leg.seq_off) & 0xFFFF == 0
    leg.last_seq = 10
    leg.start_at(99999)  # skip ahead: the leg continues at 11
    assert (99999 + leg.seq_off) & 0xFFFF == 11 and leg.start_ext == 99999


def test_history_keeps_recent_packets_only() -> None:
    h = RtpHistory(size=8)
    for seq in range(65530, 65536):
        h.put(seq, bytes([seq & 0xFF]))
    for seq in range(0, 4):
        h.put(seq, bytes([seq]))
    assert h.get(3) == b"\x03" and h.has(65535)
    assert h.get(65530) is None and h.get(65531) is None  # overwritten
    assert h.get(11) is None  # same slot as 3, different seq


def test_vp8_keyframe_detection(vp8_clip: Clip) -> None:
    key, delta = vp8_clip.video[0].data, vp8_clip.video[1].data
    # descriptors: plain start / extended with 15-bit picture id / not a start
    for descr in (b"\x10", b"\x90\x80\x81\x02", b"\x90\xe0\x81\x02\x05\x40"):
        assert keyframe.vp8_keyframe(descr + key)
        assert not keyframe.vp8_keyframe(descr + delta)
    assert not keyframe.vp8_keyframe(b"\x00" + key)  # continuation packet
    for junk in (b"", b"\x10", b"\x90", b"\x90\x80", b"\x90\x80\x81", b"\xff" * 3):
        keyframe.vp8_keyframe(junk)  # never raises


def test_h264_keyframe_detection(h264_clip: Clip) -> None:
    nals = split_annexb(h264_clip.video[0].data)
    types = [n[0] & 0x1F for n in nals]
    assert 7 in types and 5 in types
    sps = nals[types.index(7)]
    idr = nals[types.index(5)]
    stap = bytes([24]) + len(sps).to_bytes(2, "big") + sps
    assert keyframe.h264_keyframe(sps) and keyframe.h264_keyframe(stap)
    assert keyframe.h264_keyframe(bytes([28, 0x80 | 5]) + idr[1:10])   # FU-A start
    assert not keyframe.h264_keyframe(bytes([28, 5]) + idr[1:10])      # FU-A middle
    assert not keyframe.h264_keyframe(bytes([1]) + b"\0" * 10)         # P slice
    for junk in (b"", bytes([24]), bytes([24, 0xFF, 0xFF, 7]), bytes([28])):
        keyframe.h264_keyframe(junk)


def test_floor_rule() -> None:
    f = Floor(release_after=0.5)
    a, b = object(), object()
    loud, quiet = (False, 30), (False, 127)
    assert f.admit(a, loud, 0.0) and f.holder is a
    assert not f.admit(b, loud, 0.1)          # a holds while speaking
    assert f.admit(a, loud, 0.2)
    assert f.admit(a, quiet, 0.3)             # the holder's silence still goes out
    assert not f.admit(b, loud, 0.6)          # a spoke 0.4 s ago: not yet
    assert f.admit(b, loud, 0.71) and f.holder is b  # a silent > 0.5 s: b takes over
    assert not f.admit(a, quiet, 0.8)
    f.remove(b)
    assert f.holder is None and f.admit(a, None, 0.9)  # no level extension = speaking


async def test_keyframe_requests_are_rate_limited() -> None:
    sent: list[float] = []
    loop = asyncio.get_running_loop()
    r = KeyframeRequester(lambda: sent.append(loop.time()), min_interval=0.1)
    start = loop.time()
    for _ in range(20):
        r.request("pli")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)
    # at most one per 0.1 s of however long the loop above really took
    assert 2 <= len(sent) <= (loop.time() - start) / 0.1 + 1
    assert all(b - a >= 0.099 for a, b in zip(sent, sent[1:], strict=False))
    r.request("pli")
    r.request("pli")
    r.keyframe_received()  # the pending one is no longer needed
    await asyncio.sleep(0.15)
    n = len(sent)
    r.close()
    r.request("pli")
    assert len(sent) == n


def test_receive_stats_report() -> None:
    s = ReceiveStats(90000)
    for i, ext in enumerate([100, 101, 103, 104]):  # 102 lost
        s.add(ext, i * 3000, 1.0 + i / 30, newest=True)
    r = s.report(1234)
    assert r.ssrc == 1234 and r.packets_lost == 1 and r.highest_sequence == 104
    assert r.fraction_lost == 51  # 1 of 5 expected = 0.2 * 256, rounded down
    assert s.report(1234).fraction_lost == 0
    t = 1_800_000_000.25
    assert abs(unix_from_ntp64(ntp64(t)) - t) < 1e-6


def test_offer_sanitising() -> None:
    offer = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
             "a=candidate:1 1 udp 2122260223 abcd-1234.local 5000 typ host\r\n"
             "a=candidate:2 1 udp 2122260223 127.0.0.1 5001 typ host\r\n")
    loopback = SectionBudget(CandidatePolicy.from_config(["127.0.0.1/32"]))
    clean = sdp.sanitize_offer(offer, loopback)
    assert ".local" not in clean and "127.0.0.1 5001" in clean
    assert clean.count("a=end-of-candidates") == 1
    for bad in ("", "   ", None, b"v=0", "v" * (sdp.MAX_SDP_BYTES + 1)):
        with pytest.raises(SfuError):
            sdp.sanitize_offer(bad)


def test_answer_nat_rewrite() -> None:
    answer = ("c=IN IP4 10.0.0.5\r\n"
              "a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n"
              "a=candidate:2 1 udp 2130706431 10.9.9.9 40001 typ host\r\n")
    out = sdp.rewrite_answer_addresses(answer, {"10.0.0.5": "203.0.113.7"})
    assert "c=IN IP4 203.0.113.7" in out and "203.0.113.7 40000" in out
    assert "10.9.9.9 40001" in out and "10.0.0.5" not in out


def test_install_uvloop_helper() -> None:
    from sfu.loop import install_uvloop

    before = asyncio.get_event_loop_policy()
    try:
        assert install_uvloop(False) is False
        assert asyncio.get_event_loop_policy() is before
        assert install_uvloop(True) is True
        policy = asyncio.get_event_loop_policy()
        assert type(policy).__module__.startswith("uvloop")
        loop = policy.new_event_loop()
        assert type(loop).__module__.startswith("uvloop")
        loop.close()
    finally:
        asyncio.set_event_loop_policy(before)


class FakeStream:
    def __init__(self) -> None:
        self.epoch = 1
        self.sr = None
        self.media_pt = 96
        self.requests: list[str] = []
        self.keyframes = KeyframeRequester(lambda: None)
        self.on_sender_report = None

    def request_keyframe(self, reason: str) -> None:
        self.requests.append(reason)


class FakeLeg:
    """Stands in for a DownTrack: records what the track writes to it."""

    def __init__(self) -> None:
        from sfu.rewriter import LegMap
        self.ready = True
        self.waiting_keyframe = True
        self.map = LegMap()
        self.first_keyframe_at = None
        self.created = 0.0
        self.last_cts = -1
        self.marker_next = False
        self.backlog = False
        self.written: list[tuple[int, int, bytes]] = []  # (out seq, cts, payload)

    def backlogged(self) -> bool:
        return self.backlog

    async def write(self, cext, cts, marker, payload, padding, level) -> bool:  # type: ignore[no-untyped-def]
        out = (cext + self.map.seq_off) & 0xFFFF
        self.map.last_seq = out
        self.last_cts = cts
        self.written.append((out, cts, payload))
        return True


def vp8_packet(seq: int, ts: int, key: bool, start: bool, marker: bool):  # type: ignore[no-untyped-def]
    from aiortc.rtp import RtpPacket
    descr = b"\x10" if start else b"\x00"
    body = (b"\x00" if key else b"\x01") + bytes([seq & 0xFF]) * 20
    return RtpPacket(payload_type=96, marker=int(marker), sequence_number=seq, timestamp=ts,
                     payload=descr + body)


async def test_track_forwarding_logic() -> None:
    """Join at a keyframe, skip from a frame boundary when backlogged, resume at the next
    keyframe with no sequence gap."""
    from sfu.track import RoomTrack

    track = RoomTrack("citizen-video", "video", "VP8", "c", [])
    stream = FakeStream()
    track.set_source(stream)  # type: ignore[arg-type]
    leg = FakeLeg()
    track.add_leg(leg)  # type: ignore[arg-type]
    u = SeqUnwrapper()
    frames = [  # (ts, keyframe, packets)
        (0, False, 2), (3000, True, 3), (6000, False, 3), (9000, False, 3),
        (12000, False, 2), (15000, True, 2), (18000, False, 2)]
    seq = 1000

    async def send(ts: int, key: bool, n: int, backlog_after: int | None = None) -> None:
        nonlocal seq
        for i in range(n):
            if backlog_after is not None and i == backlog_after:
                leg.backlog = True
            pkt = vp8_packet(seq, ts, key and i == 0, i == 0, i == n - 1)
            ext, newest = u.unwrap(seq)  # type: ignore[misc]
            await track.forward(stream, pkt, ext, newest, 0.0)  # type: ignore[arg-type]
            seq += 1

    await send(*frames[0])                 # before any keyframe: nothing for the leg
    assert leg.written == []
    await send(*frames[1])                 # keyframe: the leg starts here
    await send(*frames[2][:3], backlog_after=1)  # backlog mid-frame: frame completes
    assert [w[1] for w in leg.written].count(6000) == 3
    await send(*frames[3])                 # skipped, keyframe requested
    leg.backlog = False
    await send(*frames[4])                 # still waiting for a keyframe
    assert stream.requests.count("skip") >= 1 and leg.waiting_keyframe
    await send(*frames[5])                 # resumes on the keyframe
    await send(*frames[6])
    stamps = [w[1] for w in leg.written]
    assert stamps == [3000] * 3 + [6000] * 3 + [15000] * 2 + [18000] * 2
    seqs = [w[0] for w in leg.written]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert track.keyframes == 2


async def test_fast_path_parses_what_forwarding_needs() -> None:
    import struct as st

    from sfu.fastpath import RtpDispatcher

    class Stream:
        media_pt, rtx_pt, level_id, twcc_id = 111, None, 3, 0

        def __init__(self) -> None:
            self.got: list = []

        async def on_rtp(self, packet, arrival_ms):  # type: ignore[no-untyped-def]
            self.got.append(packet)

    stream = Stream()
    d = RtpDispatcher([stream])  # type: ignore[list-item]
    d.configure()
    head = st.pack("!BBHII", 0x80 | 0x10 | 0x20 | 1, 0x80 | 111, 65535, 4_000_000_000, 0xCAFE)
    csrc = st.pack("!I", 7)
    ext = b"\xbe\xde\x00\x02" + bytes([0x10, 0x61]) + bytes([0x30, 0x80 | 42]) + b"\0\0\0\0"
    packet = head + csrc + ext + b"opus-payload" + b"\0\0\x03"
    assert await d(packet) is True
    p = stream.got[-1]
    assert (p.payload_type, p.marker, p.sequence_number, p.timestamp, p.ssrc) == \
        (111, 1, 65535, 4_000_000_000, 0xCAFE)
    assert p.payload == b"opus-payload" and p.padding_size == 3
    assert p.extensions.audio_level == (True, 42)
    two_byte = b"\x10\x00\x00\x02" + bytes([3, 1, 0x05]) + b"\0" * 5
    plain = st.pack("!BBHII", 0x90, 111, 1, 2, 3) + two_byte + b"x"
    assert await d(plain) is True and stream.got[-1].audio_level == (False, 5)
    # unknown payload type: aiortc's own path; malformed: dropped, counted
    assert await d(st.pack("!BBHII", 0x80, 96, 1, 2, 3) + b"x") is False
    assert await d(b"\x80\x6f\x00") is False
    for bad in (st.pack("!BBHII", 0x90, 111, 1, 2, 3) + b"\xbe\xde\x00\x09",
                st.pack("!BBHII", 0xA0, 111, 1, 2, 3) + b"x\x09"):
        assert await d(bad) is True
    assert d.malformed == 2 and len(stream.got) == 2


def test_sfu_ice_configuration_is_explicit() -> None:
    from sfu import ice

    cfg = ice.rtc_configuration([])
    assert cfg.iceServers == []  # never aiortc's default public STUN server
    cfg = ice.rtc_configuration(["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"])
    assert [s.urls for s in cfg.iceServers] == ["stun:127.0.0.1:3478"]
    assert ice.bind_addresses(["203.0.113.7=10.0.0.5", "127.0.0.1"]) == ["10.0.0.5",
                                                                          "127.0.0.1"]
    assert ice.advertised_map(["203.0.113.7=10.0.0.5", "127.0.0.1"]) == {
        "10.0.0.5": "203.0.113.7"}
