"""Forwarding latency probe: socket arrival -> sent to a subscriber (benchmarks, tests)."""

from __future__ import annotations

from array import array


class LatencyProbe:
    """Collects per-packet forwarding delays in seconds (bounded memory)."""

    def __init__(self, max_samples: int = 2_000_000) -> None:
        self.max_samples = max_samples
        self.samples = array("d")

    def record(self, seconds: float) -> None:
        if len(self.samples) < self.max_samples:
            self.samples.append(seconds)

    def reset(self) -> None:
        self.samples = array("d")

    def percentile(self, p: float) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        k = min(len(ordered) - 1, max(0, int(round(p / 100.0 * (len(ordered) - 1)))))
        return ordered[k]
