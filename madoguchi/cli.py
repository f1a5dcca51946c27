"""The ``madoguchi`` command. Each package contributes its subcommands through a
``register(subparsers)`` function, so this file stays a table of contents."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# module path -> provides register(subparsers); each adds one or more subcommands.
COMMAND_MODULES = (
    "madoguchi.serve_cli",     # serve
    "madoguchi.doctor.cli",    # doctor
    "madoguchi.staff_cli",     # staff add/list/disable/enable/passwd/remove
    "madoguchi.certs_cli",     # certs dev/init/issue/list/revoke/renew
    "recorder.cli",            # keys rotate, recordings verify
    "retention.cli",           # retention [run|status]
)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Every subcommand accepts --config too (``madoguchi serve --config FILE``)."""
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help="TOML configuration file (default: built-in defaults)")


def config_from_args(args: argparse.Namespace):  # -> Config
    from madoguchi.config import load_config
    return load_config(getattr(args, "config", None))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="madoguchi",
                                     description="Madoguchi video consultation counter")
    parser.add_argument("--config", help="TOML configuration file (default: built-in defaults)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from madoguchi.hardening import no_core_dumps
    no_core_dumps()  # keys and plaintext in memory must never reach a core file
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
