"""An office network that blocks UDP (issue 11): the citizen page and the staff console
reach the SFU only through a real coturn over TURN/TLS on 443, in a private network
namespace (tests/fixtures/field.py, condition ``turn_tls``): every UDP datagram is dropped
except between coturn's relay ports and the SFU, TCP to coturn's plain TURN port too. The
call connects with REST credentials minted for this consultation and this staff session,
video and audio flow both ways, and the sent link arrives."""

from __future__ import annotations

import pytest

from tests.fixtures.coturn import coturn_installed
from tests.fixtures.field import netns_available, run_in_netns

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_call_through_turn_tls_when_udp_is_blocked() -> None:
    why = netns_available() or ("" if coturn_installed() else "coturn is not installed")
    if why:
        pytest.skip(why)
    result = run_in_netns("turn_tls", window=4)
    assert "error" not in result, result.get("error")
    assert result["connected"] is True, result
    assert all(result["steps"].get(s) for s in ("consent", "live", "link_delivered",
                                                 "ended")), result
    # both browsers' selected pairs are relayed over TLS (nothing else can pass)
    for side in ("staff", "citizen"):
        pairs = result["relay"][side]
        assert pairs and all(p["type"] == "relay" and p["relayProtocol"] == "tls"
                             for p in pairs), (side, pairs)
    assert result["fps"] > 0 and result["kbps"] > 0, result  # citizen video reached staff
    assert result["audio_packets"]["to_staff"] > 0, result
    assert result["audio_packets"]["to_citizen"] > 0, result
    assert result["link_cards"] == 1, result
    assert result["recording"]["ok"], result["recording"]["output"]
