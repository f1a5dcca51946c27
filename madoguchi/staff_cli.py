"""``madoguchi staff``: staff accounts (the first admin too).

    madoguchi staff add USERNAME --ward WARD [--admin] [--generate]
    madoguchi staff list
    madoguchi staff disable|enable|remove USERNAME
    madoguchi staff passwd USERNAME [--generate]

Passwords come from a TTY prompt (twice), or one line on stdin when it is not a TTY, or
are generated and printed (``--generate``). A new or reset password must be changed at
the next login. Every change goes to the audit log.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from madoguchi.cli import add_config_option, config_from_args
from madoguchi.clock import Clock, SystemClock
from madoguchi.config import Config, ConfigError

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
ROLES = ("staff", "admin")


class CliError(Exception):
    """A refused command (the message is shown to the operator)."""


def register(subparsers: Any) -> None:
    staff = subparsers.add_parser("staff", help="staff accounts")
    add_config_option(staff)
    sub = staff.add_subparsers(dest="staff_command", metavar="ACTION")

    p = sub.add_parser("add", help="add an account (the first admin with --admin)")
    add_config_option(p)
    p.add_argument("username")
    p.add_argument("--ward", default="", help="the ward the account belongs to (e.g. 灘区)")
    p.add_argument("--admin", action="store_true", help="administrator (all wards, accounts)")
    p.add_argument("--generate", action="store_true", help="generate and print a password")
    p.set_defaults(func=lambda a: _main(cmd_add, a))

    p = sub.add_parser("list", help="list accounts")
    add_config_option(p)
    p.set_defaults(func=lambda a: _main(cmd_list, a))

    for name, helptext in (("disable", "disable an account and end its sessions"),
                           ("enable", "enable an account and clear a lockout"),
                           ("remove", "remove an account and end its sessions")):
        p = sub.add_parser(name, help=helptext)
        add_config_option(p)
        p.add_argument("username")
        p.set_defaults(func=lambda a, n=name: _main(COMMANDS[n], a))

    p = sub.add_parser("passwd", help="set a new password (to be changed at the next login)")
    add_config_option(p)
    p.add_argument("username")
    p.add_argument("--generate", action="store_true", help="generate and print a password")
    p.set_defaults(func=lambda a: _main(cmd_passwd, a))

    staff.set_defaults(func=lambda a: (staff.print_help(), 2)[1])


# ---------------------------------------------------------------------------- plumbing


class Context:
    """What a command needs: configuration, store, audit log, clock, terminal."""

    def __init__(self, cfg: Config, store: Any, audit: Any, clock: Clock,
                 stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.audit = audit
        self.clock = clock
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.actor = f"cli:{_os_user()}"

    def say(self, text: str) -> None:
        print(text, file=self.stdout)

    def log(self, action: str, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.write(action, staff=self.actor, **fields)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


Command = Callable[[Context, argparse.Namespace], Awaitable[int]]


def _main(cmd: Command, args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(run_command(cmd, cfg, args))


async def run_command(cmd: Command, cfg: Config, args: argparse.Namespace,
                      stdin: TextIO | None = None, stdout: TextIO | None = None,
                      clock: Clock | None = None) -> int:
    """Open the store and audit log of ``cfg`` and run ``cmd`` (also used by tests)."""
    from signalling.audit import AuditLog
    from signalling.store import open_store
    from signalling.store.interfaces import StoreError

    clock = clock or SystemClock()
    cfg.data_path().mkdir(parents=True, exist_ok=True, mode=0o700)
    store = open_store(cfg, clock)
    ctx = Context(cfg, store, AuditLog(cfg.audit_path, clock, cfg.audit.keep_days), clock,
                  stdin, stdout)
    try:
        return await cmd(ctx, args)
    except (CliError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()


def read_new_password(ctx: Context, min_length: int, username: str) -> str:
    """Prompt twice on a TTY, else read one line from stdin; checks the policy."""
    from signalling.passwords import PasswordPolicyError, check_policy

    if ctx.stdin.isatty():
        first = getpass.getpass("New password: ")
        second = getpass.getpass("Repeat it: ")
        if first != second:
            raise CliError("the two passwords differ")
        password = first
    else:
        password = ctx.stdin.readline().rstrip("\r\n")
    try:
        check_policy(password, min_length, username)
    except PasswordPolicyError as exc:
        raise CliError(str(exc)) from None
    return password


def _new_password(ctx: Context, args: argparse.Namespace, username: str) -> tuple[str, bool]:
    from signalling.passwords import generate_password
    if args.generate:
        return generate_password(), True
    return read_new_password(ctx, ctx.cfg.auth.password_min_length, username), False


def _hash(password: str) -> str:
    from signalling.passwords import hash_password
    return hash_password(password)


def _check_username(username: str) -> None:
    if not USERNAME_RE.match(username):
        raise CliError("user name: 1–64 characters, letters, digits, . _ @ -, starting "
                       "with a letter or digit")


def _check_ward(ward: str) -> None:
    if len(ward) > 64 or any(not c.isprintable() for c in ward) or ward != ward.strip():
        raise CliError("ward: at most 64 printable characters")


async def _existing(ctx: Context, username: str) -> Any:
    account = await ctx.store.get_staff(username)
    if account is None:
        raise CliError(f"no account named {username!r}")
    return account


# ---------------------------------------------------------------------------- commands


async def cmd_add(ctx: Context, args: argparse.Namespace) -> int:
    from signalling.store.interfaces import StaffAccount

    username, ward = args.username, args.ward.strip()
    _check_username(username)
    _check_ward(ward)
    if not ward and not args.admin:
        raise CliError("--ward is required for staff accounts (e.g. --ward 灘区)")
    if await ctx.store.get_staff(username) is not None:
        raise CliError(f"an account named {username!r} exists")
    password, generated = _new_password(ctx, args, username)
    role = "admin" if args.admin else "staff"
    account = StaffAccount(username=username, ward=ward, password_hash=_hash(password),
                           role=role, must_change_password=True, created_at=ctx.clock.now())
    await ctx.store.add_staff(account)
    ctx.log("account_added", target=username, ward=ward, role=role)
    ctx.say(f"Added {role} {username}" + (f" (ward {ward})" if ward else ""))
    if generated:
        ctx.say(f"Password: {password}")
    ctx.say("The password must be changed at the first login.")
    return 0


async def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    accounts = sorted(await ctx.store.list_staff(), key=lambda a: (a.ward, a.username))
    if not accounts:
        ctx.say("(no accounts; add the first admin with `madoguchi staff add NAME --admin`)")
        return 0
    now = ctx.clock.now()
    ctx.say(f"{'USERNAME':<24} {'ROLE':<6} {'WARD':<12} STATUS")
    for a in accounts:
        status = []
        if a.disabled:
            status.append("disabled")
        if a.locked_until > now:
            until = time.strftime("%H:%M", time.localtime(a.locked_until))
            status.append(f"locked until {until}")
        if a.must_change_password:
            status.append("must change password")
        ctx.say(f"{a.username:<24} {a.role:<6} {a.ward:<12} {', '.join(status) or 'active'}")
    return 0


async def cmd_disable(ctx: Context, args: argparse.Namespace) -> int:
    account = await _existing(ctx, args.username)
    await ctx.store.update_staff(account.username, {"disabled": True})
    await ctx.store.delete_sessions_of(account.username)
    ctx.log("account_changed", target=account.username, ward=account.ward, detail="disabled")
    ctx.say(f"Disabled {account.username}; its sessions ended.")
    return 0


async def cmd_enable(ctx: Context, args: argparse.Namespace) -> int:
    account = await _existing(ctx, args.username)
    await ctx.store.update_staff(account.username,
                                 {"disabled": False, "failed_logins": 0, "locked_until": 0.0})
    ctx.log("account_changed", target=account.username, ward=account.ward, detail="enabled")
    ctx.say(f"Enabled {account.username} (lockout cleared).")
    return 0


async def cmd_remove(ctx: Context, args: argparse.Namespace) -> int:
    account = await _existing(ctx, args.username)
    if account.role == "admin":
        admins = [a for a in await ctx.store.list_staff()
                  if a.role == "admin" and not a.disabled and a.username != account.username]
        if not admins:
            raise CliError("refusing to remove the last active admin")
    await ctx.store.delete_sessions_of(account.username)
    await ctx.store.remove_staff(account.username)
    ctx.log("account_removed", target=account.username, ward=account.ward)
    ctx.say(f"Removed {account.username}.")
    return 0


async def cmd_passwd(ctx: Context, args: argparse.Namespace) -> int:
    account = await _existing(ctx, args.username)
    password, generated = _new_password(ctx, args, account.username)
    await ctx.store.update_staff(account.username, {
        "password_hash": _hash(password), "must_change_password": True,
        "failed_logins": 0, "locked_until": 0.0})
    await ctx.store.delete_sessions_of(account.username)
    ctx.log("account_changed", target=account.username, ward=account.ward,
            detail="password_reset")
    ctx.say(f"New password set for {account.username}; it must be changed at the next login.")
    if generated:
        ctx.say(f"Password: {password}")
    return 0


COMMANDS: dict[str, Command] = {"add": cmd_add, "list": cmd_list, "disable": cmd_disable,
                                "enable": cmd_enable, "remove": cmd_remove,
                                "passwd": cmd_passwd}
