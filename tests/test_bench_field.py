"""scripts/bench field prints one FIELD line per condition, '-' for what was not measured."""

from __future__ import annotations

import pytest

from madoguchi.bench.field import line, main


def test_field_line() -> None:
    assert line({"condition": "cut", "connected": True, "first_frame_ms": 310, "fps": 14.7,
                 "frozen_pct": 2.0, "kbps": 1200, "link_ms": 40, "recover_ms": 120}) == (
        "FIELD condition=cut connected=yes first_frame_ms=310 fps=14.7 frozen_pct=2.0 "
        "kbps=1200 link_ms=40 recover_ms=120")
    assert line({"condition": "udp_blocked", "connected": False}) == (
        "FIELD condition=udp_blocked connected=no first_frame_ms=- fps=- frozen_pct=- "
        "kbps=- link_ms=- recover_ms=-")


def test_unknown_condition_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--conditions", "clean,moon"])
    assert exc.value.code == 2
    assert "unknown condition(s): moon" in capsys.readouterr().err
