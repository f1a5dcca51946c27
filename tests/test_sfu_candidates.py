"""Remote ICE candidates: the SFU sends connectivity checks only where it should (issue 15
finding 1: one citizen link made the server send STUN to any address it was given)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from madoguchi.bench.media import Clip, citizen_client
from madoguchi.config import SfuConfig
from madoguchi.metrics import SFU_CANDIDATES_REFUSED
from sfu import ice, sdp
from sfu.candidates import CandidatePolicy, SectionBudget
from sfu.interfaces import SfuError
from sfu.sfu import LocalSfu

HOSTILE = [f"127.0.0.{i}" for i in range(2, 22)]  # 20 addresses on loopback, not the SFU's


def cand(addr: str, port: int = 9, *, transport: str = "udp", component: int = 1,
         typ: str = "host", foundation: int = 1) -> str:
    return (f"a=candidate:{foundation} {component} {transport} 2130706431 {addr} {port} "
            f"typ {typ}")


@pytest.mark.parametrize(("address", "reason"), [
    ("203.0.113.7", "address"),  # documentation range: not routable either
    ("10.1.2.3", "address"), ("172.16.0.1", "address"), ("192.168.1.20", "address"),
    ("100.64.0.1", "address"),  # carrier-grade NAT
    ("127.0.0.1", None), ("127.0.0.2", "address"), ("169.254.1.1", "address"),
    ("224.0.0.251", "address"), ("0.0.0.0", "address"), ("255.255.255.255", "address"),
    ("::1", "address"), ("fe80::1", "address"), ("fd00::1", "address"),
    ("ff02::1", "address"), ("::ffff:127.0.0.1", "address"), ("::", "address"),
    ("8.8.8.8", None), ("2001:4860:4860::8888", None),  # routable: allowed (never contacted here)
    ("abcd-1234.local", "hostname"), ("example.com", "hostname"),
])
def test_candidate_addresses(address: str, reason: str | None) -> None:
    policy = CandidatePolicy.from_config(["127.0.0.1/32"])
    assert policy.refusal(cand(address)) == reason


def test_candidate_shapes() -> None:
    policy = CandidatePolicy()
    assert policy.refusal(cand("8.8.8.8", transport="tcp") + " tcptype passive") == "transport"
    assert policy.refusal(cand("8.8.8.8", component=2)) == "component"
    assert policy.refusal("candidate:1 1 udp 1 8.8.8.8 9 typ relay raddr 0.0.0.0 rport 0") is None
    for bad in ("a=candidate:1 1 udp", "candidate:x", "a=candidate:1 1 udp 1 8.8.8.8 x typ host",
                "a=candidate:1 1 udp 1 8.8.8.8 9 nottyp host"):
        assert policy.refusal(bad) in ("malformed", "hostname"), bad


def test_offer_candidates_capped_per_section() -> None:
    policy = CandidatePolicy.from_config(["127.0.0.0/8"], max_per_section=10)
    sections = []
    for kind in ("audio", "video"):
        lines = [f"m={kind} 9 UDP/TLS/RTP/SAVPF 96"]
        lines += [cand(f"127.0.1.{i}", 5000 + i, foundation=i) for i in range(15)]
        lines += [cand("10.0.0.1"), cand("x.local")]
        sections.append("\r\n".join(lines))
    offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" + "\r\n".join(sections)
    before = {r: SFU_CANDIDATES_REFUSED.labels(reason=r)._value.get()
              for r in ("cap", "address", "hostname")}
    budget = SectionBudget(policy)
    clean = sdp.sanitize_offer(offer, budget)
    kept = [ln for ln in clean.split("\r\n") if ln.startswith("a=candidate:")]
    assert len(kept) == 20 and budget.admitted == {"0": 10, "1": 10}
    assert all("127.0.1." in ln for ln in kept)
    assert clean.count("a=end-of-candidates") == 2
    after = {r: SFU_CANDIDATES_REFUSED.labels(reason=r)._value.get() for r in before}
    assert {r: after[r] - before[r] for r in before} == {"cap": 10, "address": 2, "hostname": 2}
    # a trickled candidate counts against the same budget
    assert budget.admit("0", "candidate:9 1 udp 1 127.0.2.1 9 typ host") == "cap"
    # a section without candidates stays open for trickle (no end-of-candidates)
    bare = sdp.sanitize_offer("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n", SectionBudget(policy))
    assert "end-of-candidates" not in bare


@pytest.fixture
def listeners() -> Iterator[list[socket.socket]]:
    """UDP sockets on 127.0.0.2-21: each counts what the SFU sends it."""
    socks = []
    for addr in HOSTILE:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, 0))
        s.setblocking(False)
        socks.append(s)
    yield socks
    for s in socks:
        s.close()


def received(socks: list[socket.socket], counts: dict[int, int]) -> int:
    """Drain every listener (loopback delivers on sendto: nothing is in flight)."""
    for i, s in enumerate(socks):
        while True:
            try:
                data = s.recv(2048)
            except BlockingIOError:
                break
            if len(data) >= 20 and data[0] < 2:  # a STUN message
                counts[i] = counts.get(i, 0) + 1
    return sum(counts.values())


def hostile_offer(offer: str, socks: list[socket.socket]) -> str:
    """The citizen's real offer with 20 extra candidates per section, listed first (checked
    first) and aimed at the listeners."""
    extra = "\r\n".join(cand(s.getsockname()[0], s.getsockname()[1], foundation=100 + i)
                        for i, s in enumerate(socks))
    out = []
    for line in offer.split("\r\n"):
        if line.startswith("a=candidate:") and (not out or not out[-1].startswith("a=candidate:")):
            out.append(extra)
        out.append(line)
    return "\r\n".join(out)


@pytest.mark.parametrize("filtered", [True, False], ids=["filter-on", "filter-off-control"])
async def test_hostile_offer_draws_no_stun(vp8_clip: Clip, listeners: list[socket.socket],
                                           filtered: bool) -> None:
    allowed = ["127.0.0.1/32"] if filtered else ["127.0.0.0/8"]
    sfu = LocalSfu(SfuConfig(host_addresses=["127.0.0.1"], allowed_candidate_networks=allowed,
                             max_candidates_per_section=10 if filtered else 100))
    client = citizen_client(vp8_clip)
    room = sfu.room("hostile-candidates")
    counts: dict[int, int] = {}
    try:
        offer = hostile_offer(await client.offer(), listeners)
        await client.accept(await room.connect_citizen(offer))
        await asyncio.wait_for(client.connected.wait(), 10)
        assert room.citizen is not None
        conn = ice.ice_connection(room.citizen.pc.getTransceivers()[0].receiver.transport)
        remote = {c.host for c in conn.remote_candidates}
        if filtered:
            assert remote == {"127.0.0.1"}
            # connected: aioice's check list is over, only consent checks to the
            # nominated pair follow, so nothing can reach the listeners any more
            assert received(listeners, counts) == 0, counts
        else:
            # the instrument works: without the filter the same offer draws STUN there
            assert set(HOSTILE) <= remote
            for _ in range(100):
                if received(listeners, counts):
                    break
                await asyncio.sleep(0.05)
            assert received(listeners, counts) > 0
    finally:
        await client.close()
        await sfu.close()


async def test_trickled_candidates_pass_the_same_policy(vp8_clip: Clip,
                                                        listeners: list[socket.socket]) -> None:
    """Offer without candidates (trickle ICE), then candidates one by one: the citizen's
    own connects, the hostile ones are refused, malformed messages are errors."""
    sfu = LocalSfu(SfuConfig(host_addresses=["127.0.0.1"],
                             allowed_candidate_networks=["127.0.0.1/32"]))
    client = citizen_client(vp8_clip)
    room = sfu.room("trickle")
    counts: dict[int, int] = {}
    try:
        offer = await client.offer()
        own = [ln[2:] for ln in offer.split("\r\n") if ln.startswith("a=candidate:")]
        bare = "\r\n".join(ln for ln in offer.split("\r\n")
                           if not ln.startswith(("a=candidate:", "a=end-of-candidates")))
        await client.accept(await room.connect_citizen(bare))
        for s in listeners:
            host, port = s.getsockname()
            assert await room.add_candidate(None, cand(host, port)[2:], 0, "0") is False
        assert await room.add_candidate(None, own[0], 0, "0") is True
        assert await room.add_candidate(None, "", 0, None) is True  # end of candidates
        await asyncio.wait_for(client.connected.wait(), 10)
        assert received(listeners, counts) == 0, counts
        for bad in [(None, 0, "0"), ("x" * 600, 0, "0"), (own[0], "0", "0"),
                    (own[0], -1, "0"), (own[0], 0, 7)]:
            with pytest.raises(SfuError):
                await room.add_candidate(None, *bad)
        assert await room.add_candidate(None, "candidate:1 1 udp", 0, "0") is False
        assert await room.add_candidate("nobody", own[0], 0, "0") is False
    finally:
        await client.close()
        await sfu.close()
