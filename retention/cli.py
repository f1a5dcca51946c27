"""``madoguchi retention``: the retention daemon stand-alone, and its figures.

    madoguchi retention [run] [--once]    run the daemon (every [retention] interval_seconds)
    madoguchi retention status [--json]   the figures the metrics show (no personal data)

Running it stand-alone suits several nodes or a separate host; set
``[retention] embedded = false`` so ``madoguchi serve`` does not run it too (the lock
would keep two from racing anyway). Exit status of ``--once``: 0 done, 1 failed,
75 another daemon holds the lock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from madoguchi.cli import add_config_option, config_from_args
from madoguchi.clock import Clock, default_clock
from madoguchi.config import Config, ConfigError

EXIT_LOCKED = 75  # EX_TEMPFAIL


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("retention",
                              help="delete personal data past its deadline (daemon), status")
    add_config_option(p)
    p.add_argument("--once", action="store_true", help="one run, then exit")
    p.set_defaults(func=cmd_run)
    sub = p.add_subparsers(dest="retention_command", metavar="ACTION")
    r = sub.add_parser("run", help="run the daemon (default)")
    add_config_option(r)
    r.add_argument("--once", action="store_true", help="one run, then exit")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("status", help="oldest datum age, overdue count, last run, deletions")
    add_config_option(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)


def _audit(cfg: Config, clock: Clock) -> Any:
    from signalling.audit import AuditLog
    return AuditLog(cfg.audit_path, clock, cfg.audit.keep_days)


def _load(args: argparse.Namespace) -> Config | None:
    try:
        cfg: Config = config_from_args(args)
        return cfg
    except ConfigError as exc:
        print(f"madoguchi retention: {exc}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return 2
    from madoguchi.logs import setup_logging
    setup_logging(cfg.log.format, cfg.log.level)
    return asyncio.run(run(cfg, default_clock(), once=bool(args.once)))


async def run(cfg: Config, clock: Clock, once: bool = False, audit: Any = None) -> int:
    from retention.daemon import RetentionDaemon
    from signalling.store import open_store
    from signalling.store.interfaces import StoreError

    try:
        store = open_store(cfg, clock)
        await store.ping()
    except StoreError as exc:
        print(f"madoguchi retention: {exc}", file=sys.stderr)
        return 1
    try:
        daemon = RetentionDaemon(store, cfg, clock,
                                 audit=audit if audit is not None else _audit(cfg, clock))
        if once:
            report = await daemon.run_once()
            if report.skipped:
                return EXIT_LOCKED
            return 0 if report.ok else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await daemon.run_forever(stop)
        return 0
    finally:
        await store.close()


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return 2
    try:
        figures = asyncio.run(status(cfg, default_clock()))
    except RuntimeError as exc:
        print(f"madoguchi retention: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        print(format_status(figures))
    return 0


async def status(cfg: Config, clock: Clock) -> dict[str, Any]:
    from retention.folder import RecordingFolder
    from retention.status import current_status
    from signalling.store import open_store
    from signalling.store.interfaces import StoreError

    try:
        store = open_store(cfg, clock)
    except StoreError as exc:
        raise RuntimeError(str(exc)) from None
    try:
        st = await current_status(store, RecordingFolder(cfg.recording_dir), cfg, clock.now())
    except StoreError as exc:
        raise RuntimeError(str(exc)) from None
    finally:
        await store.close()
    return st.as_dict()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s"


def format_status(f: dict[str, Any]) -> str:
    now = f["now"]
    last = f["last_success"]
    lines = [
        f"oldest personal datum age   {_age(f['oldest_personal_datum_age_seconds'])}"
        f"  ({f['oldest_personal_datum_age_seconds']:.0f} s)",
        f"overdue                     {f['overdue']}",
        "last successful run         "
        + ("never" if last is None else f"{_age(now - last)} ago ({last:.0f})"),
        "last run duration           "
        + ("-" if f["last_run_duration_seconds"] is None
           else f"{f['last_run_duration_seconds']:.3f} s"),
        f"stored now                  {f['consultations']} consultations, "
        f"{f['data_keys']} data keys, {f['recording_entries']} recording folders",
        "deletions by kind           "
        + ", ".join(f"{k}={v}" for k, v in sorted(f["deletions"].items())),
    ]
    return "\n".join(lines)
