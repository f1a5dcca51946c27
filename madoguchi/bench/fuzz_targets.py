"""Fuzz targets: every in-process parser that takes outside input, as a hypothesis
strategy plus a check that raises on a contract violation.

The contract of each parser is what its caller relies on: bad input raises the one
documented error (``SfuError``, ``SegmentError``, ``ConfigError``, ...) or is dropped and
counted; anything else escaping, or a result that breaks an invariant, is a finding.
tests/test_fuzz.py runs each target a few hundred times; ``scripts/bench fuzz`` runs
the long campaign (madoguchi/bench/fuzz.py), with the signalling sockets as well.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import struct
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
)
from hypothesis import strategies as st

from madoguchi.config import Config, ConfigError, load_config
from recorder.bitstream import h264_size, opus_duration_samples, vp8_size
from recorder.depacketizer import AudioReorder, VideoAssembler
from recorder.manifest import Manifest, open_manifest, seal_manifest
from recorder.segment import KIND_MANIFEST, SegmentError, open_segment, seal
from sfu.fastpath import RtpDispatcher
from sfu.interfaces import ForwardedPacket, SfuError

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
LEVEL_ID, TWCC_ID = 1, 3


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]


def run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never really suspends (our stubs don't), without a loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the coroutine suspended")


# ------------------------------------------------------------------------------ RTP
@st.composite
def _extension_block(draw: Any) -> tuple[bytes, bool]:
    """An RFC 8285 header extension block (with its 4-byte head); True if well-formed."""
    two_byte = draw(st.booleans())
    elements = draw(st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)),
                             max_size=4, unique_by=lambda e: e[0]))  # an id at most once
    body = b""
    for xid, value in elements:
        if xid == LEVEL_ID:
            value = value[:1]
        elif xid == TWCC_ID:
            value = (value * 2)[:2]
        body += (bytes([xid, len(value)]) if two_byte
                 else bytes([xid << 4 | (len(value) - 1)])) + value
    body += bytes(-len(body) % 4)
    profile = 0x1000 if two_byte else 0xBEDE
    well_formed = draw(st.integers(0, 4)) > 0
    if not well_formed:
        profile = draw(st.sampled_from([0x1000, 0xBEDE, 0x100F, draw(st.integers(0, 0xFFFF))]))
        body = draw(st.sampled_from([body, body[:-1], draw(st.binary(max_size=40))]))
    words = len(body) // 4 if well_formed else draw(st.integers(0, 0xFFFF))
    return struct.pack("!HH", profile, words) + body, well_formed


@st.composite
def rtp_datagrams(draw: Any) -> tuple[bytes, bool]:
    """(datagram, well-formed): mostly valid RTP headers, some raw bytes and truncations."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200)), False
    cc = draw(st.sampled_from([0, 0, 0, 1, 15]))
    ext, ok = draw(_extension_block()) if draw(st.booleans()) else (b"", True)
    pad = draw(st.sampled_from([0, 0, 0, 1, 4, 255]))
    payload = draw(st.binary(max_size=300))
    b0 = 0x80 | (0x10 if ext else 0) | (0x20 if pad else 0) | cc
    b1 = int(draw(st.booleans())) << 7 | draw(st.sampled_from([96, 97, 111, 0, 127]))
    data = (bytes([b0, b1]) + struct.pack("!HII", draw(st.integers(0, 0xFFFF)),
                                          draw(st.integers(0, 0xFFFFFFFF)),
                                          draw(st.integers(0, 0xFFFFFFFF)))
            + bytes(4 * cc) + ext + payload + (bytes(pad - 1) + bytes([pad]) if pad else b""))
    if draw(st.integers(0, 7)) == 0:
        return data[:draw(st.integers(0, len(data)))], False
    return data, ok and not (pad and pad > len(payload) + pad)


