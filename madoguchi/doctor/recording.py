"""The recording folder: writable by the service, with room for the day's calls."""

from __future__ import annotations

import os
import shutil
import uuid

from madoguchi.doctor import Context, Result, check, fail, ok, warn

GIB = 1024 ** 3
# A call records ~1.5 Mbit/s at most: ~0.7 GiB an hour. Below FAIL a busy morning can
# fill the disk (recording errors, calls marked "recording failed"); WARN leaves a margin.
FAIL_FREE_BYTES = 2 * GIB
WARN_FREE_BYTES = 10 * GIB


@check("recording.folder")
def recording_folder(ctx: Context) -> Result:
    cfg = ctx.cfg
    if not cfg.recording.enabled:
        return ok("recording is off")
    folder = cfg.recording_dir
    fix = f"mkdir -p {folder}; chown madoguchi: {folder}; chmod 700 {folder}"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # serve creates the rest (0700)
    probe = existing / f".doctor-{uuid.uuid4().hex}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        return fail(f"recording folder {folder} is not writable ({exc.strerror})", fix)
    free = shutil.disk_usage(existing).free
    shown = f"{free / GIB:.1f} GiB free"
    more = f"free space on the disk of {folder}, or move [recording] dir to a larger disk"
    if free < FAIL_FREE_BYTES:
        return fail(f"recording folder {folder}: only {shown}", more)
    if free < WARN_FREE_BYTES:
        return warn(f"recording folder {folder}: {shown}", more)
    return ok(f"recording folder {folder} writable, {shown}")
