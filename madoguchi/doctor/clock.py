"""The clock: deadlines, link lifetimes, JWTs, certificates and CRLs all trust it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from madoguchi.doctor import Context, Result, check, fail, ok, unknown

FIX = "apt-get install chrony (or systemctl enable --now systemd-timesyncd)"
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")


def _run(*cmd: str) -> str | None:
    """stdout of ``cmd``, or None when it cannot tell (missing, no systemd, error)."""
    if not shutil.which(cmd[0]):
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def clock_state() -> tuple[bool | None, str]:
    """(synchronised?, how we know); None when no time service answers."""
    out = _run("chronyc", "-n", "tracking")
    if out:
        leap = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("Leap status")), "")
        return leap == "Normal", f"chronyc tracking (leap status {leap or '?'})"
    out = _run("timedatectl", "show", "-p", "NTPSynchronized", "--value")
    if out and out.strip() in ("yes", "no"):
        return out.strip() == "yes", f"timedatectl NTPSynchronized={out.strip()}"
    if TIMESYNCD_FLAG.exists():
        return True, f"systemd-timesyncd ({TIMESYNCD_FLAG})"
    return None, "neither chronyc, timedatectl nor systemd-timesyncd answered"


@check("clock.synchronised", startup=False)
def clock_synchronised(ctx: Context) -> Result:
    synced, how = clock_state()
    if synced is None:
        return unknown(f"cannot tell whether the clock is synchronised: {how}", FIX)
    if not synced:
        return fail(f"the clock is not synchronised ({how})", FIX)
    return ok(f"clock synchronised ({how})")