class _StubStream:
    def __init__(self, media_pt: int, rtx_pt: int | None) -> None:
        self.media_pt, self.rtx_pt = media_pt, rtx_pt
        self.level_id, self.twcc_id = LEVEL_ID, TWCC_ID
        self.packets: list[Any] = []

    async def on_rtp(self, packet: Any, arrival_time_ms: int) -> None:
        self.packets.append(packet)


def _extension_map() -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=LEVEL_ID, uri=AUDIO_LEVEL_URI),
        RTCRtpHeaderExtensionParameters(id=TWCC_ID, uri=TWCC_URI)]))
    return m


def check_rtp(sample: tuple[bytes, bool]) -> None:
    """The fast path never raises; on well-formed packets it reads what aiortc reads."""
    data, well_formed = sample
    streams = [_StubStream(96, 97), _StubStream(111, None)]
    dispatcher = RtpDispatcher(streams)  # type: ignore[arg-type]
    dispatcher.configure()
    run_now(dispatcher(data))
    got = [p for s in streams for p in s.packets]
    if not well_formed:
        return
    ref = RtpPacket.parse(data, _extension_map())
    if ref.payload_type not in (96, 97, 111):
        assert not got, "a packet of an unknown payload type took the fast path"
        return
    assert len(got) == 1, f"a well-formed packet was not delivered ({dispatcher.malformed})"
    p = got[0]
    for name in ("payload_type", "marker", "sequence_number", "timestamp", "ssrc", "payload",
                 "padding_size"):
        assert getattr(p, name) == getattr(ref, name), name
    assert p.audio_level == ref.extensions.audio_level
    assert p.transport_sequence_number == ref.extensions.transport_sequence_number


# ----------------------------------------------------------------------------- RTCP
LEG_SSRC = 0x11223344


