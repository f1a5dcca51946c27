"""Mutual TLS with real sockets: the staff context refuses every certificate it must
refuse at the handshake, and a revocation applies to a running server without restart."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from madoguchi.certs import CertError, StaffCA, load_crl_serials
from signalling.tls import (
    CrlReloader,
    TlsSetupError,
    citizen_ssl_context,
    peer_certificate,
    peer_revoked,
    staff_ssl_context,
)
from tests.fixtures.certs import Pki, raw_get, refused, serve_tls


async def _peer(request: web.Request) -> web.Response:
    cert = peer_certificate(request)
    return web.Response(text="none" if cert is None
                        else f"{cert[0]} {cert[1]} {peer_revoked(request)}")


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _peer)
    return app


@pytest.fixture
async def staff_server(pki: Pki) -> AsyncIterator[int]:
    ctx = staff_ssl_context(pki.tls_config())
    CrlReloader(pki.tls_config(), ctx)
    runner, port = await serve_tls(_app(), ctx)
    yield port
    await runner.cleanup()  # type: ignore[attr-defined]


async def test_valid_certificate_works_and_is_identified(pki: Pki, staff_server: int) -> None:
    answer = await raw_get(staff_server, pki.client_context(pki.valid))
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 200"), answer
    body = answer.split(b"\r\n\r\n", 1)[1].decode()
    assert body == f"{pki.valid.fingerprint} {pki.valid.serial} False"


@pytest.mark.parametrize("which", ["none", "other_ca", "revoked", "expired"])
async def test_refused_at_handshake(pki: Pki, staff_server: int, which: str) -> None:
    client = None if which == "none" else getattr(pki, which)
    answer = await raw_get(staff_server, pki.client_context(client))
    assert refused(answer), answer


async def test_tls12_refused_by_default(pki: Pki, staff_server: int) -> None:
    answer = await raw_get(staff_server, pki.client_context(pki.valid, ssl.TLSVersion.TLSv1_2))
    assert refused(answer)


@pytest.fixture
async def staff_server_tls12(pki: Pki) -> AsyncIterator[int]:
    tls = pki.tls_config()
    tls.staff_allow_tls12 = True
    ctx = staff_ssl_context(tls)
    CrlReloader(tls, ctx)
    runner, port = await serve_tls(_app(), ctx)
    yield port
    await runner.cleanup()  # type: ignore[attr-defined]


@pytest.mark.parametrize("which", ["valid", "none", "other_ca", "revoked", "expired"])
async def test_tls12_when_allowed(pki: Pki, staff_server_tls12: int, which: str) -> None:
    client = None if which == "none" else getattr(pki, which)
    answer = await raw_get(staff_server_tls12, pki.client_context(client,
                                                                  ssl.TLSVersion.TLSv1_2))
    assert refused(answer) == (which != "valid"), answer


async def _keepalive_get(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"https://localhost:{port}/") as resp:
        return await resp.text()


@pytest.mark.parametrize("allow_tls12", [False, True], ids=["tls1.3-only", "tls1.2-allowed"])
async def test_revocation_applies_while_running(fresh_pki: Pki, allow_tls12: bool) -> None:
    tls = fresh_pki.tls_config()
    tls.staff_allow_tls12 = allow_tls12
    ctx = staff_ssl_context(tls)
    reloader = CrlReloader(tls, ctx, interval=0.1)
    runner, port = await serve_tls(_app(), ctx)
    versions = [None, ssl.TLSVersion.TLSv1_2] if allow_tls12 else [None]
    # A keep-alive connection opened before the revocation.
    conn = aiohttp.TCPConnector(ssl=fresh_pki.client_context(fresh_pki.second))
    async with aiohttp.ClientSession(connector=conn) as keepalive:
        try:
            await reloader.start()
            for tls_max in versions:
                assert not refused(await raw_get(port, fresh_pki.client_context(
                    fresh_pki.second, tls_max)))
            assert (await _keepalive_get(keepalive, port)).endswith("False")
            assert not reloader.is_revoked(fresh_pki.second.serial)

            fresh_pki.staff_ca.revoke(fresh_pki.second.serial)
            for _ in range(100):  # the poller picks it up (interval 0.1 s)
                if reloader.is_revoked(fresh_pki.second.serial):
                    break
                await asyncio.sleep(0.05)
            assert reloader.is_revoked(fresh_pki.second.serial)
            assert reloader.generation == 1
            for tls_max in versions:
                assert refused(await raw_get(port, fresh_pki.client_context(
                    fresh_pki.second, tls_max)))
                # the others are untouched
                assert not refused(await raw_get(port, fresh_pki.client_context(
                    fresh_pki.valid, tls_max)))
            # The old keep-alive connection still talks, but the application layer sees
            # that its certificate is revoked now.
            assert (await _keepalive_get(keepalive, port)).endswith("True")
        finally:
            await reloader.stop()
            await runner.cleanup()  # type: ignore[attr-defined]


async def test_damaged_or_foreign_crl_keeps_the_old_one(fresh_pki: Pki, tmp_path) -> None:
    tls = fresh_pki.tls_config()
    ctx = staff_ssl_context(tls)
    reloader = CrlReloader(tls, ctx)
    runner, port = await serve_tls(_app(), ctx)
    crl_path = fresh_pki.dev.staff_crl
    good = crl_path.read_bytes()
    try:
        crl_path.write_bytes(b"-----BEGIN X509 CRL-----\nnonsense\n-----END X509 CRL-----\n")
        assert reloader.reload() is False
        other = StaffCA.init(tmp_path / "o.pem", tmp_path / "o.key", tmp_path / "o-crl.pem")
        crl_path.write_bytes((tmp_path / "o-crl.pem").read_bytes())
        assert reloader.reload() is False
        # still in force: revoked stays refused, valid still works
        assert reloader.is_revoked(fresh_pki.revoked.serial)
        assert refused(await raw_get(port, fresh_pki.client_context(fresh_pki.revoked)))
        assert not refused(await raw_get(port, fresh_pki.client_context(fresh_pki.valid)))
        with pytest.raises(CertError):
            load_crl_serials(crl_path.read_bytes(), fresh_pki.staff_ca.cert)
        assert other.records() == []
        crl_path.write_bytes(good)
        assert reloader.reload(force=True) is True
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


def test_no_session_resumption(pki: Pki) -> None:
    """A resumed session would skip the certificate check: the staff context offers none."""
    ctx = staff_ssl_context(pki.tls_config())
    assert ctx.num_tickets == 0
    assert ctx.options & ssl.OP_NO_TICKET
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3


def _two_connections(port: int, client: ssl.SSLContext) -> tuple[bool, bool]:
    reused = []
    session = None
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with client.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert s.recv(12).startswith(b"HTTP/1.1 200")
                reused.append(s.session_reused)
                session = s.session
    return reused[0], reused[1]


async def test_tls13_session_is_not_resumed(pki: Pki, staff_server: int) -> None:
    client = pki.client_context(pki.valid)
    assert await asyncio.to_thread(_two_connections, staff_server, client) == (False, False)


async def test_tls12_resumption_is_caught_by_the_application_layer(fresh_pki: Pki) -> None:
    """Why TLS 1.2 is off by default: its session cache lets a certificate revoked after
    the first handshake resume the session. peer_revoked() still flags it."""
    tls = fresh_pki.tls_config()
    tls.staff_allow_tls12 = True
    ctx = staff_ssl_context(tls)
    reloader = CrlReloader(tls, ctx)
    runner, port = await serve_tls(_app(), ctx)
    client = fresh_pki.client_context(fresh_pki.second, ssl.TLSVersion.TLSv1_2)

    def connect(session: ssl.SSLSession | None) -> tuple[bytes, bool, ssl.SSLSession | None]:
        try:
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with client.wrap_socket(raw, server_hostname="localhost",
                                        session=session) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := s.recv(4096):
                        data += chunk
                    return data, s.session_reused, s.session
        except (OSError, ssl.SSLError):
            return b"", False, None

    try:
        first, _, session = await asyncio.to_thread(connect, None)
        assert first.endswith(b"False")
        fresh_pki.staff_ca.revoke(fresh_pki.second.serial)
        assert reloader.reload()
        again, reused, _ = await asyncio.to_thread(connect, session)
        if reused:  # OpenSSL resumed: only the application layer can tell
            assert again.endswith(b"True")
        else:
            assert not again.startswith(b"HTTP/")
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_citizen_context_needs_no_client_certificate(pki: Pki) -> None:
    ctx = citizen_ssl_context(pki.tls_config())
    assert ctx.verify_mode == ssl.CERT_NONE
    runner, port = await serve_tls(_app(), ctx)
    try:
        answer = await raw_get(port, pki.client_context(None))
        assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b"none")
        old = pki.client_context(None)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        assert refused(await raw_get(port, old))
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


def test_server_and_staff_chains_are_separate(pki: Pki) -> None:
    """The staff listener trusts only the staff CA: a certificate from the server CA
    (or the server certificate itself) is not a staff certificate."""
    ctx = staff_ssl_context(pki.tls_config())
    subjects = {dict(x[0] for x in c["subject"])["commonName"] for c in ctx.get_ca_certs()}
    assert subjects == {"Madoguchi Development Staff CA"}


def test_missing_configuration_is_a_clear_error(pki: Pki, tmp_path) -> None:
    from madoguchi.config import TlsConfig

    with pytest.raises(TlsSetupError, match="server_cert"):
        citizen_ssl_context(TlsConfig())
    tls = pki.tls_config()
    tls.staff_crl = ""
    with pytest.raises(TlsSetupError, match="staff_crl"):
        staff_ssl_context(tls)
    tls = pki.tls_config()
    tls.staff_crl = str(tmp_path / "missing.pem")
    with pytest.raises(TlsSetupError, match="not found"):
        staff_ssl_context(tls)


def test_expired_or_future_crl_is_a_clear_error(fresh_pki: Pki) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca = fresh_pki.staff_ca
    now = dt.datetime.now(dt.UTC)
    for start, end, match in ((now - dt.timedelta(days=10), now - dt.timedelta(days=1),
                               "expired"),
                              (now + dt.timedelta(days=1), now + dt.timedelta(days=10),
                               "not valid before")):
        crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(start).next_update(end).sign(ca.key, hashes.SHA256()))
        fresh_pki.dev.staff_crl.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        with pytest.raises(TlsSetupError, match=match):
            staff_ssl_context(fresh_pki.tls_config())
    ca.write_crl()
    staff_ssl_context(fresh_pki.tls_config())


@pytest.mark.slow
async def test_cli_revocation_reaches_the_running_server(fresh_pki: Pki, tmp_path) -> None:
    """`madoguchi certs revoke` while `madoguchi serve` runs: new handshakes with that
    certificate fail within a few reload periods, and its logged-in keep-alive connection
    gets 401; other office PCs carry on."""
    from tests.fixtures.ports import stop_process
    from tests.fixtures.server import StaffClient, start_server

    server = await asyncio.to_thread(start_server, tmp_path / "srv", fresh_pki.dev,
                                     None, "revocation-server")
    try:
        async with StaffClient(server, fresh_pki.second.cert, fresh_pki.second.key) as pc2:
            await pc2.login()
            assert (await pc2.get("/api/me"))["username"] == server.username
            revoke = await asyncio.to_thread(server.cli, "certs", "revoke", "staff-pc2",
                                             "--dir", str(fresh_pki.dev.dir))
            assert "Revoked staff-pc2" in revoke.stdout
            ctx = fresh_pki.client_context(fresh_pki.second)
            for _ in range(100):
                if refused(await raw_get(server.staff_port, ctx, "/api/me")):
                    break
                await asyncio.sleep(0.1)
            assert refused(await raw_get(server.staff_port, ctx, "/api/me"))
            status, body = await pc2.get("/api/me", check=False)
            assert (status, body["error"]) == (401, "login_required")
        other = await raw_get(server.staff_port, fresh_pki.client_context(fresh_pki.valid),
                              "/api/me")
        assert isinstance(other, bytes) and other.startswith(b"HTTP/1.1 401")
    finally:
        stop_process(server.proc, timeout=15)
