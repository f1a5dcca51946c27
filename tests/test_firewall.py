"""config/nftables/madoguchi.nft (issue 18): the kernel accepts it (loaded in a private
network namespace, never the machine's own), input is dropped by default, and the ports it
opens are exactly docs/deploy.md's: the configuration's citizen, staff and operator ports
and SFU range, coturn's, SSH; each restricted to its sources; Kannel, Redis and 80 closed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RULESET = REPO / "config" / "nftables" / "madoguchi.nft"
RULE = re.compile(r"^\s*(?:ip saddr @(\w+) )?(tcp|udp) dport (\S+) accept\b", re.M)


def _loaded() -> str:
    """``nft list ruleset`` after loading the file in a network namespace of its own."""
    if not (shutil.which("nft") and shutil.which("unshare")):
        pytest.fail("nft / unshare missing (Debian nftables, util-linux; scripts/test installs)")
    done = subprocess.run(["unshare", "-n", "sh", "-c", f"nft -f {RULESET} && nft list ruleset"],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip(f"no network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _guide_config() -> str:
    text = (REPO / "docs" / "deploy.md").read_text()
    found = re.search(r"<!-- test: config -->\n```sh\n(.*?)```", text, re.S)
    assert found
    return found.group(1)


def _value(config: str, key: str) -> str:
    found = re.search(rf"^{key} = (\S+)$", config, re.M)
    assert found, key
    return found.group(1).strip('"')


def test_ruleset_opens_exactly_the_guides_ports() -> None:
    listed = _loaded()
    assert re.search(r"chain input \{\n\s*type filter hook input priority filter; policy drop;",
                     listed)
    rules = {(source or "anyone", proto, ports) for source, proto, ports in RULE.findall(listed)}
    config = _guide_config()
    citizen, staff = _value(config, "citizen_port"), _value(config, "staff_port")
    operator = re.search(r"\[operator\][^\[]*?^port = (\d+)", config, re.M | re.S)
    assert operator
    sfu = f"{_value(config, 'udp_port_min')}-{_value(config, 'udp_port_max')}"
    turn = (REPO / "config" / "coturn" / "turnserver.conf").read_text()
    turn_port = re.search(r"^listening-port=(\d+)", turn, re.M).group(1)  # type: ignore[union-attr]
    relay = "-".join(re.search(rf"^{k}=(\d+)", turn, re.M).group(1)  # type: ignore[union-attr]
                     for k in ("min-port", "max-port"))
    assert rules == {
        ("anyone", "tcp", citizen),
        ("anyone", "udp", sfu),
        ("anyone", "udp", turn_port),
        ("anyone", "tcp", turn_port),
        ("office", "tcp", staff),
        ("monitoring", "tcp", operator.group(1)),
        ("office", "tcp", "22"),
        ("sfu", "udp", relay),
    }
    opened = " ".join(p for _, _, p in rules)
    for closed in ("13000", "13001", "13013", "6379", "80"):
        assert not re.search(rf"(^|[ -]){closed}($| )", opened), closed
