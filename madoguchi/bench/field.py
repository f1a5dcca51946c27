"""``scripts/bench field``: the browser call under field conditions (issue 11).

Each condition runs the whole consultation once in a private network namespace of its own
(``unshare -n``; nftables drops UDP on the input hook there, nothing outside is touched):
a real ``madoguchi serve``, the staff console and a citizen in Chromium (Pixel 7
emulation, fake camera 640x480/15 fps). Measured over a window after the call is live,
one line per condition::

    FIELD condition=… connected=yes|no first_frame_ms=… fps=… frozen_pct=… kbps=… link_ms=… recover_ms=…

first_frame_ms  citizen's start tap → first frame presented in the staff viewer
fps             frames the staff viewer decoded per second over the window
frozen_pct      share of the window the staff video stood still (Chromium inbound-rtp
                totalFreezesDuration + totalPausesDuration: a stop over 5 s is a "pause")
kbps            the phone's outbound video bitrate (bytesSent) over the window
link_ms         staff clicks "send link" → the card appears on the phone
recover_ms      (cut only) path restored → staff viewer presents frames again

``udp_blocked`` drops every UDP datagram but those of a real coturn's relay, so the call
can only go through TURN over TLS (the scenario's ``turn_tls``, when it has one).

Needs root (network namespaces, nftables), chromium, ffmpeg and nft. The scenario itself
lives in tests/fixtures/field.py (the field E2E tests run the same code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

CONDITIONS = ("clean", "loss2", "loss5", "cap125", "udp_blocked", "cut")
# UDP blocked runs the scenario's office network with a real coturn (TURN/TLS) when the
# scenario has it; without a relay no call is possible.
TURN_SCENARIO = "turn_tls"
NOTES = {
    "udp_blocked": "no TURN server in this run: no call is possible without a relay",
}


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def line(result: dict[str, Any]) -> str:
    connected = "yes" if result.get("connected") else "no"
    fields = [f"condition={result.get('condition')}", f"connected={connected}"]
    for key in ("first_frame_ms", "fps", "frozen_pct", "kbps", "link_ms", "recover_ms"):
        fields.append(f"{key}={_fmt(result.get(key))}")
    return "FIELD " + " ".join(fields)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench field", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=15.0,
                        help="seconds measured once the call is live (default 15)")
    parser.add_argument("--cut", type=float, default=3.0,
                        help="seconds the path is cut in the 'cut' condition (default 3)")
    parser.add_argument("--conditions", default=",".join(CONDITIONS),
                        help="comma-separated subset of: " + ", ".join(CONDITIONS))
    parser.add_argument("--verbose", action="store_true",
                        help="also print each condition's whole result (JSON)")
    ns = parser.parse_args(argv)
    conditions = [c.strip() for c in ns.conditions.split(",") if c.strip()]
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        parser.error(f"unknown condition(s): {', '.join(unknown)}")
    from tests.fixtures.field import CONDITIONS as SCENARIOS
    from tests.fixtures.field import netns_available, run_in_netns

    why = netns_available()
    if why:
        print(f"scripts/bench field: cannot run here: {why}", file=sys.stderr)
        return 2
    print(f"# window {ns.window:g} s per condition, cut {ns.cut:g} s; Chromium Pixel 7 "
          "emulation, fake camera 640x480 15 fps, loopback in a private netns", flush=True)
    for condition in conditions:
        scenario = condition
        if condition == "udp_blocked" and TURN_SCENARIO in SCENARIOS:
            scenario = TURN_SCENARIO
        result = run_in_netns(scenario, window=ns.window, cut=ns.cut)
        result["condition"] = condition
        print(line(result), flush=True)
        if not result.get("connected") and condition in NOTES:
            print(f"#   {condition}: {NOTES[condition]}", flush=True)
        elif "error" in result:
            print(f"#   {condition}: {str(result['error']).splitlines()[-1][:300]}", flush=True)
        if ns.verbose:
            result.get("recording", {}).pop("output", None)
            print(f"#   {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
