"""``python -m madoguchi.bench NAME [options]`` (what ``scripts/bench`` runs).

Each benchmark is a module ``madoguchi.bench.<name>`` with ``main(argv) -> int`` (or
``"module:function"``); add yours to ``BENCHMARKS`` (one line) and it is reachable as
``scripts/bench <name>``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "retention": ("madoguchi.bench.retention",
                  "delete N overdue consultations in one retention run (target < 60 s)"),
    "record": ("madoguchi.bench.record",
               "recording cost per publisher->viewer pair"),
    "sfu": ("madoguchi.bench.sfu_bench",
            "SFU forwarding: CPU per pair vs the naive relay, loss, first frame, latency"),
    "uplink": ("madoguchi.bench.uplink",
               "Chromium citizen + viewer under a UDP cap: the phone's target bitrate"),
    "field": ("madoguchi.bench.field",
              "browser call under loss, a 125 kB/s cap, UDP blocked and a path cut"),
    "review": ("madoguchi.bench.review",
               "recording review: server CPU per review vs a live pair, click to first frame"),
    "sfu-cycles": ("madoguchi.bench.sfu_bench:cycles_main",
                   "room open/close cycles (default 1,000): leaked tasks/threads/fds"),
    "soak": ("madoguchi.bench.soak",
             "N recorded consultations at once for M minutes: RSS/fds/threads/tasks, loss"),
    "fuzz": ("madoguchi.bench.fuzz",
             "property-based fuzzing of every outside-input parser and the signalling"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description="Madoguchi benchmarks (they print figures).",
        epilog="\n".join(f"  {name:<10} {desc}" for name, (_m, desc) in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS), metavar="BENCHMARK",
                        help="one of: " + ", ".join(sorted(BENCHMARKS)))
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="options of the benchmark (BENCHMARK --help lists them)")
    ns = parser.parse_args(argv)
    module_name, _, function = BENCHMARKS[ns.benchmark][0].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"scripts/bench: the {ns.benchmark} benchmark is not built yet", file=sys.stderr)
        return 2
    return int(getattr(module, function or "main")(ns.args) or 0)


if __name__ == "__main__":
    sys.exit(main())
