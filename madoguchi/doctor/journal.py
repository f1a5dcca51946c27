"""The journal of ``LogNamespace=madoguchi``: logs carry consultation ids and times, so
journald must forget them within 24 hours (config/systemd/journald@madoguchi.conf)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from madoguchi.doctor import Context, Result, check, fail, ok, warn

CONF = Path("/etc/systemd/journald@madoguchi.conf")
FIX = "cp config/systemd/journald@madoguchi.conf /etc/systemd/ (docs/deploy.md, section 11)"
_UNITS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hour": 3600, "d": 86400,
          "day": 86400}


def seconds(value: str) -> int | None:
    """journald's time spans as used here ("22h", "1day", "3600"), or None."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", value)
    if not m or (m.group(2) and m.group(2) not in _UNITS):
        return None
    return int(m.group(1)) * _UNITS.get(m.group(2), 1)


def oldest_entry_seconds(conf: Path) -> int | None:
    """The oldest a log entry can get: MaxRetentionSec + MaxFileSec + one rotation."""
    parser = configparser.ConfigParser(strict=False)
    parser.read(conf)
    if not parser.has_section("Journal"):
        return None
    journal = parser["Journal"]
    # Without either, journald's defaults keep entries for weeks.
    retention = seconds(journal.get("MaxRetentionSec", ""))
    file_span = seconds(journal.get("MaxFileSec", ""))
    if retention is None or file_span is None:
        return None
    return retention + 2 * file_span


@check("logs.journal", startup=False)
def journal_retention(ctx: Context) -> Result:
    if not CONF.exists():
        return warn(f"{CONF} is missing: under systemd the logs would be kept as long as the "
                    "system journal's (weeks)", FIX)
    oldest = oldest_entry_seconds(CONF)
    if oldest is None:
        return fail(f"{CONF} sets no MaxRetentionSec and MaxFileSec: logs are kept for weeks",
                    FIX)
    if oldest > 24 * 3600:
        return fail(f"{CONF} keeps log entries up to {oldest / 3600:.0f} h", FIX)
    return ok(f"{CONF}: log entries gone within {oldest / 3600:.0f} h")
