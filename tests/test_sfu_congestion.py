"""Congestion control toward the citizen's phone: transport-cc feedback built from known
arrival patterns (byte for byte and field by field), receiver reports that count
retransmission-recovered packets as lost, coalesced keyframe requests, the answer's
transport-cc / Opus FEC lines, and the bounded receive queue."""

from __future__ import annotations

import asyncio
import re
import struct
import time

from madoguchi import metrics
from madoguchi.bench.media import Clip, citizen_client
from sfu import ice, twcc
from sfu.keyframerequest import KeyframeRequester
from sfu.rtcpstats import ReceiveStats
from sfu.sfu import LocalSfu
from tests.fixtures.sfu import join_citizen


def decode(packet: bytes) -> dict:
    """An independent reading of the draft's format (what the phone's browser parses)."""
    first, pt, length = struct.unpack_from("!BBH", packet)
    assert first >> 6 == 2 and first & 0x1F == 15 and pt == 205
    assert len(packet) == (length + 1) * 4
    end = len(packet) - (packet[-1] if first & 0x20 else 0)
    sender, media, base, count, ref_fb = struct.unpack_from("!IIHHI", packet, 4)
    ref = ref_fb >> 8
    if ref & 0x800000:
        ref -= 1 << 24
    symbols: list[int] = []
    pos = 20
    while len(symbols) < count:
        (chunk,) = struct.unpack_from("!H", packet, pos)
        pos += 2
        if not chunk & 0x8000:
            symbols += [(chunk >> 13) & 3] * (chunk & 0x1FFF)
        elif not chunk & 0x4000:
            symbols += [(chunk >> (13 - i)) & 1 for i in range(14)]
        else:
            symbols += [(chunk >> (12 - 2 * i)) & 3 for i in range(7)]
    symbols = symbols[:count]
    t = ref * 64_000
    arrivals: list[int | None] = []
    for s in symbols:
        if s == 0:
            arrivals.append(None)
            continue
        if s == 1:
            delta = packet[pos]
            pos += 1
        else:
            (delta,) = struct.unpack_from("!h", packet, pos)
            pos += 2
        t += delta * 250
        arrivals.append(t)
    assert pos <= end
    return {"sender": sender, "media": media, "base": base, "count": count, "ref": ref,
            "fb": ref_fb & 0xFF, "arrivals": arrivals}


def test_feedback_bytes_for_a_known_pattern() -> None:
    # seq 5 at 320 ms, 6 lost, 7 at 448, 8 at 512, 9 and 10 lost, 11 at 768 ms
    got = twcc.feedback_packet(0x11223344, 0x55667788, 5, 9,
                               [320_000, None, 448_000, 512_000, None, None, 768_000])
    want = bytes.fromhex(
        "afcd0007"        # V=2 P=1 FMT=15, PT=205 (RTPFB), length 7 words
        "11223344"        # sender SSRC
        "55667788"        # media SSRC
        "0005" "0007"     # base sequence 5, 7 statuses
        "000005" "09"     # reference time 5 x 64 ms = 320 ms, feedback count 9
        "d282"            # 2-bit vector: small, lost, large, large, lost, lost, large
        "00" "0200" "0100" "0400"  # deltas in 250 us: 0, +128 ms, +64 ms, +256 ms
        "000003")         # padding to 32 bits (last octet = padding length)
    assert got == want


def test_feedback_chunk_types() -> None:
    # 20 packets 1 ms apart: one run-length chunk of "small delta" symbols
    run = twcc.feedback_packet(1, 2, 65530, 0, [1_000_000 + i * 1000 for i in range(20)])
    assert run[20:22] == bytes.fromhex("2014")  # 0 | 01 | 20
    # reference 15 x 64 ms = 960 ms: the first delta is 40 ms (160 x 250 us), then 1 ms
    assert run[22:42] == bytes([160]) + bytes([4] * 19)
    d = decode(run)
    assert d["base"] == 65530 and d["count"] == 20 and d["ref"] == 15
    assert d["arrivals"] == [1_000_000 + i * 1000 for i in range(20)]
    # alternate received/lost, all small: a 1-bit vector chunk of 14 symbols
    alt = [1_000_000 + i * 1000 if i % 2 == 0 else None for i in range(14)]
    one_bit = twcc.feedback_packet(1, 2, 0, 0, alt)
    assert one_bit[20:22] == bytes.fromhex("aaaa")  # 1 0 | 10101010101010
    assert decode(one_bit)["arrivals"] == alt
    # a packet that arrived earlier than the previous one (reordering): negative delta
    reordered = [2_000_000, 2_005_000, 2_001_000]
    d = decode(twcc.feedback_packet(1, 2, 0, 0, reordered))
    assert d["arrivals"] == reordered


