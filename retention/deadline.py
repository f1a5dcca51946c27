"""Deadline rules: when each consultation's personal data must be gone.

- A call that ended: its end + ``[retention] period_hours`` (at most 24 h; the
  configuration refuses more, see madoguchi.config.validate).
- A consultation that never connected (link never opened, expired, failed SMS, ended
  by staff before the citizen came): one period after it became final, and never later
  than its creation + 24 h.
- A consultation still open: creation + 24 h until it connects; a live call keeps the
  deadline the lifecycle gave it when it went live.

The lifecycle (signalling/consultations.py) stores the deadline on every transition;
these functions are the single statement of the rules, and retention deletes by the
stored deadline only.
"""

from __future__ import annotations

from madoguchi.config import Config
from signalling.store.interfaces import ENDED, EXPIRED, FAILED, LIVE, Consultation

HOUR = 3600.0
# The promise: nothing personal survives 24 h after the call (or after creation for a
# consultation that never connected).
MAX_RETENTION_SECONDS = 24 * HOUR
# A deadline comes this much before the 24 h at the latest, so the run that deletes
# (woken at the deadline, see daemon.py) has finished within the promise.
RUN_MARGIN_SECONDS = 600.0
NEVER_CONNECTED_MAX_SECONDS = MAX_RETENTION_SECONDS - RUN_MARGIN_SECONDS


def period_seconds(cfg: Config) -> float:
    """The effective period: ``period_hours``, at most 24 h less the run margin."""
    return min(cfg.retention.period_hours * HOUR, MAX_RETENTION_SECONDS - RUN_MARGIN_SECONDS)


def on_time_grace(cfg: Config) -> float:
    """How long after its deadline a deletion still keeps the 24 h promise."""
    return MAX_RETENTION_SECONDS - period_seconds(cfg)


def after_end(ended_at: float, cfg: Config) -> float:
    """Deadline of a call that connected and ended at ``ended_at``."""
    return ended_at + period_seconds(cfg)


def never_connected(created_at: float, cfg: Config, final_at: float | None = None) -> float:
    """Deadline of a consultation that never connected (final at ``final_at`` if known)."""
    cap = created_at + NEVER_CONNECTED_MAX_SECONDS
    if final_at is None:
        return cap
    return min(final_at + period_seconds(cfg), cap)


def deadline_for(c: Consultation, cfg: Config) -> float:
    """The deadline the rules give ``c`` from its state and ``times``."""
    connected = LIVE in c.times
    if c.state in (ENDED, EXPIRED, FAILED):
        final_at = c.times.get(c.state, c.created_at)
        return after_end(final_at, cfg) if connected else never_connected(
            c.created_at, cfg, final_at)
    if c.state == LIVE:
        return max(c.deadline, after_end(c.times.get(LIVE, c.created_at), cfg))
    return never_connected(c.created_at, cfg)


def retention_start(deadline: float, cfg: Config) -> float:
    """When a datum's retention period began (the call's end, for an ended call)."""
    return deadline - period_seconds(cfg)
