"""Production checks: ``madoguchi doctor`` and the start-up refusals of ``madoguchi serve``.

A check is a function of the configuration that returns one or more :class:`Result`
lines (ok / warn / fail / unknown), each with a clear fix. Checks live in small modules
listed in ``CHECK_MODULES`` and register themselves with :func:`check`::

    from madoguchi.doctor import check, fail, ok

    @check("operator.listener")
    def operator_listener(ctx: Context) -> Results:
        ...
        return fail("…what is wrong…", fix="…what to do…")

``startup=True`` checks (local and fast) also run when ``serve`` starts, and a failure
refuses the start outside development mode (``serve --dev`` or ``[server] development``);
``startup=False`` checks (network round trips, the clock, ports) run in ``doctor`` only.
To add a check: write a module here, decorate its functions, add it to CHECK_MODULES.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from madoguchi.config import Config

Status = Literal["ok", "warn", "fail", "unknown"]

# Modules that register checks (import order = report order).
CHECK_MODULES = (
    "madoguchi.doctor.certificates",  # server chain + expiry, staff CA, CRL next update
    "madoguchi.doctor.keyfiles",      # key files exist, permissions, not in the recordings
    "madoguchi.doctor.public_url",    # https, a real name that resolves
    "madoguchi.doctor.operator",      # operator listener protected off loopback
    "madoguchi.doctor.bounds",        # security settings within sane bounds
    "madoguchi.doctor.sms",           # provider; gateway reachable, credentials accepted
    "madoguchi.doctor.sfu",           # media addresses phones can reach, UDP port range
    "madoguchi.doctor.turn",          # TURN reachable, credentials minted
    "madoguchi.doctor.redis",         # Redis keeps no copy on disk (save / appendonly)
    "madoguchi.doctor.recording",     # recording folder writable, free space
    "madoguchi.doctor.clock",         # clock synchronised (timedatectl / chronyc)
    "madoguchi.doctor.journal",       # journald forgets the logs within 24 h
    "madoguchi.doctor.ports",         # listener ports free and bindable
)


@dataclass(frozen=True)
class Result:
    """One line of the report. ``name`` is filled in from the check when left empty."""

    status: Status
    message: str
    fix: str = ""
    name: str = ""

    def line(self) -> str:
        text = f"{self.status.upper():7} {self.name}: {self.message}"
        return text + (f" -> fix: {self.fix}" if self.fix and self.status != "ok" else "")


Results = Result | Iterable[Result]
CheckFn = Callable[["Context"], Results | Awaitable[Results]]


@dataclass(frozen=True)
class Check:
    name: str
    fn: CheckFn
    startup: bool


@dataclass
class Context:
    """What a check may look at. ``development`` is true for ``serve --dev``."""

    cfg: Config
    development: bool = False
    timeout: float = 5.0
    notes: dict[str, object] = field(default_factory=dict)


REGISTRY: dict[str, Check] = {}


def check(name: str, *, startup: bool = True) -> Callable[[CheckFn], CheckFn]:
    """Register a check under ``name`` (dotted: ``area.what``)."""
    def register(fn: CheckFn) -> CheckFn:
        REGISTRY[name] = Check(name, fn, startup)
        return fn
    return register


def ok(message: str, name: str = "") -> Result:
    return Result("ok", message, "", name)


def warn(message: str, fix: str, name: str = "") -> Result:
    return Result("warn", message, fix, name)


def fail(message: str, fix: str, name: str = "") -> Result:
    return Result("fail", message, fix, name)


def unknown(message: str, fix: str = "", name: str = "") -> Result:
    return Result("unknown", message, fix, name)


def load_checks() -> list[Check]:
    for module in CHECK_MODULES:
        importlib.import_module(module)
    return list(REGISTRY.values())


async def _run_one(c: Check, ctx: Context) -> list[Result]:
    try:
        # Plain functions may block (files, subprocesses): in a thread, so checks overlap.
        pending: Any = c.fn(ctx) if inspect.iscoroutinefunction(c.fn) \
            else asyncio.to_thread(c.fn, ctx)
        out: Results = await asyncio.wait_for(pending, ctx.timeout + 5)
    except TimeoutError:
        out = fail(f"no answer within {ctx.timeout + 5:g} s", "see the check's other lines")
    except Exception as exc:  # noqa: BLE001 - a broken check is a failed check, not a crash
        # Type only: messages may quote configuration values.
        out = fail(f"the check itself failed ({type(exc).__name__})", "report this as a bug")
    results = [out] if isinstance(out, Result) else list(out)
    return [r if r.name else Result(r.status, r.message, r.fix, c.name) for r in results]


def _selected(name: str, only: Iterable[str]) -> bool:
    return any(name == o or name.startswith(o + ".") for o in only)


async def run_checks(ctx: Context, startup_only: bool = False,
                     only: Iterable[str] = (), skip: Iterable[str] = ()) -> list[Result]:
    """Every registered check (or only the start-up ones, or those named in ``only``:
    ``certificates`` or ``certificates.crl``; minus those in ``skip``), concurrently, in
    report order."""
    only, skip = tuple(only), tuple(skip)
    checks = [c for c in load_checks() if (c.startup or not startup_only)
              and (not only or _selected(c.name, only)) and not _selected(c.name, skip)]
    batches = await asyncio.gather(*(_run_one(c, ctx) for c in checks))
    return [r for batch in batches for r in batch]


def failed(results: Iterable[Result]) -> list[Result]:
    return [r for r in results if r.status == "fail"]
