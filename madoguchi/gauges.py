"""Gauges computed from state rather than counted on events: consultations by state and
ward (from the store), and the process collector (CPU seconds, resident memory).

``refresh_store_gauges(store)`` is cheap (one listing); the server calls it periodically
(:func:`refresh_loop`) and after each consultation change.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, ProcessCollector

from madoguchi import metrics
from madoguchi.logs import event
from signalling.store.interfaces import STATES

log = logging.getLogger(__name__)

# Every (state, ward) ever set, so a ward whose last consultation left drops to 0 rather
# than keeping its old value. Bounded: states x wards of this deployment.
_seen: set[tuple[str, str]] = set()
OTHER_STATE = "other"


async def refresh_store_gauges(store: Any) -> dict[tuple[str, str], int]:
    """Set ``madoguchi_consultations{state,ward}`` from the store; returns the counts.

    Every known state is exported for every ward seen (in consultations or staff
    accounts), so dashboards show 0 rather than a gap.
    """
    metrics.EVENT_LOOP_TASKS.set(len(asyncio.all_tasks()))
    consultations = await store.list_consultations()
    wards = {c.ward for c in consultations}
    list_staff = getattr(store, "list_staff", None)
    if list_staff is not None:
        wards |= {a.ward for a in await list_staff() if a.ward}
    tally = Tally((c.state if c.state in STATES else OTHER_STATE, c.ward)
                  for c in consultations)
    counts = {(state, ward): tally.get((state, ward), 0) for ward in wards for state in STATES}
    counts.update(tally)
    for key in _seen - counts.keys():
        counts[key] = 0
    for (state, ward), value in counts.items():
        metrics.CONSULTATIONS.labels(state=state, ward=ward).set(value)
    _seen.update(counts)
    return counts


async def refresh_loop(store: Any, interval: float = 15.0) -> None:
    """Refresh the store gauges every ``interval`` seconds until cancelled."""
    while True:
        try:
            await refresh_store_gauges(store)
        except Exception as exc:  # noqa: BLE001 - the store may be down; /readyz says so
            event(log, "gauge_refresh_failed", logging.WARNING, error=type(exc).__name__)
        await asyncio.sleep(interval)


def ensure_process_collector(registry: CollectorRegistry = REGISTRY) -> None:
    """Make sure process_cpu_seconds_total and process_resident_memory_bytes are exported.

    prometheus-client registers a ProcessCollector on the default registry at import; this
    restores it if something unregistered it, and adds one to a custom registry.
    """
    names = getattr(registry, "_names_to_collectors", None)
    if names is not None and "process_cpu_seconds_total" in names:
        return
    if names is None and registry.get_sample_value("process_cpu_seconds_total") is not None:
        return
    ProcessCollector(registry=registry)
