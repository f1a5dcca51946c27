"""What the server calls: start-up check, and one recorder per consultation.

    kek = check_recording_ready(cfg)            # at start; raises RecordingSetupError
    rec = await start_recording(store, kek, cfg, cid, room, deadline=c.deadline,
                                on_status=lambda s: ...)   # Recorder, or None
    await rec.close()                           # at the end of the call

or the same through ``RecordingService`` (from_config / bind / start / stop / close).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from madoguchi import metrics
from madoguchi.clock import Clock, SystemClock
from madoguchi.config import Config, ConfigError
from madoguchi.logs import event
from recorder.atomic import ensure_dir
from recorder.datakey import KeyEncryptionKey, KeyError_, data_key_id, new_data_key, unwrap, wrap
from recorder.recorder import FAILED, Recorder
from signalling.store.interfaces import DataKey

log = logging.getLogger(__name__)


class RecordingSetupError(ConfigError):
    """Recording is enabled but cannot work (no KEK, KEK inside the recording folder,
    recording folder not writable): the server must refuse to start."""


def check_recording_ready(cfg: Config, environ: dict[str, str] | None = None
                          ) -> KeyEncryptionKey | None:
    """At server start: None when recording is off, else the loaded KEK.

    Raises RecordingSetupError (a ConfigError) with a clear message otherwise.
    """
    rc = cfg.recording
    if not rc.enabled:
        return None
    try:
        kek = KeyEncryptionKey.load(rc.kek_file, rc.kek_env, environ)
    except KeyError_ as exc:
        raise RecordingSetupError(f"recording is enabled but the key-encryption key is not "
                                  f"usable: {exc} (set [recording] kek_file or {rc.kek_env}, "
                                  "or disable recording)") from None
    folder = cfg.recording_dir.resolve()
    if rc.kek_file:
        kek_path = Path(rc.kek_file).resolve()
        if kek_path.is_relative_to(folder):
            raise RecordingSetupError("the key-encryption key file must not be inside the "
                                      f"recording folder {folder}")
    try:
        ensure_dir(folder)
        probe = folder / ".write-probe.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RecordingSetupError(f"recording folder {folder} is not writable "
                                  f"({exc.strerror})") from None
    return kek


async def start_recording(store: Any, kek: KeyEncryptionKey, cfg: Config,
                          consultation_id: str, room: Any, *, deadline: float,
                          on_status: Callable[[str], None] | None = None,
                          store_timeout: float = 10.0) -> Recorder | None:
    """Create (or reuse, after a restart) the consultation's data key, start a recorder and
    attach it to the room. Returns None, after ``on_status("failed")``, if recording cannot
    start; never raises for a recording problem (the call goes on without it)."""
    try:
        record = await asyncio.wait_for(store.get_data_key(consultation_id), store_timeout)
        if record is not None:
            # A restart during the call: keep the key, or the earlier segments are lost.
            data_key = unwrap(kek, consultation_id, record.wrapped) \
                if record.key_id == kek.key_id else None
            if data_key is None:
                raise KeyError_("stored data key is wrapped under another KEK")
        else:
            data_key = new_data_key()
            await asyncio.wait_for(store.put_data_key(DataKey(
                consultation_id, kek.key_id, wrap(kek, consultation_id, data_key), deadline)),
                store_timeout)
    except Exception as exc:  # noqa: BLE001 - no recording, the call goes on
        reason = "key" if isinstance(exc, KeyError_) else "key_store"
        metrics.RECORDING_ERRORS.labels(reason=reason).inc()
        event(log, "recording_failed", logging.ERROR, consultation=consultation_id,
              reason=reason, detail=type(exc).__name__)
        if on_status is not None:
            on_status(FAILED)
        return None
    recorder = Recorder(consultation_id, data_key, data_key_id(data_key), cfg.recording,
                        cfg.recording_dir, request_keyframe=room.request_keyframe,
                        on_status=on_status)
    recorder.start()
    if recorder.status == FAILED:
        return None
    room.add_sink(recorder)
    room.request_keyframe()
    return recorder


StatusCallback = Callable[[str, str], None]  # (consultation id, status)


class RecordingService:
    """The server's handle on recording: one KEK, one recorder per live consultation."""

    def __init__(self, cfg: Config, kek: KeyEncryptionKey, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.kek: KeyEncryptionKey | None = kek
        self.clock = clock or SystemClock()
        self.store: Any = None
        self.recorders: dict[str, Recorder] = {}

    @classmethod
    def from_config(cls, cfg: Config, clock: Clock | None = None) -> RecordingService:
        """Raises RecordingSetupError when recording is enabled and cannot work."""
        kek = check_recording_ready(cfg)
        if kek is None:
            raise RecordingSetupError("recording is disabled in the configuration")
        return cls(cfg, kek, clock)

    def bind(self, store: Any) -> None:
        self.store = store

    async def check_kek(self) -> None:
        """Readiness check (operator /readyz): the KEK is loaded."""
        from madoguchi.operator import NotReady
        if self.kek is None:
            raise NotReady("key-encryption key not loaded")

    async def start(self, consultation: Any, room: Any, on_status: StatusCallback) -> bool:
        """Start recording a consultation's room; False if it could not start."""
        cid = consultation.id
        current = self.recorders.get(cid)
        if current is not None and current.status == "recording":
            return True
        if self.store is None or self.kek is None:
            return False
        deadline = getattr(consultation, "deadline", 0.0) or (
            self.clock.now() + self.cfg.retention.period_hours * 3600)
        recorder = await start_recording(self.store, self.kek, self.cfg, cid, room,
                                         deadline=deadline,
                                         on_status=lambda status: on_status(cid, status))
        if recorder is None:
            return False
        self.recorders[cid] = recorder
        return True

    async def stop(self, consultation_id: str) -> bool:
        """Flush and close a consultation's recorder; True if it stopped cleanly."""
        recorder = self.recorders.pop(consultation_id, None)
        if recorder is None:
            return False
        await recorder.close()
        return recorder.status == "stopped"

    async def close(self) -> None:
        for cid in list(self.recorders):
            await self.stop(cid)
