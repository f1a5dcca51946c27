"""During a real consultation on a real ``madoguchi serve`` (aiortc citizen streaming VP8 +
Opus, a staff viewer), a real Prometheus scrapes the operator listener: the expected series
arrive through Prometheus's HTTP API with plausible values; the server's /metrics holds no
phone number or link token, and offers every metric the dashboard and the alerts read."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from madoguchi.bench.media import Clip, citizen_client, staff_client
from tests.fixtures.privacy import record_metrics_text, register_secret, scan_text
from tests.fixtures.prometheus import (
    PrometheusServer,
    exported_metric_names,
    promql_metric_names,
)
from tests.fixtures.server import ServerHandle, StaffClient
from tests.test_alerts import ALERTS, alert_exprs
from tests.test_dashboard import load as load_dashboard
from tests.test_dashboard import unknown_metrics

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PHONE = "090-2718-2818"


async def _receive(ws: aiohttp.ClientWebSocketResponse, kind: str,
                   timeout: float = 15.0) -> dict[str, Any]:
    async def loop() -> dict[str, Any]:
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket closed before {kind!r}: {msg.type}")
            data = json.loads(msg.data)
            if data.get("type") == kind:
                return data
            if data.get("type") == "error":
                raise AssertionError(f"server error while waiting for {kind!r}: {data}")
    return await asyncio.wait_for(loop(), timeout)


async def test_prometheus_sees_a_live_consultation(madoguchi_server: ServerHandle,
                                                   prometheus_factory, vp8_clip: Clip) -> None:
    server = madoguchi_server
    register_secret(PHONE.replace("-", ""))
    register_secret("+81" + PHONE.replace("-", "")[1:])
    prom: PrometheusServer = await asyncio.to_thread(
        prometheus_factory, [f"127.0.0.1:{server.operator_port}"],
        rule_files=[REPO / "config" / "prometheus" / "alerts.yml"])

    citizen_http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.citizen_ssl()),
                                         cookie_jar=aiohttp.CookieJar(unsafe=True))
    citizen = citizen_client(vp8_clip)
    viewer = staff_client("VP8", mode="packets")
    async with StaffClient(server) as staff:
        await staff.login()
        consultation = await staff.post("/api/consultations", {"phone": PHONE})
        cid = consultation["id"]
        token = consultation["link"].rsplit("/c/", 1)[1]
        register_secret(token)
        try:
            # The citizen opens the link, consents and streams.
            async with citizen_http.post(server.citizen_url + "/api/citizen/open",
                                         json={"token": token}) as r:
                assert r.status == 200
            async with citizen_http.post(server.citizen_url + "/api/citizen/consent",
                                         json={"token": token}) as r:
                assert r.status == 200
                signalling_token = (await r.json())["signalling_token"]
            cws = await citizen_http.ws_connect(
                server.citizen_url.replace("https", "wss") + "/ws/citizen")
            await cws.send_json({"type": "auth", "token": signalling_token})
            await _receive(cws, "ready")
            await cws.send_json({"type": "offer", "sdp": await citizen.offer()})
            await citizen.accept((await _receive(cws, "answer"))["sdp"])
            await asyncio.wait_for(citizen.connected.wait(), 15)

            # Staff view it.
            assert staff.session is not None
            sws = await staff.session.ws_connect(
                server.staff_url.replace("https", "wss") + "/ws/staff",
                headers={"Origin": server.staff_url})
            await sws.send_json({"type": "view", "id": cid, "sdp": await viewer.offer()})
            await viewer.accept((await _receive(sws, "answer"))["sdp"])
            await asyncio.wait_for(viewer.connected.wait(), 15)

            async def wait(expr: str, predicate=bool, timeout: float = 30.0) -> list[float]:
                return await asyncio.to_thread(prom.wait_for, expr, predicate, timeout)

            assert await wait('up{job="madoguchi"}', lambda v: v == [1.0]) == [1.0]
            live = await wait('sum(madoguchi_consultations{state="live"})',
                              lambda v: bool(v) and v[0] >= 1)
            assert 1 <= live[0] < 100
            peers = await wait("sum(madoguchi_sfu_active_peers)",
                               lambda v: bool(v) and v[0] >= 2)
            assert 2 <= peers[0] < 100
            # Forwarded video: the clip is ~300 kbit/s; a plausible rate, not a guess.
            bps = await wait('8 * rate(madoguchi_sfu_forwarded_bytes_total{kind="video"}[5s])',
                             lambda v: bool(v) and v[0] > 20e3)
            assert bps[0] < 5e6, bps
            pps = await wait('rate(madoguchi_sfu_forwarded_packets_total{kind="audio"}[5s])',
                             lambda v: bool(v) and v[0] > 25)
            assert pps[0] < 200, pps  # Opus: 50 packets/s per forwarded leg
            ttff = await wait("madoguchi_click_to_first_frame_seconds_count",
                              lambda v: bool(v) and v[0] >= 1)
            assert ttff[0] >= 1
            mean = await asyncio.to_thread(
                prom.values, "madoguchi_click_to_first_frame_seconds_sum"
                             " / madoguchi_click_to_first_frame_seconds_count")
            assert 0 < mean[0] < 30, mean
            await wait("madoguchi_recording_active", lambda v: bool(v) and v[0] >= 1)
            segments = await wait("madoguchi_recording_segments_total",
                                  lambda v: bool(v) and v[0] >= 1)
            written = await asyncio.to_thread(prom.values, "madoguchi_recording_bytes_total")
            assert written[0] > 1000 * segments[0]
            rss = await asyncio.to_thread(prom.values, "process_resident_memory_bytes")
            assert 20e6 < rss[0] < 4e9
            assert (await asyncio.to_thread(prom.values, "madoguchi_sms_sent_total"))[0] >= 1
            assert (await asyncio.to_thread(prom.values, "madoguchi_link_opens_total"))[0] >= 1

            print(f"\nprometheus saw: video {bps[0] / 1e3:.0f} kbit/s, audio {pps[0]:.0f} pkt/s, "
                  f"click-to-first-frame mean {mean[0]:.2f} s, {segments[0]:.0f} segments "
                  f"({written[0] / 1e3:.0f} kB), rss {rss[0] / 1e6:.0f} MB")

            # Ending the call: the gauge moves from live to ended.
            await staff.post(f"/api/consultations/{cid}/end")
            await wait('sum(madoguchi_consultations{state="ended"})',
                       lambda v: bool(v) and v[0] >= 1)
            await sws.close()
            await cws.close()
        finally:
            await citizen.close()
            await viewer.close()
            await citizen_http.close()

    # What Prometheus scraped holds no personal datum.
    text = server.metrics_text()
    record_metrics_text(text, "e2e")
    assert scan_text(text, "e2e", [token, PHONE.replace("-", "")]) == []
    # Every dashboard panel and every alert reads metrics this real server exports.
    exported = exported_metric_names(text)
    assert unknown_metrics(load_dashboard(), exported) == {}
    alert_metrics = set().union(*map(promql_metric_names,
                                     alert_exprs(ALERTS.read_text()).values()))
    assert alert_metrics - {"up"} - exported == set()
    labels = await asyncio.to_thread(prom.api, "labels")
    assert not {"consultation", "phone", "token", "id"} & set(labels)


async def test_readyz_on_a_real_server(madoguchi_server: ServerHandle) -> None:
    """/healthz and /readyz of `madoguchi serve`: every dependency ok, then the recording
    folder disappears (for a moment) and /readyz says which check fails, briefly, without
    a traceback."""
    server = madoguchi_server
    async with aiohttp.ClientSession() as session:
        async with session.get(server.operator_url + "/healthz") as r:
            assert (r.status, await r.text()) == (200, "ok")
        async with session.get(server.operator_url + "/readyz") as r:
            body = await r.json()
            assert r.status == 200, body
        assert {"store", "sms_gateway", "recording_folder", "kek"} <= set(body)
        assert set(body.values()) == {"ok"}

        recordings = server.data_dir / "recordings"
        moved = recordings.with_name("recordings-away")
        recordings.rename(moved)
        try:
            async with session.get(server.operator_url + "/readyz") as r:
                body = await r.json()
                assert r.status == 503
        finally:
            moved.rename(recordings)
        assert body["recording_folder"] == "folder missing"
        assert body["store"] == "ok" and body["kek"] == "ok"
        assert all(len(v) < 80 and "Traceback" not in v for v in body.values())
