"""A real Prometheus (Debian package) scrapes the operator listener: series arrive with
plausible values, the bearer token is enforced, the alert rules load and evaluate, and every
dashboard query is valid PromQL against the live data. One Prometheus for everything: it
applies its scrape targets only ~5 s after starting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from madoguchi import metrics
from madoguchi.clock import ManualClock
from madoguchi.config import Config
from madoguchi.gauges import refresh_store_gauges
from madoguchi.operator import bound_port, operator_app, start_operator
from signalling.store.interfaces import Consultation
from signalling.store.sqlite import SqliteStore
from tests.fixtures.ports import wait_for
from tests.fixtures.prometheus import PrometheusServer
from tests.test_dashboard import load as load_dashboard
from tests.test_dashboard import panel_queries

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TOKEN = "scrape-token-for-tests-0123"
WARD = "試験区"


@pytest.fixture
async def operator_port() -> AsyncIterator[int]:
    cfg = Config()
    cfg.operator.bearer_token = TOKEN
    runner: web.AppRunner = await start_operator(operator_app(cfg, {}), "127.0.0.1", 0)
    yield bound_port(runner)
    await runner.cleanup()


def grafana_to_promql(expr: str) -> str:
    """Substitute the dashboard's variables the way Grafana would."""
    return (expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
            .replace("$instance", ".*").replace("$ward", ".*"))


async def test_prometheus_scrapes_the_operator_listener(
        operator_port: int, prometheus_factory, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db", ManualClock())
    now = store.clock.now()
    await store.create_consultation(Consultation(
        id="c-live", ward=WARD, staff_id="s", created_at=now, deadline=now + 86400,
        state="live"))
    await refresh_store_gauges(store)
    sent_before = metrics.SMS_SENT._value.get()

    prom: PrometheusServer = await asyncio.to_thread(
        prometheus_factory, [f"127.0.0.1:{operator_port}"], bearer_token=TOKEN,
        rule_files=[REPO / "config" / "prometheus" / "alerts.yml"],
        extra_jobs=[{"job_name": "wrong-token", "scrape_interval": "1s",
                     "authorization": {"type": "Bearer", "credentials": "wrong-token-value"},
                     "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"]}]}])

    def all_scraped() -> bool:
        targets = prom.targets()
        return len(targets) == 2 and all(t.get("health") in ("up", "down") for t in targets)

    await asyncio.to_thread(wait_for, all_scraped, 20.0, "both jobs scraped")
    health = {t["labels"]["job"]: t for t in await asyncio.to_thread(prom.targets)}
    assert health["madoguchi"]["health"] == "up", health["madoguchi"]["lastError"]
    # The operator listener refuses a scrape without the right bearer token.
    assert health["wrong-token"]["health"] == "down"
    assert "401" in health["wrong-token"]["lastError"], json.dumps(health["wrong-token"])

    async def wait(expr: str, predicate=bool, timeout: float = 20.0) -> list[float]:
        return await asyncio.to_thread(prom.wait_for, expr, predicate, timeout)

    assert await wait('up{job="madoguchi"}', lambda v: v == [1.0]) == [1.0]
    assert await wait('up{job="wrong-token"}', lambda v: v == [0.0]) == [0.0]
    rss = await wait('process_resident_memory_bytes{job="madoguchi"}')
    assert 10e6 < rss[0] < 8e9
    cpu = await wait('process_cpu_seconds_total{job="madoguchi"}')
    assert 0 < cpu[0] < 3600
    live = await wait(f'madoguchi_consultations{{state="live", ward="{WARD}"}}')
    assert live == [1.0]
    await wait(f'madoguchi_consultations{{state="ended", ward="{WARD}"}}', lambda v: v == [0.0])
    refusal_reasons = await asyncio.to_thread(
        prom.query, 'madoguchi_link_refusals_total{job="madoguchi"}')
    assert {"expired", "unknown", "rate_limited"} <= {r["metric"]["reason"]
                                                      for r in refusal_reasons}

    # Values move: what the process counts is what Prometheus sees on the next scrape.
    metrics.SMS_SENT.inc(3)
    await store.update_consultation("c-live", {"state": "ended"})
    await refresh_store_gauges(store)
    await wait("madoguchi_sms_sent_total", lambda v: v == [sent_before + 3])
    await wait(f'madoguchi_consultations{{state="ended", ward="{WARD}"}}', lambda v: v == [1.0])
    await wait(f'madoguchi_consultations{{state="live", ward="{WARD}"}}', lambda v: v == [0.0])

    # The alert rules load and evaluate without error against the live series.
    metrics.RETENTION_OVERDUE.set(2)
    try:
        def overdue_pending() -> bool:
            alerts = prom.api("alerts")["alerts"]
            return any(a["labels"]["alertname"] == "MadoguchiRetentionOverdue"
                       and a["state"] == "pending" for a in alerts)
        await asyncio.to_thread(wait_for, overdue_pending, 20.0, "the overdue alert")
    finally:
        metrics.RETENTION_OVERDUE.set(0)
    groups = (await asyncio.to_thread(prom.api, "rules"))["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 8
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
    firing = [a["labels"]["alertname"] for a in (await asyncio.to_thread(prom.api, "alerts"))
              ["alerts"] if a["state"] == "firing"]
    assert "MadoguchiDown" not in firing and "MadoguchiAbsent" not in firing

    # Every dashboard query is valid PromQL on this data (Grafana variables substituted).
    errors = {}
    for where, expr in panel_queries(load_dashboard()):
        if where.startswith("variable"):
            continue
        try:
            await asyncio.to_thread(prom.query, grafana_to_promql(expr))
        except Exception as exc:  # noqa: BLE001 - collect all
            errors[where] = str(exc)
    assert errors == {}
    # …and the main panels have data.
    assert await asyncio.to_thread(
        prom.values, grafana_to_promql('sum by (state) (madoguchi_consultations'
                                       '{instance=~"$instance", ward=~"$ward"})'))
