"""``madoguchi serve``: run the citizen site, staff site, SFU, recorder and retention."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from madoguchi.cli import add_config_option, config_from_args
from madoguchi.config import Config, ConfigError
from madoguchi.logs import event, setup_logging

log = logging.getLogger("madoguchi.serve")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the server (all components)")
    add_config_option(p)
    p.add_argument("--dev", action="store_true",
                   help="development mode ([server] development): development certificates "
                        "and key when none are configured, production checks skipped")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"madoguchi: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log.format, cfg.log.level)
    cfg.server.development = cfg.server.development or args.dev
    if cfg.server.development:
        from madoguchi.devmode import apply_dev_defaults
        has_file = bool(getattr(args, "config", None) or os.environ.get("MADOGUCHI_CONFIG"))
        apply_dev_defaults(cfg, has_file)
    elif not _startup_checks(cfg):
        return 2
    from sfu.loop import install_uvloop
    install_uvloop(cfg.sfu.use_uvloop)
    try:
        return asyncio.run(_run(cfg))
    except KeyboardInterrupt:
        return 130


def _startup_checks(cfg: Config) -> bool:
    """The start-up checks of ``madoguchi doctor``: False (and why) when one fails."""
    from madoguchi.doctor import Context, failed, run_checks

    results = asyncio.run(run_checks(Context(cfg), startup_only=True))
    for r in results:
        if r.status == "warn":
            event(log, "startup_check_warning", logging.WARNING, check=r.name, detail=r.line())
    refusals = failed(results)
    for r in refusals:
        print(f"madoguchi: cannot start: {r.line()}", file=sys.stderr)
    if refusals:
        print("madoguchi: fix the lines above (madoguchi doctor --config FILE checks them all), "
              "or run `madoguchi serve --dev` for a development server", file=sys.stderr)
    return not refusals


async def _run(cfg: Config) -> int:
    from signalling.app import Server, StartupError

    server = Server(cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except StartupError as exc:
        print(f"madoguchi: cannot start: {exc}", file=sys.stderr)
        await server.stop()
        return 2
    print(f"madoguchi: citizen site https://{cfg.server.citizen_host}:{server.ports['citizen']}/ "
          f"staff site https://{cfg.server.staff_host}:{server.ports['staff']}/ "
          f"operator http://{cfg.operator.host}:{server.ports['operator']}/metrics",
          file=sys.stderr, flush=True)
    await stop.wait()
    event(log, "shutdown_requested")
    await server.stop()
    return 0
