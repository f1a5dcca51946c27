"""Retention benchmark: how long one daemon run takes to delete N overdue consultations.

    scripts/bench retention --count 10000 [--files 3] [--segment-bytes 4096]
                            [--backend sqlite|redis]

Seeds N ended consultations past their deadline, each with a wrapped data key and a
recording folder of small sealed segments plus a manifest (recorder/segment.py), in a
temporary folder; then times ``RetentionDaemon.run_once`` (journal, receipts to a real
fsync'ing audit log, sweep, figures) and checks that nothing is left. Target: < 60 s for
10,000. With ``--backend redis`` a private redis-server is started on a free loopback
port and stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from madoguchi.clock import SystemClock
from madoguchi.config import Config

TARGET_SECONDS = 60.0
HOUR = 3600.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


async def _seed(store: Any, cfg: Config, count: int, files: int, size: int,
                now: float) -> None:
    from recorder.datakey import KeyEncryptionKey, data_key_id, new_data_key, wrap
    from recorder.layout import MANIFEST_NAME, segment_name
    from recorder.segment import KIND_MANIFEST, seal
    from signalling.store.interfaces import CREATED, ENDED, LIVE, Consultation, DataKey

    kek = KeyEncryptionKey.from_bytes(os.urandom(32))
    payload = os.urandom(size)
    root = cfg.recording_dir
    for i in range(count):
        cid = f"bench{i:06d}"
        end = now - 25 * HOUR + i * 0.001
        await store.create_consultation(Consultation(
            id=cid, ward="bench", staff_id="bench", created_at=end - 900, deadline=end + 24 * HOUR,
            state=ENDED, phone_enc="v1:bench-ciphertext", phone_masked="090-****-0000",
            link_hash="", times={CREATED: end - 900, LIVE: end - 600, ENDED: end},
            recording=True, recording_status="stopped"))
        key = new_data_key()
        await store.put_data_key(DataKey(cid, kek.key_id, wrap(kek, cid, key), end + 24 * HOUR))
        folder = root / cid
        folder.mkdir(parents=True, mode=0o700)
        kid = data_key_id(key)
        for n in range(1, files + 1):
            (folder / segment_name(n)).write_bytes(seal(key, kid, cid, n, payload))
        (folder / MANIFEST_NAME).write_bytes(seal(key, kid, cid, 1, b"{}", kind=KIND_MANIFEST))


async def _bench(args: argparse.Namespace, work: Path) -> int:
    from retention.daemon import RetentionDaemon
    from signalling.audit import AuditLog
    from signalling.store import open_store

    cfg = Config()
    cfg.server.data_dir = str(work / "data")
    cfg.recording.dir = str(work / "recordings")
    redis_proc = None
    if args.backend == "redis":
        redis_proc, url = _start_redis(work)
        cfg.store.backend = "redis"
        cfg.store.redis_url = url
    clock = SystemClock()
    store = open_store(cfg, clock)
    try:
        t = time.monotonic()
        await _seed(store, cfg, args.count, args.files, args.segment_bytes, clock.now())
        seed_s = time.monotonic() - t
        print(f"seeded {args.count} overdue consultations ({args.files} segments of "
              f"{args.segment_bytes} B + manifest each) in {seed_s:.1f} s", flush=True)
        audit = AuditLog(cfg.audit_path, clock, cfg.audit.keep_days)
        daemon = RetentionDaemon(store, cfg, clock, audit=audit)
        t = time.monotonic()
        report = await daemon.run_once()
        elapsed = time.monotonic() - t
        left = len(await store.consultation_deadlines())
        keys_left = len(await store.list_data_keys())
        folders_left = len(os.listdir(cfg.recording_dir)) if cfg.recording_dir.exists() else 0
        receipts = sum(1 for _ in audit.entries())
    finally:
        await store.close()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
    d = report.deletions
    print(f"retention run ({args.backend}): deleted {d.get('consultation', 0)} consultations, "
          f"{d.get('data_key', 0)} data keys, {d.get('recording_file', 0)} files, "
          f"{receipts} receipts in {elapsed:.2f} s "
          f"({elapsed / max(1, args.count) * 1000:.2f} ms per consultation); "
          f"target < {TARGET_SECONDS:.0f} s")
    print(f"left after the run: {left} consultations, {keys_left} data keys, "
          f"{folders_left} folders; run ok={report.ok}")
    load = os.getloadavg()
    print(f"machine load (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} cores")
    ok = report.ok and left == 0 and keys_left == 0 and folders_left == 0
    return 0 if ok else 1


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--files", type=int, default=3, help="segments per consultation")
    parser.add_argument("--segment-bytes", type=int, default=4096)
    parser.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--dir", default="", help="work folder (default: a temporary one, "
                                                   "removed afterwards)")


def run(args: argparse.Namespace) -> int:
    if args.count < 1 or args.files < 0 or args.segment_bytes < 0:
        print("bench retention: --count must be positive, --files and --segment-bytes not "
              "negative", file=sys.stderr)
        return 2
    if args.dir:
        work = Path(args.dir)
        work.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_bench(args, work))
    with tempfile.TemporaryDirectory(prefix="madoguchi-bench-retention-") as tmp:
        return asyncio.run(_bench(args, Path(tmp)))


DESCRIPTION = "Time one retention run over N overdue consultations with small segments."


def register(subparsers: Any) -> None:
    """``scripts/bench retention ...`` (the dispatcher in madoguchi/bench/__main__.py)."""
    p = subparsers.add_parser("retention", help="delete N overdue consultations in one "
                              "retention run (target < 60 s)", description=DESCRIPTION)
    _add_options(p)
    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m madoguchi.bench.retention",
                                     description=DESCRIPTION)
    _add_options(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
