"""Markers on a review's timeline: what happened during the call, at which position.

From what the server already knows: the consultation record's call times (links staff
sent, ``times["link_sent.N"]``, and citizen reconnects, ``times["reconnect.N"]``; deleted
with the record) and the recording's manifest (gaps between segments: the phone's media
stopped). Wall-clock events are placed relative to the moment the call went live
(``times["live"]``), which is where the recording starts to within a fraction of a second;
positions are seconds from the start of the recording. (Not the audit log: it names
consultations by pseudonym and dates them to the day only.)
"""

from __future__ import annotations

from typing import Any

from recorder.manifest import Manifest

GAP_SECONDS = 1.0  # a pause in the recorded media longer than this is a marker
EVENT_MARKERS = ("link_sent", "reconnect")  # times["<kind>.<n>"] in the consultation


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


def markers(c: Any, manifest: Manifest, duration: float) -> list[dict[str, Any]]:
    """Markers sorted by position, each ``{"at": seconds, "kind": ...}``."""
    out = gap_markers(manifest)
    times = c.times or {}
    live = times.get("live")
    if live:
        for key, when in times.items():
            kind = key.split(".", 1)[0]
            if kind in EVENT_MARKERS and "." in key:
                at = float(when) - float(live)
                if 0 <= at <= duration + 1:
                    out.append({"at": round(at, 3), "kind": kind})
    return sorted(out, key=lambda m: m["at"])