def _words(max_size: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size).map(lambda b: b[:len(b) // 4 * 4])


@st.composite
def rtcp_datagrams(draw: Any) -> bytes:
    """Compound RTCP built from aiortc's packet classes, then sometimes mangled."""
    ssrc = st.sampled_from([LEG_SSRC, 1, 0xFFFFFFFF])
    report = st.builds(RtcpReceiverInfo, ssrc=ssrc, fraction_lost=st.integers(0, 255),
                       packets_lost=st.integers(-(1 << 23), (1 << 23) - 1),
                       highest_sequence=st.integers(0, 0xFFFFFFFF),
                       jitter=st.integers(0, 0xFFFFFFFF), lsr=st.integers(0, 0xFFFFFFFF),
                       dlsr=st.integers(0, 0xFFFFFFFF))
    u32 = st.integers(0, 0xFFFFFFFF)
    packet = st.one_of(
        st.builds(RtcpRrPacket, ssrc=u32, reports=st.lists(report, max_size=3)),
        st.builds(RtcpSrPacket, ssrc=u32, sender_info=st.builds(
            RtcpSenderInfo, ntp_timestamp=st.integers(0, (1 << 64) - 1), rtp_timestamp=u32,
            packet_count=u32, octet_count=u32), reports=st.lists(report, max_size=2)),
        st.builds(RtcpRtpfbPacket, fmt=st.just(RTCP_RTPFB_NACK), ssrc=u32, media_ssrc=ssrc,
                  lost=st.lists(st.integers(0, 0xFFFF), max_size=40, unique=True).map(sorted)),
        st.builds(RtcpPsfbPacket, fmt=st.sampled_from([RTCP_PSFB_PLI, RTCP_PSFB_FIR]),
                  ssrc=u32, media_ssrc=ssrc, fci=_words(16)),
        st.builds(RtcpPsfbPacket, fmt=st.just(RTCP_PSFB_APP), ssrc=u32, media_ssrc=st.just(0),
                  fci=st.one_of(st.builds(pack_remb_fci, st.integers(0, (1 << 30)),
                                          st.lists(ssrc, max_size=3)),
                                _words(24))),
        st.builds(RtcpByePacket, sources=st.lists(u32, max_size=3)),
    )
    data = b"".join(bytes(p) for p in draw(st.lists(packet, min_size=1, max_size=4)))
    mangle = draw(st.integers(0, 5))
    if mangle == 1:
        data = data[:draw(st.integers(0, len(data)))]
    elif mangle == 2 and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    elif mangle == 3:
        data = draw(st.binary(max_size=120))
    return data


_legs: list[Any] = []


def _stub_leg() -> Any:
    """A real DownTrack (the viewer leg's RTCP handler) on stub sender/track/transport."""
    from sfu.subscriber import DownTrack

    if _legs:
        return _legs[0]

    sender = SimpleNamespace(_ssrc=LEG_SSRC, **{name: asyncio.Event() for name in (
        "_RTCRtpSender__rtp_started", "_RTCRtpSender__rtp_exited",
        "_RTCRtpSender__rtcp_started", "_RTCRtpSender__rtcp_exited")})
    track = SimpleNamespace(name="citizen-video", clock_rate=90000,
                            request_keyframe=lambda reason: None,
                            nack_upstream=lambda leg, seqs: None)
    leg = DownTrack(kind="video", sender=sender, track=track,  # type: ignore[arg-type]
                    consultation="fuzz", viewer="fuzz")

    async def send(data: bytes) -> None:
        return None
    leg.dtls = SimpleNamespace(_send_rtp=send)
    for seq in range(0, 0x10000, 97):
        leg.history.put(seq, b"\x80" * 20)
    _legs.append(leg)
    return leg


def check_rtcp(data: bytes) -> None:
    """aiortc's parser fails only in ways guard_transport absorbs (counted, dropped);
    whatever it accepts, the viewer leg's handler takes without an internal error."""
    try:
        packets = RtcpPacket.parse(data)
    except (ValueError, struct.error, IndexError):
        return
    leg = _stub_leg()
    for packet in packets:
        run_now(leg.on_rtcp(packet))
    assert leg._errors == 0, "the leg's RTCP handler raised"


# ------------------------------------------------------------------------------ SDP
OFFER = "\r\n".join("""v=0
o=- 4005462386 4005462386 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=msid-semantic:WMS *
m=video 57111 UDP/TLS/RTP/SAVPF 97 98
c=IN IP4 127.0.0.1
a=sendonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=mid:0
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc-group:FID 3622313397 793711813
a=ssrc:3622313397 cname:184cb1aa
a=rtpmap:97 VP8/90000
a=rtcp-fb:97 nack
a=rtcp-fb:97 nack pli
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=candidate:1657 1 udp 2130706431 127.0.0.1 57111 typ host
a=end-of-candidates
a=ice-ufrag:yueP
a=ice-pwd:byUEAOTM9NROYW8sqv6uze
a=fingerprint:sha-256 16:FC:8B:C5:20:62:65:7B:CA:6F:A4:6F:AD:BF:21:5A:AA:9F:D8:8A:AA:83:47:F4:C5:0D:FB:FC:10:F3:F6:6E
a=setup:actpass
m=audio 47085 UDP/TLS/RTP/SAVPF 96
c=IN IP4 127.0.0.1
a=sendrecv
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=mid:1
a=rtcp-mux
a=ssrc:1511464991 cname:184cb1aa
a=rtpmap:96 opus/48000/2
a=candidate:1657 1 udp 2130706431 127.0.0.1 47085 typ host
a=ice-ufrag:yueP
a=ice-pwd:byUEAOTM9NROYW8sqv6uze
a=fingerprint:sha-256 16:FC:8B:C5:20:62:65:7B:CA:6F:A4:6F:AD:BF:21:5A:AA:9F:D8:8A:AA:83:47:F4:C5:0D:FB:FC:10:F3:F6:6E
a=setup:actpass
m=application 56916 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 127.0.0.1
a=mid:2
a=sctp-port:5000
a=candidate:1657 1 udp 2130706431 foo.local 56916 typ host
a=ice-ufrag:yueP
a=ice-pwd:byUEAOTM9NROYW8sqv6uze
a=fingerprint:sha-256 16:FC:8B:C5:20:62:65:7B:CA:6F:A4:6F:AD:BF:21:5A:AA:9F:D8:8A:AA:83:47:F4:C5:0D:FB:FC:10:F3:F6:6E
a=setup:actpass""".split("\n")) + "\r\n"

_SDP_WORDS = st.sampled_from(["m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 0 RTP/AVP 0",
                              "a=rtpmap:96 H264/90000", "a=rtpmap:x", "a=fmtp:96 apt=",
                              "a=candidate:1 1 udp 1 1.2.3.4.local 9 typ host", "a=mid:",
                              "c=IN IP6 ::1", "a=ssrc:", "a=extmap:15 x", "a=setup:",
                              "a=fingerprint:sha-1 00", "m=", "a=", "v=1", "\x00", "é"])


@st.composite
def sdp_offers(draw: Any) -> str:
    """The offer above with lines dropped, duplicated, replaced or cut; or plain text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=300))
    lines = OFFER.split("\r\n")
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 4))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            lines[i] = draw(_SDP_WORDS)
        elif op == 3:
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        else:
            lines[i] = lines[i] + draw(st.text(max_size=12))
    return "\r\n".join(lines)


_rooms: dict[str, Any] = {}


def _room() -> Any:
    """One room, made on a loop of its own and idle (only its offer checks, which are
    synchronous, are used), so a synchronous test needs no running loop."""
    if "room" not in _rooms:
        from madoguchi.config import SfuConfig
        from sfu.sfu import LocalSfu

        async def make() -> Any:
            room = LocalSfu(SfuConfig(host_addresses=["127.0.0.1"], ice_servers=[])).room("fuzz")
            room._watchdog.cancel()  # no peers will ever join it
            await asyncio.gather(room._watchdog, return_exceptions=True)
            return room
        loop = asyncio.new_event_loop()
        _rooms["room"] = loop.run_until_complete(make())
        loop.close()
    return _rooms["room"]


def check_sdp(text: str) -> None:
    """The room's offer checks (before aiortc) refuse with SfuError and nothing else."""
    from sfu.candidates import SectionBudget
    room = _room()
    for role in ("citizen", "staff"):
        try:
            out = room._check_offer(text, role, SectionBudget(room.settings.candidate_policy))
        except SfuError:
            continue
        assert isinstance(out, str) and ".local " not in out


# ------------------------------------------------------------------- depacketisers
@st.composite
def _vp8_payload(draw: Any) -> bytes:
    x = draw(st.booleans())
    head = bytes([(0x80 if x else 0) | draw(st.integers(0, 0x7F))])
    if x:
        head += bytes([draw(st.integers(0, 255))]) + draw(st.binary(max_size=3))
    return head + draw(st.binary(max_size=40))


@st.composite
def _h264_payload(draw: Any) -> bytes:
    nal = st.binary(min_size=1, max_size=30)
    kind = draw(st.integers(0, 3))
    if kind == 0:  # single NAL unit
        return bytes([draw(st.integers(0, 0x7F)) & 0x7F]) + draw(st.binary(max_size=30))
    if kind == 1:  # STAP-A, lengths sometimes wrong
        out = b"\x18"
        for unit in draw(st.lists(nal, max_size=3)):
            size = len(unit) if draw(st.integers(0, 3)) else draw(st.integers(0, 0xFFFF))
            out += struct.pack("!H", size) + unit
        return out
    if kind == 2:  # FU-A with start/end bits
        return (b"\x7c" + bytes([draw(st.sampled_from([0x85, 0x05, 0x45, 0xC5, 0x81]))])
                + draw(st.binary(max_size=30)))
    return draw(st.binary(max_size=20))


@st.composite
def packet_runs(draw: Any, codec: str) -> list[ForwardedPacket]:
    """A run of forwarded packets: frames of 1-3 packets, reordered, lost, duplicated,
    sequence numbers wrapping, arrival times with stalls."""
    payload = {"VP8": _vp8_payload(), "H264": _h264_payload(),
               "opus": st.binary(max_size=20)}[codec]
    seq = draw(st.integers(0, 0xFFFF))
    ts = draw(st.integers(0, 0xFFFFFFFF))
    arrival = 0.0
    out: list[ForwardedPacket] = []
    for _ in range(draw(st.integers(1, 12))):
        n = draw(st.integers(1, 3))
        for k in range(n):
            arrival += draw(st.sampled_from([0.0, 0.001, 0.02, 0.6]))
            out.append(ForwardedPacket(
                track="citizen-video" if codec != "opus" else "citizen-audio", codec=codec,
                clock_rate=90000 if codec != "opus" else 48000, payload_type=96,
                sequence=seq & 0xFFFF, timestamp=ts & 0xFFFFFFFF, marker=k == n - 1,
                payload=draw(payload), keyframe=draw(st.integers(0, 4)) == 0, arrival=arrival,
                extra={"ssrc": 1}))
            seq += draw(st.sampled_from([1, 1, 1, 2, 0, -1, 200]))
        ts += draw(st.sampled_from([3000, 3000, 0, -3000]))
    if draw(st.booleans()):
        perm = draw(st.permutations(range(len(out))))
        out = [out[i] for i in perm[:len(out)]]
    return out


def _check_video(packets: list[ForwardedPacket], codec: str) -> None:
    assembler = VideoAssembler(codec, on_loss=lambda: None)
    frames = []
    for p in packets:
        frames += list(assembler.push(p))
    frames += assembler.flush()
    for f in frames:
        assert isinstance(f.data, bytes) and isinstance(f.keyframe, bool)
        size = vp8_size(f.data) if codec == "VP8" else h264_size(f.data)
        assert all(isinstance(v, int) and 0 <= v for v in size)


def check_vp8(packets: list[ForwardedPacket]) -> None:
    _check_video(packets, "VP8")


def check_h264(packets: list[ForwardedPacket]) -> None:
    _check_video(packets, "H264")


def check_opus(packets: list[ForwardedPacket]) -> None:
    """Every packet comes out at most once, and only packets that went in."""
    packets = [dataclasses.replace(p, payload=i.to_bytes(2, "big") + p.payload)
               for i, p in enumerate(packets)]  # each one recognisable
    reorder = AudioReorder()
    out = []
    for p in packets:
        out += list(reorder.push(p))
    out += reorder.flush()
    sent = {p.payload for p in packets}
    got = [f.data for f in out]
    assert len(set(got)) == len(got), "a packet came out twice"
    assert set(got) <= sent, "a frame that was never sent came out"
    for f in out:
        assert opus_duration_samples(f.data) >= 0


# --------------------------------------------------------------- segments, manifest
KEY = bytes(range(32))
KEY_ID = "k-fuzz"
CID = "c-fuzz"


@st.composite
def sealed_blobs(draw: Any) -> bytes:
    """A sealed segment, then truncated, extended or with one byte changed; or bytes."""
    blob = seal(KEY, KEY_ID, CID, 1, draw(st.binary(max_size=64)))
    op = draw(st.integers(0, 3))
    if op == 0:
        return blob[:draw(st.integers(0, len(blob)))]
    if op == 1:
        i = draw(st.integers(0, len(blob) - 1))
        return blob[:i] + bytes([blob[i] ^ draw(st.integers(1, 255))]) + blob[i + 1:]
    if op == 2:
        return blob + draw(st.binary(min_size=1, max_size=8))
    return draw(st.binary(max_size=120))


def check_segment(blob: bytes) -> None:
    try:
        open_segment(KEY, blob, key_id=KEY_ID, consultation_id=CID, index=1)
    except SegmentError:
        pass


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
_MANIFEST_KEYS = ["consultation_id", "key_id", "generation", "segments", "state", "sha256",
                  "index", "duration", "started", "bytes"]


@st.composite
def manifest_contents(draw: Any) -> bytes:
    """What a sealed manifest may hold (authenticated, yet read defensively)."""
    if draw(st.booleans()):
        good = Manifest(consultation_id=CID, key_id=KEY_ID)
        data: Any = json.loads(good.to_json())
        for _ in range(draw(st.integers(0, 3))):
            data[draw(st.sampled_from(_MANIFEST_KEYS))] = draw(_json)
        if draw(st.booleans()):
            data["segments"] = draw(st.lists(st.dictionaries(
                st.sampled_from(_MANIFEST_KEYS), _json, max_size=4), max_size=2))
    else:
        data = draw(_json)
    return json.dumps(data).encode()


def check_manifest(raw: bytes) -> None:
    """Any content under a valid seal: SegmentError or a Manifest, nothing else."""
    blob = seal(KEY, KEY_ID, CID, 1, raw, kind=KIND_MANIFEST)
    try:
        open_manifest(KEY, blob, key_id=KEY_ID, consultation_id=CID)
    except SegmentError:
        pass
    good = Manifest(consultation_id=CID, key_id=KEY_ID, generation=1)
    assert open_manifest(KEY, seal_manifest(KEY, good), key_id=KEY_ID,
                         consultation_id=CID).generation == 1


# ------------------------------------------------------------------------- config
_toml_scalar = st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.floats(),
                         st.booleans(), st.text(max_size=10),
                         st.sampled_from(["inf", "nan", "-inf", "[1, 2", "[\"a\"]", "yes", ""]))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def _config_keys() -> list[tuple[str, str]]:
    from typing import get_type_hints
    cfg = Config()
    return [(section, key) for section in vars(cfg)
            for key in get_type_hints(type(getattr(cfg, section)))]


@st.composite
def config_files(draw: Any) -> tuple[str, dict[str, str]]:
    """(TOML text, environment): real sections and keys with values of any type."""
    keys = _config_keys()
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200)), {}
    chosen = draw(st.lists(st.sampled_from(keys), max_size=6, unique=True))
    by_section: dict[str, list[str]] = {}
    for section, key in chosen:
        value = draw(st.one_of(_toml_scalar, st.lists(_toml_scalar, max_size=3)))
        by_section.setdefault(section, []).append(f"{key} = {_toml_value(value)}")
    if draw(st.integers(0, 5)) == 0:
        by_section.setdefault(draw(st.text(max_size=6).filter(lambda s: "]" not in s
                                                              and "\n" not in s)), [])
    text = "\n".join(f"[{s}]\n" + "\n".join(lines) for s, lines in by_section.items())
    env = {f"MADOGUCHI_{s}_{k}".upper(): draw(st.text(max_size=10).filter(lambda v: "\0" not in v))
           for s, k in draw(st.lists(st.sampled_from(keys), max_size=2, unique=True))}
    return text, env