def test_delta_rounding_does_not_drift() -> None:
    arrivals: list[int | None] = [5_000_000 + round(i * 33_333.3) for i in range(60)]
    d = decode(twcc.feedback_packet(1, 2, 0, 0, arrivals))
    for sent, back in zip(arrivals, d["arrivals"], strict=True):
        assert sent is not None and back is not None and abs(sent - back) <= 125


def test_transport_feedback_reports_each_packet_once() -> None:
    fb = twcc.TransportFeedback(sender_ssrc=7)
    fb.media_ssrc = 9
    t0 = 100.0
    pattern = {65533: 0.0, 65534: 0.002, 0: 0.004, 1: 0.009, 3: 0.010}  # 65535, 2 lost
    for seq, dt in pattern.items():
        fb.record(seq, t0 + dt)
    (p,) = fb.build()
    d = decode(p)
    assert (d["sender"], d["media"], d["base"], d["count"], d["fb"]) == (7, 9, 65533, 7, 0)
    got = [None if a is None else a - 100_000_000 for a in d["arrivals"]]
    assert got == [0, 2000, None, 4000, 9000, None, 10000]
    assert fb.build() == []  # nothing new
    fb.record(2, t0 + 0.011)  # its range was reported (as lost): too late
    assert fb.late == 1 and fb.build() == []
    fb.record(5, t0 + 0.020)  # 4 lost
    d = decode(fb.build()[0])
    assert (d["base"], d["count"], d["fb"]) == (4, 2, 1)
    assert d["arrivals"][0] is None and d["arrivals"][1] == 100_020_000


def test_transport_feedback_splits_long_windows() -> None:
    fb = twcc.TransportFeedback(sender_ssrc=1)
    n = twcc.MAX_RECEIVED * 2 + 10
    for i in range(n):
        fb.record(i, 10.0 + i * 0.0005)
    packets = fb.build()
    assert len(packets) == 3
    decoded = [decode(p) for p in packets]
    assert [d["fb"] for d in decoded] == [0, 1, 2]
    assert [d["base"] for d in decoded] == [0, twcc.MAX_RECEIVED, 2 * twcc.MAX_RECEIVED]
    arrivals = [a for d in decoded for a in d["arrivals"]]
    assert len(arrivals) == n and None not in arrivals
    assert all(len(p) < 1200 for p in packets)
    # a gap longer than a 16-bit delta (8.19 s) starts a new feedback packet
    fb.record(n, 20.0)
    fb.record(n + 2, 30.0)  # n + 1 lost
    decoded = [decode(p) for p in fb.build()]
    assert [(d["base"], d["count"]) for d in decoded] == [(n, 1), (n + 1, 2)]
    assert decoded[1]["arrivals"] == [None, 30_000_000]


def test_fraction_lost_counts_retransmissions_as_lost() -> None:
    s = ReceiveStats(90000)
    for i, ext in enumerate([100, 101, 103, 104]):  # 102 lost on the first try
        s.add(ext, i * 3000, 1.0 + i / 30, newest=True)
    s.add(102, 2 * 3000, 1.2, newest=False, recovered=True)  # ... and recovered by RTX
    r = s.report(1234)
    assert r.packets_lost == 1 and r.fraction_lost == 51  # still 1 of 5 lost
    s.add(105, 5 * 3000, 1.3, newest=True)
    s.add(105, 5 * 3000, 1.4, newest=False, recovered=True)  # spurious retransmission
    assert s.report(1234).fraction_lost == 0


async def test_keyframe_requests_are_coalesced_to_one_per_second() -> None:
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    r = KeyframeRequester(lambda: sent.append(loop.time()))
    t0 = loop.time()
    r.request("join")  # none in the last second: at once
    assert len(sent) == 1
    for reason in ("pli", "join", "skip", "api"):  # shared: one pending request
        r.request(reason)
        await asyncio.sleep(0.05)
    assert len(sent) == 1

    async def until(count: int) -> None:
        while len(sent) < count:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(until(2), 30)
    assert sent[1] - t0 >= 0.99
    await asyncio.sleep(0.2)
    assert len(sent) == 2
    r.request("pli")
    r.keyframe_received()  # a natural keyframe served the waiting viewer
    await asyncio.sleep(1.0)
    assert len(sent) == 2
    r.close()


def with_transport_cc(offer: str, ext_id: int = 5) -> str:
    """A browser's offer: the video section offers transport-cc (aiortc never does)."""
    out, video = [], False
    for line in offer.split("\r\n"):
        if line.startswith("m="):
            video = line.startswith("m=video")
        out.append(line)
        if video and line.startswith("a=rtpmap:") and "VP8" in line:
            pt = line.split(":")[1].split()[0]
            out.append(f"a=rtcp-fb:{pt} transport-cc")
        if video and line.startswith("a=mid:"):
            out.append(f"a=extmap:{ext_id} {twcc.URI}")
    return "\r\n".join(out)


