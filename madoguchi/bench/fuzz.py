"""``scripts/bench fuzz [--examples N] [--targets a,b] [--seed S]``: the long fuzzing
campaign over the targets of madoguchi/bench/fuzz_targets.py plus the running server's
signalling (both sockets and the POST bodies), one line per target:

    FUZZ target=rtp examples=100000 crashes=0 errors_5xx=n/a seconds=…

``crashes`` counts contract violations (an exception other than the parser's documented
error, a broken invariant, a socket closed on a message); ``errors_5xx`` counts 5xx replies
(the signalling targets only; n/a for in-process parsers). The first failing example of
a target is printed below its line. Exit status 1 if any target failed.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings

from madoguchi.bench.fuzz_targets import TARGETS

SIGNALLING = ("signalling-citizen", "signalling-staff", "signalling-http")


def _campaign(strategy: Any, check: Callable[[Any], None], examples: int,
              random_seed: int) -> tuple[int, str]:
    """Run ``examples`` examples; (how many ran, the failure or "")."""
    ran = [0]

    @seed(random_seed)
    @settings(max_examples=examples, database=None, deadline=None,
              phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(sample: Any) -> None:
        ran[0] += 1
        check(sample)

    try:
        run()
    except Exception as exc:  # noqa: BLE001 - a finding, reported below the target's line
        return ran[0], f"{type(exc).__name__}: {str(exc)[:600]}"
    return ran[0], ""


def _line(name: str, examples: int, crashes: int, errors_5xx: str, seconds: float) -> str:
    return (f"FUZZ target={name} examples={examples} crashes={crashes} "
            f"errors_5xx={errors_5xx} seconds={seconds:.0f}")


def _signalling(names: list[str], examples: int, random_seed: int) -> bool:
    from madoguchi.bench.fuzz_signalling import (
        BODIES,
        CITIZEN_MESSAGES,
        STAFF_MESSAGES,
        SignallingFuzzer,
        suite_module,
    )
    from madoguchi.certs import make_dev_certs

    stop_process = suite_module("tests.fixtures.ports").stop_process
    base = Path(tempfile.mkdtemp(prefix="madoguchi-fuzz-"))
    server = suite_module("tests.fixtures.server").start_server(
        base / "server", make_dev_certs(base / "pki"), name="fuzz")
    loop = asyncio.new_event_loop()
    fuzzer = SignallingFuzzer(server)
    ok = True
    try:
        loop.run_until_complete(fuzzer.start())
        plan = {"signalling-citizen": ("citizen", CITIZEN_MESSAGES, fuzzer.citizen_message),
                "signalling-staff": ("staff", STAFF_MESSAGES, fuzzer.staff_message),
                "signalling-http": ("http", BODIES, fuzzer.http_body)}
        for name in names:
            which, strategy, send = plan[name]
            loop.run_until_complete(fuzzer.fresh_sockets())
            before = len(fuzzer.failures)
            started = time.monotonic()
            def check(sample: Any, send: Any = send) -> None:
                loop.run_until_complete(send(sample))
            ran, failure = _campaign(strategy, check, examples, random_seed)
            counts = fuzzer.counts[which]
            found = fuzzer.failures[before:]
            print(_line(name, ran, counts[1] + (1 if failure else 0), str(counts[2]),
                        time.monotonic() - started), flush=True)
            for text in ([failure] if failure else []) + found[:3]:
                print("  " + text, flush=True)
            ok = ok and not failure and not found
    finally:
        loop.run_until_complete(fuzzer.close())
        loop.close()
        stop_process(server.proc, timeout=15)
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=10_000, help="per target")
    parser.add_argument("--targets", default="",
                        help="comma-separated subset of: " + ", ".join(
                            [t.name for t in TARGETS] + list(SIGNALLING)))
    parser.add_argument("--seed", type=int, default=17, help="hypothesis seed (reproducible)")
    args = parser.parse_args(argv)
    wanted = [n for n in args.targets.split(",") if n] or [t.name for t in TARGETS] + list(
        SIGNALLING)
    ok = True
    for target in TARGETS:
        if target.name not in wanted:
            continue
        started = time.monotonic()
        ran, failure = _campaign(target.strategy, target.check, args.examples, args.seed)
        print(_line(target.name, ran, 1 if failure else 0, "n/a",
                    time.monotonic() - started), flush=True)
        if failure:
            print("  " + failure, flush=True)
            ok = False
    names = [n for n in SIGNALLING if n in wanted]
    if names:
        ok = _signalling(names, args.examples, args.seed) and ok
    return 0 if ok else 1
