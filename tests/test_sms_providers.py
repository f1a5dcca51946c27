"""The DLR route, the console provider, make_provider and the instrumentation wrapper
(no gateway needed; Kannel itself is exercised in test_sms_kannel.py)."""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from madoguchi import metrics
from madoguchi.config import Config, ConfigError
from madoguchi.logs import JsonFormatter, log_pseudonym
from signalling.sms import PROVIDERS, make_provider
from signalling.sms.console import ConsoleProvider
from signalling.sms.dlr import dlr_callback_url, dlr_routes, dlr_secret_path, load_dlr_secret
from signalling.sms.interfaces import SendResult, SmsError
from signalling.sms.kannel import KannelProvider

SECRET = "s" * 24


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """The captured records as the production JSON lines (fields included)."""
    return "\n".join(JsonFormatter().format(r) for r in caplog.records)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.items: list[tuple[str, str]] = []
        self.fail = fail

    async def __call__(self, reference: str, status: str) -> None:
        if self.fail:
            raise RuntimeError("store down")
        self.items.append((reference, status))


@pytest.fixture
async def dlr_client() -> AsyncIterator[tuple[TestClient, Recorder]]:
    recorder = Recorder()
    app = web.Application()
    app.add_routes(dlr_routes(recorder, SECRET))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, recorder
    finally:
        await client.close()


@pytest.mark.parametrize(("kannel_type", "status"), [
    (1, "delivered"), (2, "failed"), (4, "sent"), (8, "sent"), (16, "failed")])
async def test_dlr_types(dlr_client: tuple[TestClient, Recorder], kannel_type: int,
                         status: str) -> None:
    client, recorder = dlr_client
    resp = await client.get(f"/sms/dlr/{SECRET}", params={"ref": "c-1", "type": kannel_type})
    assert resp.status == 200
    assert recorder.items == [("c-1", status)]


async def test_dlr_metrics(dlr_client: tuple[TestClient, Recorder]) -> None:
    client, _ = dlr_client
    delivered = metrics.SMS_DELIVERED._value.get()
    failed = metrics.SMS_FAILED.labels(reason="delivery_failed")._value.get()
    rejected = metrics.SMS_FAILED.labels(reason="smsc_rejected")._value.get()
    for t in (1, 2, 16, 8):
        assert (await client.get(f"/sms/dlr/{SECRET}?ref=c1&type={t}")).status == 200
    assert metrics.SMS_DELIVERED._value.get() == delivered + 1
    assert metrics.SMS_FAILED.labels(reason="delivery_failed")._value.get() == failed + 1
    assert metrics.SMS_FAILED.labels(reason="smsc_rejected")._value.get() == rejected + 1


@pytest.mark.parametrize(("path", "status"), [
    ("/sms/dlr/wrong-secret-wrong-secret?ref=c1&type=1", 404),
    (f"/sms/dlr/{SECRET}x?ref=c1&type=1", 404),
    (f"/sms/dlr/{SECRET}?ref=c1&type=3", 400),
    (f"/sms/dlr/{SECRET}?ref=c1&type=abc", 400),
    (f"/sms/dlr/{SECRET}?ref=c1", 400),
    (f"/sms/dlr/{SECRET}?type=1", 400),
    (f"/sms/dlr/{SECRET}?ref=%2B819012345678&type=1", 400),
    (f"/sms/dlr/{SECRET}?ref={'a' * 65}&type=1", 400),
])
async def test_dlr_refuses_bad_reports(dlr_client: tuple[TestClient, Recorder], path: str,
                                       status: int) -> None:
    client, recorder = dlr_client
    resp = await client.get(path)
    assert resp.status == status
    body = await resp.json()
    assert set(body) == {"error", "message"}
    assert recorder.items == []


async def test_dlr_callback_failure_is_a_clean_503(caplog: pytest.LogCaptureFixture) -> None:
    app = web.Application()
    app.add_routes(dlr_routes(Recorder(fail=True), SECRET))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        with caplog.at_level(logging.ERROR):
            resp = await client.get(f"/sms/dlr/{SECRET}?ref=c1&type=1")
        assert resp.status == 503
        assert (await resp.json())["error"] == "report_not_recorded"
    text = logged(caplog)
    assert "sms_delivery_report_failed" in text and "RuntimeError" in text
    assert "store down" not in text


def test_dlr_secret_is_required() -> None:
    with pytest.raises(ValueError):
        dlr_routes(Recorder(), "short")