async def test_answer_negotiates_transport_cc_and_opus_fec(sfu: LocalSfu,
                                                           vp8_clip: Clip) -> None:
    room = sfu.room("cc-answer")
    citizen = citizen_client(vp8_clip)
    try:
        answer = await room.connect_citizen(with_transport_cc(await citizen.offer()))
        video = answer[answer.index("m=video"):]
        video = video[:video.index("m=", 2)] if "m=" in video[2:] else video
        assert f"a=extmap:5 {twcc.URI}" in video
        vp8 = re.search(r"a=rtpmap:(\d+) VP8/90000", video)
        assert vp8 and f"a=rtcp-fb:{vp8.group(1)} transport-cc" in video
        opus = re.search(r"a=rtpmap:(\d+) opus/48000", answer)
        assert opus and re.search(rf"a=fmtp:{opus.group(1)} .*useinbandfec=1", answer)
        assert re.search(rf"a=fmtp:{opus.group(1)} .*usedtx=0", answer)
        assert room.citizen is not None
        stream = room.citizen.streams[0]
        assert stream.kind == "video" and stream.twcc_id == 5 and stream.twcc is not None
        await citizen.accept(answer)
        await asyncio.wait_for(citizen.connected.wait(), 10)
    finally:
        await citizen.close()


async def test_no_transport_cc_without_the_offer(sfu: LocalSfu, vp8_clip: Clip) -> None:
    room = sfu.room("cc-plain")
    citizen = citizen_client(vp8_clip)
    try:
        await join_citizen(room, citizen)
        assert room.citizen is not None and room.citizen.streams[0].twcc is None
        assert twcc.URI not in (citizen.pc.remoteDescription.sdp or "")
    finally:
        await citizen.close()


async def test_receive_queue_is_bounded_and_drops_are_counted() -> None:
    """Datagrams beyond the bound are dropped and counted, never queued without limit;
    once the DTLS task catches up, datagrams are accepted again."""
    queued: list[bytes] = []

    class Connection:
        def data_received(self, data: bytes, component: int) -> None:
            queued.append(data)

        def request_received(self, message: object, addr: object, protocol: object) -> None:
            pass

    class IceTransport:
        _connection = Connection()

        async def _recv(self) -> bytes:
            return queued.pop(0)

    before = metrics.SFU_RECEIVE_DROPPED._value.get()
    stamps = ice.ArrivalStamps(limit=50)
    transport = IceTransport()
    stamps.attach(transport)
    for i in range(80):
        transport._connection.data_received(bytes([i]), 1)
    assert len(queued) == 50 and stamps.dropped == 30
    assert metrics.SFU_RECEIVE_DROPPED._value.get() - before == 30
    for _ in range(10):
        await transport._recv()
    transport._connection.data_received(b"late", 1)
    assert len(queued) == 41 and queued[-1] == b"late" and stamps.dropped == 30


async def test_upstream_nack_repeats_after_the_measured_round_trip() -> None:
    """A lost retransmission is asked for again after ~1.5 round trips (measured from our
    first NACK to its retransmission), not after a fixed 100 ms."""
    from aiortc import RTCPeerConnection

    from sfu.publisher import NACK_REPEAT_AFTER, NACK_REPEAT_MIN, PeerClock, PublisherStream

    async def deliver(*_args: object) -> None:
        pass

    pc = RTCPeerConnection(ice.rtc_configuration([]))
    try:
        t = pc.addTransceiver("video", direction="recvonly")
        stream = PublisherStream(kind="video", receiver=t.receiver, rtcp_ssrc=1,
                                 clock=PeerClock(), deliver=deliver, label="citizen-video",
                                 consultation="c")
        stream.ssrc = 1234
        assert stream.nack_repeat_after() == NACK_REPEAT_AFTER  # nothing measured yet
        stream.nack([10, 11])
        first = stream._nacked[10][0]
        stream.stamps.current = first + 0.02  # the retransmission of 10 came back
        stream._rtx_arrived(10)
        assert stream.rtt is not None and abs(stream.rtt - 0.02) < 1e-9
        assert abs(stream.nack_repeat_after() - 0.03) < 1e-9
        stream.nack([11])
        assert stream._nacked[11] == (first, 1)  # too early to ask again
        await asyncio.sleep(0.035)
        stream.nack([11])  # its retransmission was lost too: asked again
        assert stream._nacked[11][1] == 2
        stream.stamps.current = time.monotonic() + 0.5
        stream._rtx_arrived(11)  # answers one of two NACKs: no round-trip sample
        assert abs(stream.rtt - 0.02) < 1e-9
        stream.rtt = 0.001
        assert stream.nack_repeat_after() == NACK_REPEAT_MIN
        stream.close()
    finally:
        await pc.close()
