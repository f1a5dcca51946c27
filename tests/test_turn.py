"""TURN: REST credentials minted per consultation and per staff session, checked by a real
coturn (TURN/UDP and TURN/TLS), and the ``ice_servers`` the two sockets deliver."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from madoguchi.config import ConfigError, load_config
from signalling.turn import IceServers, check_ice_server_entries, mint, valid
from tests.fixtures.coturn import Coturn
from tests.fixtures.ports import free_port, stop_process
from tests.fixtures.server import ServerHandle, StaffClient
from tests.test_signalling_api import Citizen, create, receive, token_of

SECRET = "ab" * 32


def test_credentials_expire() -> None:
    now = 1_800_000_000.0
    cred = mint(SECRET, now + 600, "c-1234")
    assert cred.username == f"{int(now) + 600}:c-1234" and cred.expires == int(now) + 600
    assert valid(SECRET, cred.username, cred.credential, now)
    assert valid(SECRET, cred.username, cred.credential, now + 599)
    assert not valid(SECRET, cred.username, cred.credential, now + 600)  # expired
    assert not valid("cd" * 32, cred.username, cred.credential, now)     # other secret
    later = f"{int(now) + 6000}:c-1234"                                  # expiry edited
    assert not valid(SECRET, later, cred.credential, now)


def test_ice_servers_per_citizen_and_staff() -> None:
    now = 1_800_000_000.0
    servers = IceServers(["stun:127.0.0.1:3478"], ["turns:localhost:443?transport=tcp"],
                         SECRET, lambda: now)
    citizen = servers.for_citizen(None, 180 * 60)
    assert citizen[0] == {"urls": "stun:127.0.0.1:3478"}
    turn = citizen[1]
    assert turn["urls"] == ["turns:localhost:443?transport=tcp"]
    assert turn["username"].startswith(f"{int(now) + 180 * 60}:c-")
    assert valid(SECRET, turn["username"], turn["credential"], now)
    # a live call: until its start + the longest call
    live = servers.for_citizen(now - 3600, 180 * 60)[1]
    assert live["username"].startswith(f"{int(now) + 120 * 60}:c-")
    assert live["username"] != turn["username"]  # a fresh random label every time
    staff = servers.for_staff(now + 7200)[1]
    assert staff["username"].startswith(f"{int(now) + 7200}:s-")
    assert len(servers.for_staff(now - 1)) == 1  # an expired session gets no TURN
    plain = IceServers([], ["turn:x:3478"], None, lambda: now)  # [turn] off
    assert plain.for_citizen(None, 60) == [] and not plain.turn_enabled


def test_ice_server_entries() -> None:
    check_ice_server_entries(["stun:a:3478", {"urls": ["stun:a", "stun:b"]},
                              {"urls": "turn:t:3478", "username": "u", "credential": "p"}])
    for bad, needle in [(["turn:t:3478"], "username and credential"),
                        ([{"urls": "turns:t:443"}], "username and credential"),
                        (["http://x"], "not a stun"), ([{"url": "stun:x"}], "unknown keys"),
                        ([{"urls": []}], "no URL"), ([3], "neither")]:
        with pytest.raises(ValueError, match=needle):
            check_ice_server_entries(bad)


def test_turn_and_ice_server_configuration(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[sfu]\nice_servers = ["stun:127.0.0.1:3478", {urls = "turn:t:3478", '
                 'username = "u", credential = "p"}]\n[turn]\nenabled = true\n'
                 'host = "turn.example.jp"\n')
    cfg = load_config(f, environ={})
    assert cfg.sfu.ice_servers[1] == {"urls": "turn:t:3478", "username": "u", "credential": "p"}
    assert cfg.turn_urls == ["turn:turn.example.jp:3478?transport=udp",
                             "turn:turn.example.jp:3478?transport=tcp",
                             "turns:turn.example.jp:443?transport=tcp"]
    for text, needle in [('[sfu]\nice_servers = ["turn:x"]\n', "username and credential"),
                         ('[turn]\nenabled = true\nurls = ["stun:x"]\n', "turn: or turns:"),
                         ('[sfu]\nallowed_candidate_networks = ["10.0.0.0/33"]\n', "CIDR"),
                         ('[sfu]\nudp_port_min = 50000\n', "udp_port_min")]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=needle):
            load_config(f, environ={})


@pytest.fixture(scope="module")
def turn_peer() -> Iterator[int]:
    """turnutils_peer: a UDP echo peer on 127.0.0.1 (the relay's target)."""
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen(["turnutils_peer", "-L", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield port
    stop_process(proc)


@pytest.mark.parametrize("tls", [False, True], ids=["udp", "tls"])
def test_coturn_accepts_minted_credentials(coturn: Coturn, turn_peer: int, tls: bool) -> None:
    cred = mint(coturn.secret, time.time() + 300, "c-test")
    done = coturn.uclient(cred.username, cred.credential, turn_peer, tls=tls)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-500:]
    assert "tot_recv_msgs=4" in done.stdout + done.stderr  # relayed there and back


def test_coturn_refuses_expired_and_forged_credentials(coturn: Coturn, turn_peer: int) -> None:
    expired = mint(coturn.secret, time.time() - 1, "c-old")
    forged = mint("cd" * 32, time.time() + 300, "c-forged")
    for cred in (expired, forged):
        done = coturn.uclient(cred.username, cred.credential, turn_peer)
        assert done.returncode != 0, done.stdout[-1500:]
        assert "Cannot complete Allocation" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory: pytest.TempPathFactory, dev_certs: Any,
                coturn: Coturn) -> Iterator[ServerHandle]:
    from tests.fixtures.browser import off_loop
    from tests.fixtures.server import start_server

    base = tmp_path_factory.mktemp("turn-server")
    secret = coturn.write_secret(base / "turn.key")
    handle = off_loop(start_server, base, dev_certs, coturn.turn_overrides(secret), "turn")
    yield handle
    stop_process(handle.proc, timeout=15)


async def test_sockets_deliver_working_turn_credentials(turn_server: ServerHandle,
                                                        coturn: Coturn, turn_peer: int) -> None:
    server = turn_server
    async with StaffClient(server) as staff:
        await staff.login()
        ws = await staff.session.ws_connect(server.staff_url.replace("https", "wss")
                                            + "/ws/staff", headers={"Origin": server.staff_url})
        staff_ready = await receive(ws, "ready")
        await ws.close()
        c = await create(staff)
        citizen = Citizen(server)
        try:
            token = token_of(c["link"])
            assert (await citizen.post("/api/citizen/open", {"token": token}))[0] == 200
            status, consent = await citizen.post("/api/citizen/consent", {"token": token})
            assert status == 200
            cws = await citizen.socket(consent["signalling_token"])
            citizen_ready = await receive(cws, "ready")
            await cws.close()
        finally:
            await citizen.close()
    now = time.time()
    urls = [f"turn:localhost:{coturn.port}?transport=udp",
            f"turn:localhost:{coturn.port}?transport=tcp",
            f"turns:localhost:{coturn.tls_port}?transport=tcp"]
    for ready, role, lifetime in ((citizen_ready, "c", 180 * 60), (staff_ready, "s", 12 * 3600)):
        [turn] = ready["ice_servers"]
        assert turn["urls"] == urls
        expiry, label = turn["username"].split(":")
        assert label.startswith(role + "-")
        assert now < int(expiry) <= now + lifetime + 5  # ends with the call / the session
        done = coturn.uclient(turn["username"], turn["credential"], turn_peer, tls=True)
        assert done.returncode == 0, done.stdout[-1500:]
    assert citizen_ready["ice_servers"][0]["username"] != staff_ready["ice_servers"][0]["username"]
