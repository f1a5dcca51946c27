"""Prometheus alert rules: promtool check and unit tests, sensitivity to thresholds, every
alert tested and documented, every metric an alert reads exported by the server."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest

from tests.fixtures.prometheus import exported_metric_names, promql_metric_names
from tests.test_metrics_labels import import_project_modules

REPO = Path(__file__).resolve().parents[1]
PROM_DIR = REPO / "config" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool is not installed (apt-get install prometheus)")
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def alert_names(text: str) -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)\s*$", text, flags=re.M)


def alert_exprs(text: str) -> dict[str, str]:
    """``{alert: expr}`` from alerts.yml (single-line or folded ``>-`` expressions)."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    current = ""
    for i, line in enumerate(lines):
        m = re.match(r"^\s*- alert: (\w+)", line)
        if m:
            current = m.group(1)
        m = re.match(r"^(\s*)expr: ?(.*)$", line)
        if m and current:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in (">-", ">", "|", "|-"):
                body = []
                for follow in lines[i + 1:]:
                    if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                        break
                    body.append(follow.strip())
                value = " ".join(body)
            out[current] = value
    return out


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names(ALERTS.read_text()))} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_example_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", "prometheus.example.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "job_name: madoguchi" in (PROM_DIR / "prometheus.example.yml").read_text()


@pytest.mark.parametrize("old,new", [
    ("madoguchi_retention_overdue > 0", "madoguchi_retention_overdue > 5"),
    ("> 23 * 3600", "> 24 * 3600"),
    ("      ) > 0.2", "      ) > 0.5"),
    ("> 0.05", "> 0.2"),
    ("up{job=\"madoguchi\"} == 0\n        for: 2m", "up{job=\"madoguchi\"} == 0\n        for: 10m"),
    ("unless madoguchi_recording_errors_total offset 10m", "unless madoguchi_recording_errors_total"),
])
def test_unit_tests_catch_a_changed_threshold(tmp_path: Path, old: str, new: str) -> None:
    """The unit tests can fail: a weakened rule makes `promtool test rules` fail."""
    text = ALERTS.read_text()
    assert old in text
    (tmp_path / "alerts.yml").write_text(text.replace(old, new, 1))
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0, f"mutation {old!r} -> {new!r} went unnoticed"


def test_every_alert_is_unit_tested_and_documented() -> None:
    names = alert_names(ALERTS.read_text())
    assert len(names) >= 8 and len(set(names)) == len(names)
    tests = ALERTS_TEST.read_text()
    untested = [n for n in names if not re.search(rf"alertname: {n}\n\s+exp_alerts:\n\s+- ",
                                                  tests)]
    assert untested == [], "alerts never shown firing in alerts_test.yml"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Operators", 1)[1] if "## Operators" in readme else ""
    undocumented = [n for n in names if f"#### {n}" not in section]
    assert undocumented == [], "alerts without a README entry under ## Operators"
    for name in names:  # the runbook annotation points at the README heading
        assert f'runbook: "README.md#{name.lower()}"' in ALERTS.read_text()


def test_every_metric_an_alert_reads_is_exported() -> None:
    import_project_modules()
    exported = exported_metric_names(generate_latest(REGISTRY).decode())
    exprs = alert_exprs(ALERTS.read_text())
    assert set(exprs) == set(alert_names(ALERTS.read_text()))
    missing = {}
    for alert, expr in exprs.items():
        names = promql_metric_names(expr) - {"up"}  # up is Prometheus's own
        assert names or alert in ("MadoguchiDown", "MadoguchiAbsent"), alert
        if names - exported:
            missing[alert] = sorted(names - exported)
    assert missing == {}
