"""SMS through a real Kannel (bearerbox + smsbox + fakesmsc on loopback).

The provider is built by ``make_provider`` from a configuration, exactly as the server
does; delivery reports come back to the real DLR route served by a small aiohttp app.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from madoguchi import metrics
from madoguchi.config import Config
from madoguchi.logs import JsonFormatter
from signalling.sms import make_provider
from signalling.sms.dlr import dlr_routes, load_dlr_secret
from signalling.sms.interfaces import SmsError, SmsProvider
from signalling.sms.kannel import KannelProvider
from signalling.sms.template import check_template, link_url, render_sms
from tests.fixtures.kannel import Kannel
from tests.fixtures.ports import free_port
from tests.fixtures.privacy import register_secret

pytestmark = pytest.mark.kannel

PHONE = "+819012345678"


class Reports:
    """Delivery reports received by the DLR route."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    async def __call__(self, reference: str, status: str) -> None:
        self.items.append((reference, status))
        self._changed.set()

    async def wait_for(self, reference: str, status: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (reference, status) not in self.items:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {status!r} report for {reference}: {self.items}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass


@pytest.fixture
async def dlr_server(tmp_path: Path) -> AsyncIterator[tuple[Config, Reports]]:
    """A configuration (data dir in tmp) and the DLR route listening on loopback."""
    cfg = Config()
    cfg.server.data_dir = str(tmp_path / "data")
    cfg.server.public_url = "https://soudan.example.jp"
    port = free_port()
    cfg.sms.dlr_base_url = f"http://127.0.0.1:{port}"
    reports = Reports()
    app = web.Application()
    app.add_routes(dlr_routes(reports, load_dlr_secret(cfg)))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield cfg, reports
    finally:
        await runner.cleanup()


def kannel_cfg(cfg: Config, kannel: Kannel, timeout: float = 2.0, retries: int = 2) -> Config:
    cfg.sms.provider = "kannel"
    cfg.sms.kannel_url = kannel.sendsms_url
    cfg.sms.kannel_username = kannel.username
    cfg.sms.kannel_password = kannel.password
    cfg.sms.sender_id = "Madoguchi"
    cfg.sms.timeout_seconds = timeout
    cfg.sms.retries = retries
    return cfg


def new_message(cfg: Config) -> tuple[str, str]:
    token = secrets.token_urlsafe(16)
    assert len(token) == 22
    register_secret(token)
    return token, render_sms(cfg.sms.template, link_url(cfg.server.public_url, token),
                             cfg.links.lifetime_minutes)


async def test_one_segment_with_the_link_and_delivered_report(
        kannel: Kannel, dlr_server: tuple[Config, Reports],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cfg, reports = dlr_server
    check_template(cfg)
    provider = make_provider(kannel_cfg(cfg, kannel))
    sent_before = metrics.SMS_SENT._value.get()
    delivered_before = metrics.SMS_DELIVERED._value.get()
    token, text = new_message(cfg)
    try:
        result = await provider.send(PHONE, text, "cons-1")
    finally:
        await provider.close()
    assert result.status == "sent" and len(result.message_id) == 16
    parts = await asyncio.to_thread(kannel.wait_received, 1)
    await reports.wait_for("cons-1", "delivered")
    parts = kannel.received()
    assert len(parts) == 1, parts  # one segment, no concatenation header
    part = parts[0]
    assert part.kind == "ucs-2" and not part.udh
    assert part.text == text
    assert part.text.endswith(f"https://soudan.example.jp/c/{token}")
    assert part.receiver == PHONE and part.sender == "Madoguchi"
    assert ("cons-1", "sent") in reports.items  # type 8: accepted by the SMSC
    assert metrics.SMS_SENT._value.get() == sent_before + 1
    assert metrics.SMS_DELIVERED._value.get() == delivered_before + 1
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "sms_accepted" in logged and "sms_delivery_report" in logged
    for secret in (PHONE, PHONE[1:], token, kannel.password, load_dlr_secret(cfg)):
        assert secret not in logged
    # Kannel's own files (logs, stderr, no store) keep neither the number nor the link
    files = kannel.privacy_files()
    assert any(p.name == "access.log" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in (PHONE, PHONE[3:], token):
            assert secret.encode() not in data, (path.name, "holds a number or the link")


def test_shipped_kannel_config_keeps_no_message_store_and_quiet_logs() -> None:
    """The store file kept every SMS (number, link, DLR URL) past 24 h after a quiet
    weekend; the shipped configuration has none, logs at warning level and its access
    log format has no number or text."""
    from madoguchi.config import REPO_ROOT
    lines = [line.split("#", 1)[0].strip() for line in
             (REPO_ROOT / "config" / "kannel" / "kannel.conf").read_text().splitlines()]
    settings = [tuple(x.strip() for x in line.split("=", 1)) for line in lines if "=" in line]
    names = [name for name, _value in settings]
    assert "store-type" not in names and "store-location" not in names
    assert {value for name, value in settings if name == "log-level"} == {"2"}
    formats = [value for name, value in settings if name == "access-log-format"]
    assert formats and not any(f in formats[0] for f in ("%p", "%P", "%a", "%b"))


async def test_fixture_sees_a_long_text_as_two_parts(
        kannel: Kannel, dlr_server: tuple[Config, Reports]) -> None:
    """The one-segment assertion above can fail: 71 UCS-2 characters make two parts."""
    cfg, _ = dlr_server
    provider = make_provider(kannel_cfg(cfg, kannel))
    try:
        await provider.send(PHONE, "あ" * 71, "cons-long")
    finally:
        await provider.close()
    parts = await asyncio.to_thread(kannel.wait_received, 2)
    assert len(parts) == 2 and all(p.udh for p in parts)
    assert "".join(p.text for p in parts) == "あ" * 71


async def test_carrier_down_queues_then_delivers_on_reconnect(
        kannel: Kannel, dlr_server: tuple[Config, Reports]) -> None:
    cfg, reports = dlr_server
    provider = make_provider(kannel_cfg(cfg, kannel))
    _, text = new_message(cfg)
    await asyncio.to_thread(kannel.stop_fakesmsc)
    try:
        result = await provider.send(PHONE, text, "cons-q")
    finally:
        await provider.close()
    assert result.status == "queued"
    await asyncio.sleep(0.5)
    assert kannel.received() == [] and reports.items == []
    await asyncio.to_thread(kannel.start_fakesmsc)
    parts = await asyncio.to_thread(kannel.wait_received, 1)
    assert [p.text for p in parts] == [text]
    await reports.wait_for("cons-q", "delivered")


async def test_gateway_down_fails_fast_then_retry_works(
        kannel: Kannel, dlr_server: tuple[Config, Reports]) -> None:
    cfg, reports = dlr_server
    provider = make_provider(kannel_cfg(cfg, kannel, timeout=2.0, retries=2))
    failed = metrics.SMS_FAILED.labels(reason="gateway_unavailable")
    failed_before = failed._value.get()
    _, text = new_message(cfg)
    await asyncio.to_thread(kannel.stop)
    started = time.monotonic()
    with pytest.raises(SmsError) as info:
        await provider.send(PHONE, text, "cons-down")
    elapsed = time.monotonic() - started
    print(f"gateway down: SmsError after {elapsed:.2f}s (2 retries with backoff)")
    assert elapsed < 10  # connection refused, retried with short backoff: no long hang
    assert info.value.code == "gateway_unavailable" and info.value.retryable
    assert "ゲートウェイ" in info.value.message and "gateway" in info.value.message
    assert PHONE not in info.value.message and "/c/" not in info.value.message
    assert failed._value.get() == failed_before + 1
    with pytest.raises(SmsError):
        await provider.check()
    # Staff press "retry" once the gateway is back: the same provider object works.
    await asyncio.to_thread(kannel.start)
    await provider.check()
    try:
        result = await provider.send(PHONE, text, "cons-down")
    finally:
        await provider.close()
    assert result.status == "sent"
    parts = await asyncio.to_thread(kannel.wait_received, 1)
    assert [p.text for p in parts] == [text]
    await reports.wait_for("cons-down", "delivered")


async def test_frozen_gateway_times_out(kannel: Kannel) -> None:
    """smsbox stopped (SIGSTOP): the request hangs; the client timeout ends it."""
    # a 30 s backoff: a retry would show as > 30 s, however slow or loaded the machine
    provider = KannelProvider(kannel.sendsms_url, kannel.username, kannel.password,
                              timeout_seconds=1.0, retries=2, backoff_seconds=30.0)
    assert kannel.smsbox is not None
    os.kill(kannel.smsbox.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(SmsError) as info:
            await provider.send(PHONE, "テスト", "cons-frozen")
        elapsed = time.monotonic() - started
        print(f"frozen gateway: SmsError after {elapsed:.2f}s (timeout 1 s, not retried)")
        assert info.value.code == "gateway_unavailable"
        assert elapsed < 20
    finally:
        os.kill(kannel.smsbox.pid, signal.SIGCONT)
        await provider.close()


async def test_wrong_credentials(kannel: Kannel) -> None:
    provider = KannelProvider(kannel.sendsms_url, kannel.username, "wrong-password",
                              timeout_seconds=2.0, retries=2, backoff_seconds=30.0)
    try:
        with pytest.raises(SmsError) as info:
            await provider.check()
        assert info.value.code == "gateway_auth" and not info.value.retryable
        started = time.monotonic()
        with pytest.raises(SmsError) as info:
            await provider.send(PHONE, "テスト", "cons-auth")
        assert info.value.code == "gateway_auth"
        assert time.monotonic() - started < 20  # not retried (that would wait 30 s)
        assert "wrong-password" not in info.value.message
    finally:
        await provider.close()
    await asyncio.sleep(0.3)
    assert kannel.received() == []


async def test_check_passes_and_sends_nothing(kannel: Kannel) -> None:
    provider: SmsProvider = KannelProvider(kannel.sendsms_url, kannel.username,
                                           kannel.password)
    try:
        await provider.check()
    finally:
        await provider.close()
    await asyncio.sleep(0.3)
    assert kannel.received() == []
