"""``madoguchi doctor [--config FILE]``: one line per check, exit 1 on any failure."""

from __future__ import annotations

import argparse
import asyncio
import sys

from madoguchi.config import ConfigError
from madoguchi.doctor import Context, failed, run_checks


def register(sub: argparse._SubParsersAction) -> None:
    from madoguchi.cli import add_config_option

    p = sub.add_parser("doctor", help="check a production configuration before it goes live")
    add_config_option(p)
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for each gateway / server asked (default 5)")
    p.add_argument("--startup", action="store_true",
                   help="only the checks serve runs at start-up")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="only this check or area (certificates, sms.gateway…); repeatable")
    p.add_argument("--skip", action="append", default=[], metavar="NAME",
                   help="leave out this check or area (ports, while the server runs); "
                        "repeatable")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from madoguchi.cli import config_from_args

    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"FAIL    config: {exc} -> fix: correct the configuration file")
        return 1
    results = asyncio.run(run_checks(Context(cfg, timeout=args.timeout),
                                     startup_only=args.startup, only=args.only,
                                     skip=args.skip))
    for r in results:
        print(r.line())
    bad = failed(results)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "warn", "fail", "unknown")}
    print("doctor: " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=sys.stderr)
    return 1 if bad else 0
