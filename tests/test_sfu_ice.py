"""SFU ICE settings: media sockets inside the configured UDP port range, and consent
freshness (a silent peer is kept for 30 s, like browsers and RFC 7675)."""

from __future__ import annotations

import re

from madoguchi.bench.media import Clip, citizen_client, staff_client
from madoguchi.config import SfuConfig, load_config
from sfu.ice import ArrivalStamps
from sfu.peer import Peer, PeerSettings
from sfu.sfu import LocalSfu, settings_from_config
from tests.fixtures.ports import free_udp_range
from tests.fixtures.sfu import join_citizen, join_staff

_CANDIDATE_PORT = re.compile(r"^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", re.M)


async def test_media_sockets_use_the_port_range(vp8_clip: Clip) -> None:
    lo, hi = free_udp_range(8)
    sfu = LocalSfu(SfuConfig(host_addresses=["127.0.0.1"], udp_port_min=lo, udp_port_max=hi,
                             allowed_candidate_networks=["127.0.0.1/32"]))
    citizen, viewer = citizen_client(vp8_clip), staff_client()
    room = sfu.room("port-range")
    try:
        await join_citizen(room, citizen)
        await join_staff(room, "v1", viewer)
        ports = []
        for client in (citizen, viewer):
            answer = client.pc.remoteDescription.sdp
            ports += [int(p) for p in _CANDIDATE_PORT.findall(answer)]
        assert ports and all(lo <= p <= hi for p in ports), (ports, lo, hi)
        assert len(set(ports)) == 2  # one bundled socket per peer
    finally:
        await citizen.close()
        await viewer.close()
        await sfu.close()


async def test_silent_peer_kept_for_30_seconds() -> None:
    settings = settings_from_config(load_config(None, environ={}).sfu)
    assert settings.peer_timeout == 30.0 == PeerSettings().peer_timeout
    peer = Peer("citizen", None, settings, "consent", lambda p, s: None)
    try:
        stamps = ArrivalStamps()
        peer.stamps.append(stamps)
        peer.connected = True
        now = stamps.last
        assert not peer.timed_out(now + 29.0)  # a tunnel, a lift: still the same call
        assert peer.timed_out(now + 30.5)
    finally:
        await peer.close()