_config_dir: list[Path] = []


def check_config(sample: tuple[str, dict[str, str]]) -> None:
    """A TOML file and environment: a validated Config or ConfigError, nothing else."""
    text, env = sample
    if not _config_dir:
        _config_dir.append(Path(tempfile.mkdtemp(prefix="madoguchi-fuzz-")))
    path = _config_dir[0] / f"fuzz-{os.getpid()}.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(path, environ=env)
    except ConfigError:
        return
    assert 0 < cfg.retention.period_hours <= 24, "the 24-hour promise was loaded broken"
    assert 0 < cfg.links.lifetime_minutes and math.isfinite(cfg.links.lifetime_minutes)
    assert 0 < cfg.sfu.max_video_kbps and math.isfinite(cfg.sfu.peer_timeout_seconds)


TARGETS: list[Target] = [
    Target("rtp", rtp_datagrams(), check_rtp),
    Target("rtcp", rtcp_datagrams(), check_rtcp),
    Target("sdp", sdp_offers(), check_sdp),
    Target("depacketizer-vp8", packet_runs("VP8"), check_vp8),
    Target("depacketizer-h264", packet_runs("H264"), check_h264),
    Target("depacketizer-opus", packet_runs("opus"), check_opus),
    Target("segment", sealed_blobs(), check_segment),
    Target("manifest", manifest_contents(), check_manifest),
    Target("config", config_files(), check_config),
]
