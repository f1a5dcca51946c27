"""Markers on a review's timeline: what happened during the call, at which position.

From what the server already knows, no personal data: the audit log (links staff sent
during the call, citizen reconnects) and the recording's manifest (gaps between segments:
the phone's media stopped). Wall-clock events are placed relative to the moment the call
went live (``times["live"]``), which is where the recording starts to within a fraction of
a second; positions are seconds from the start of the recording.
"""

from __future__ import annotations

import asyncio
from typing import Any

from recorder.manifest import Manifest

GAP_SECONDS = 1.0  # a pause in the recorded media longer than this is a marker
AUDIT_MARKERS = {"send_link": "link_sent", "citizen_reconnected": "reconnect"}


def gap_markers(manifest: Manifest) -> list[dict[str, Any]]:
    out = []
    segments = manifest.segments
    start = segments[0].first_pts if segments else 0
    for before, after in zip(segments, segments[1:], strict=False):
        end = before.first_pts + round(before.duration * 1000)
        if after.first_pts - end > GAP_SECONDS * 1000:
            out.append({"at": round((end - start) / 1000, 3), "kind": "gap",
                        "seconds": round((after.first_pts - end) / 1000, 1)})
    return out


def _audit_events(audit: Any, cid: str) -> list[tuple[float, str]]:
    out = []
    for entry in audit.entries():
        kind = AUDIT_MARKERS.get(str(entry.get("action", "")))
        if kind and entry.get("consultation") == cid:
            try:
                out.append((float(entry.get("ts", 0)), kind))
            except (TypeError, ValueError):
                continue
    return out


async def markers(c: Any, manifest: Manifest, audit: Any, duration: float
                  ) -> list[dict[str, Any]]:
    """Markers sorted by position, each ``{"at": seconds, "kind": ...}``."""
    out = gap_markers(manifest)
    live = (c.times or {}).get("live")
    if audit is not None and live:
        for ts, kind in await asyncio.to_thread(_audit_events, audit, c.id):
            at = ts - float(live)
            if 0 <= at <= duration + 1:
                out.append({"at": round(at, 3), "kind": kind})
    return sorted(out, key=lambda m: m["at"])