def test_dlr_secret_file_and_url(tmp_path: Path) -> None:
    cfg = Config()
    cfg.server.data_dir = str(tmp_path)
    secret = load_dlr_secret(cfg)
    assert len(secret) >= 16 and load_dlr_secret(cfg) == secret
    assert stat.S_IMODE(dlr_secret_path(cfg).stat().st_mode) == 0o600
    cfg.operator.host, cfg.operator.port = "0.0.0.0", 9464
    assert dlr_callback_url(cfg, secret) == f"http://127.0.0.1:9464/sms/dlr/{secret}"
    cfg.sms.dlr_base_url = "http://10.0.0.5:9464/"
    assert dlr_callback_url(cfg, secret) == f"http://10.0.0.5:9464/sms/dlr/{secret}"
    dlr_secret_path(cfg).write_text("has spaces in it, not allowed\n")
    with pytest.raises(ConfigError):
        load_dlr_secret(cfg)


async def test_console_outbox_logs_no_number_or_text(caplog: pytest.LogCaptureFixture) -> None:
    provider = ConsoleProvider(max_messages=2)
    with caplog.at_level(logging.INFO):
        result = await provider.send("+819012345678", "リンク https://a.jp/c/TOKENTOKEN", "c1")
    assert result.status == "sent"
    assert provider.outbox[-1].text.endswith("TOKENTOKEN")
    assert provider.last_for("c1") is provider.outbox[-1]
    assert provider.last_for("c2") is None
    text = logged(caplog)
    # the reference as this hour's log pseudonym; not even the masked number
    assert f'"consultation": "{log_pseudonym("c1")}"' in text and '"c1"' not in text
    assert "5678" not in text and "TOKENTOKEN" not in text
    assert "TOKENTOKEN" not in repr(provider.outbox[-1])
    for n in range(3):
        await provider.send("+819012345678", f"m{n}", f"c{n}")
    assert len(provider.outbox) == 2  # bounded
    provider.fail_next(SmsError("gateway_unavailable", "down"))
    with pytest.raises(SmsError):
        await provider.send("+819012345678", "x", "c9")
    assert (await provider.send("+819012345678", "x", "c9")).status == "sent"


def test_make_provider(tmp_path: Path) -> None:
    cfg = Config()
    cfg.server.data_dir = str(tmp_path)
    provider = make_provider(cfg)
    assert isinstance(provider.inner, ConsoleProvider)  # type: ignore[attr-defined]
    cfg.sms.provider = "kannel"
    with pytest.raises(ConfigError, match="kannel_username"):
        make_provider(cfg)
    cfg.sms.kannel_username, cfg.sms.kannel_password = "u", "p"
    assert isinstance(make_provider(cfg).inner, KannelProvider)  # type: ignore[attr-defined]
    cfg.sms.provider = "carrier-pigeon"
    with pytest.raises(ConfigError, match="console, kannel"):
        make_provider(cfg)


async def test_extension_point_and_unexpected_errors(tmp_path: Path) -> None:
    """A city's gateway is one class registered in PROVIDERS; its surprises become SmsError."""

    class CityGateway:
        name = "city"

        def __init__(self) -> None:
            self.calls = 0

        async def send(self, to_e164: str, text: str, reference: str) -> SendResult:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionResetError("socket said no to +819012345678")
            return SendResult("m1", "sent")

        async def check(self) -> None:
            raise OSError("boom")

        async def close(self) -> None:
            pass

    cfg = Config()
    cfg.sms.provider = "city"
    PROVIDERS["city"] = lambda cfg: CityGateway()
    try:
        provider = make_provider(cfg)
    finally:
        del PROVIDERS["city"]
    other = metrics.SMS_FAILED.labels(reason="provider_error")._value.get()
    with pytest.raises(SmsError) as info:
        await provider.send("+819012345678", "x", "c1")
    assert info.value.code == "provider_error" and "+81" not in info.value.message
    assert metrics.SMS_FAILED.labels(reason="provider_error")._value.get() == other + 1
    assert (await provider.send("+819012345678", "x", "c1")).message_id == "m1"
    with pytest.raises(SmsError):
        await provider.check()


async def test_kannel_refuses_non_e164_and_bad_reference() -> None:
    provider = KannelProvider("http://127.0.0.1:9/cgi-bin/sendsms", "u", "p", retries=0)
    try:
        for bad in ("09012345678", "+81 90 1234 5678", "1", "+81901234567890123"):
            with pytest.raises(SmsError) as info:
                await provider.send(bad, "x", "c1")
            assert info.value.code == "invalid_recipient"
        with pytest.raises(ValueError):
            await provider.send("+819012345678", "x", "c1&type=1")
    finally:
        await provider.close()
