"""The Grafana dashboard: well-formed, the required rows, and every panel query refers to
metrics that a live /metrics really exports."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from madoguchi.config import Config
from madoguchi.operator import bound_port, operator_app, start_operator
from tests.fixtures.privacy import record_metrics_text
from tests.fixtures.prometheus import exported_metric_names, promql_metric_names
from tests.test_metrics_labels import import_project_modules

DASHBOARD = Path(__file__).resolve().parents[1] / "config" / "grafana" / "madoguchi.json"
REQUIRED_ROWS = ["Calls", "Media quality", "Recording", "Retention", "SMS", "Security"]
# What the issue asks the dashboard to show, at least (series names as queried).
REQUIRED_METRICS = {
    "madoguchi_consultations", "madoguchi_sfu_active_peers",
    "madoguchi_sfu_forwarded_packets_total", "madoguchi_sfu_forwarded_bytes_total",
    "madoguchi_sfu_subscriber_loss_ratio_sum", "madoguchi_sfu_subscriber_jitter_seconds_bucket",
    "madoguchi_sfu_rtt_seconds_bucket", "madoguchi_click_to_first_frame_seconds_bucket",
    "madoguchi_sfu_keyframe_requests_total",
    "madoguchi_recording_bytes_total", "madoguchi_recording_segments_total",
    "madoguchi_recording_errors_total", "madoguchi_recording_encrypt_seconds_bucket",
    "madoguchi_retention_oldest_personal_datum_age_seconds", "madoguchi_retention_overdue",
    "madoguchi_retention_deletions_total", "madoguchi_retention_last_success_timestamp_seconds",
    "madoguchi_sms_sent_total", "madoguchi_sms_delivered_total", "madoguchi_sms_failed_total",
    "madoguchi_link_opens_total", "madoguchi_link_refusals_total",
    "madoguchi_logins_total", "madoguchi_account_lockouts_total",
    "process_cpu_seconds_total", "process_resident_memory_bytes",
}
PROMETHEUS_OWN = {"up"}  # made by Prometheus, not by the server


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, PromQL)`` for every panel target and every templating query."""
    out = []
    for p in panels(dashboard):
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t.get('refId')}", t.get("expr", "")))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip())
            out.append((f"variable {var['name']}", m.group(1) if m else query))
    return out


def unknown_metrics(dashboard: dict[str, Any], exported: set[str]) -> dict[str, list[str]]:
    bad = {}
    for where, expr in panel_queries(dashboard):
        names = promql_metric_names(expr) - PROMETHEUS_OWN
        missing = sorted(names - exported)
        if missing or not promql_metric_names(expr):
            bad[where] = missing or ["<no metric>"]
    return bad


@pytest.fixture
async def live_metrics() -> str:
    """/metrics of the operator listener with every project module's metrics registered,
    fetched over a real loopback socket."""
    import_project_modules()
    runner = await start_operator(operator_app(Config(), {}), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{bound_port(runner)}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    finally:
        await runner.cleanup()
    record_metrics_text(text, "dashboard-test")
    return text


def test_dashboard_structure() -> None:
    dash = load()
    assert dash["title"] == "Madoguchi" and dash["uid"] == "madoguchi"
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows[:len(REQUIRED_ROWS)] == REQUIRED_ROWS
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for p in panels(dash):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                 for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"panel {p['title']!r} overlaps another"
        occupied |= cells
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "instance", "ward"]


def test_every_row_has_panels() -> None:
    dash = load()
    current, counts = None, {}
    for p in dash["panels"]:
        if p["type"] == "row":
            current = p["title"]
            counts[current] = len(p.get("panels", []))
        elif current:
            counts[current] += 1
    assert all(counts[r] >= 2 for r in REQUIRED_ROWS), counts


def test_dashboard_covers_the_required_metrics() -> None:
    used = set().union(*(promql_metric_names(q) for _, q in panel_queries(load())))
    assert REQUIRED_METRICS - used == set()


def test_every_panel_query_uses_exported_metrics(live_metrics: str) -> None:
    exported = exported_metric_names(live_metrics)
    assert "madoguchi_consultations" in exported and "process_cpu_seconds_total" in exported
    assert unknown_metrics(load(), exported) == {}


def test_the_check_catches_a_misspelt_metric(live_metrics: str) -> None:
    exported = exported_metric_names(live_metrics)
    dash = copy.deepcopy(load())
    target = next(p for p in panels(dash) if p["type"] != "row")["targets"][0]
    target["expr"] = target["expr"].replace("madoguchi_consultations", "madoguchi_consultation")
    assert list(unknown_metrics(dash, exported).values()) == [["madoguchi_consultation"]]
