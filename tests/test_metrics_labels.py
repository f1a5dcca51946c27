"""Metric labels are bounded enumerations: a label such as ``consultation``, ``phone`` or
``token`` (unbounded, personal) anywhere in the registry fails this test."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest

# Label names that only take a small fixed set of values.
ALLOWED_LABELS = {
    "state", "ward", "kind", "reason", "role", "result", "codec", "direction", "check",
    "provider", "status", "site",
    "le", "quantile",  # histogram / summary internals
}
# prometheus-client's own collectors (python_info, python_gc_*).
ALLOWED_FOREIGN_LABELS = {"generation", "implementation", "major", "minor", "patchlevel",
                          "version"}
PACKAGES = ("madoguchi", "sfu", "signalling", "recorder", "retention")


def import_project_modules() -> list[str]:
    """Import every project module so every metric defined anywhere is registered."""
    imported = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, package + "."):
            if info.name.endswith(("__main__", "_cli")) or ".cli" in info.name:
                continue
            try:
                importlib.import_module(info.name)
            except ImportError:
                continue  # work in progress elsewhere; its own tests report it
            imported.append(info.name)
    return imported


def label_names(registry: CollectorRegistry) -> dict[str, set[str]]:
    """``{metric name: label names}`` from declared labels and from collected samples."""
    out: dict[str, set[str]] = {}
    for collector in list(registry._collector_to_names):  # declared, even with no child yet
        names = getattr(collector, "_labelnames", None)
        if names is not None:
            out.setdefault(collector._name, set()).update(names)
    for family in registry.collect():
        for sample in family.samples:
            out.setdefault(family.name, set()).update(sample.labels)
    return out


def violations(registry: CollectorRegistry) -> list[str]:
    bad = []
    for metric, names in sorted(label_names(registry).items()):
        allowed = ALLOWED_LABELS if metric.startswith("madoguchi_") else \
            ALLOWED_LABELS | ALLOWED_FOREIGN_LABELS
        bad += [f"{metric}{{{name}}}" for name in sorted(names - allowed)]
    return bad


def test_every_label_in_the_registry_is_bounded() -> None:
    imported = import_project_modules()
    assert "madoguchi.metrics" in imported
    names = label_names(REGISTRY)
    assert "madoguchi_consultations" in names and names["madoguchi_consultations"] == \
        {"state", "ward"}
    assert violations(REGISTRY) == []


def test_every_project_metric_is_prefixed_and_documented() -> None:
    import_project_modules()
    bad = []
    for family in REGISTRY.collect():
        if family.name.startswith(("process_", "python_")):
            continue
        if not family.name.startswith("madoguchi_") or not family.documentation.strip():
            bad.append(family.name)
    assert bad == []


def _registry_with(labels: Iterable[str]) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("madoguchi_test_total", "test", list(labels), registry=registry)
    Gauge("madoguchi_ok", "fine", ["state"], registry=registry).labels(state="live").set(1)
    return registry


def test_the_guard_fails_on_unbounded_labels() -> None:
    for bad in ("consultation", "phone", "token", "ip"):
        registry = _registry_with(["kind", bad])
        assert violations(registry) == [f"madoguchi_test{{{bad}}}"]
    assert violations(_registry_with(["kind", "reason"])) == []


def test_no_label_value_looks_personal() -> None:
    """Label values in the live exposition hold no phone number (E.164 or national)."""
    from tests.fixtures.privacy import record_metrics_text, scan_text

    import_project_modules()
    text = generate_latest(REGISTRY).decode()
    record_metrics_text(text, "registry")
    assert scan_text(text, "registry") == []


def test_pre_initialised_reasons_match_their_sources() -> None:
    """Pre-initialised label values (so alerts' increase() sees the first failure) follow
    the modules that emit them."""
    from madoguchi import metrics
    from signalling.sms.interfaces import FAILURE_REASONS

    assert set(metrics.SMS_FAILURE_REASONS) == set(FAILURE_REASONS)
    text = generate_latest(REGISTRY).decode()
    for reason in FAILURE_REASONS:
        assert f'madoguchi_sms_failed_total{{reason="{reason}"}} ' in text
