"""Structured logs: one JSON object per line with time, level, event and the fields;
exception messages never logged (only their type)."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from madoguchi.logs import JsonFormatter, TextFormatter, event, log_pseudonym, setup_logging

PHONE = "090-1234-5678"


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("madoguchi.test_logs.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict]:
    out = []
    for line in stream.getvalue().splitlines():
        obj = json.loads(line)  # every line is one JSON object
        assert isinstance(obj, dict)
        out.append(obj)
    return out


def test_log_pseudonyms_change_with_the_hour_and_cannot_be_recomputed(monkeypatch) -> None:
    """A new key every hour, in memory only: last hour's names match nothing now."""
    from madoguchi import logs
    now = [1_800_000_000.0]
    monkeypatch.setattr(logs.time, "time", lambda: now[0])
    a = log_pseudonym("0123456789abcdef")
    assert a == log_pseudonym("0123456789abcdef") != log_pseudonym("fedcba9876543210")
    now[0] += 3600
    assert log_pseudonym("0123456789abcdef") != a


def test_each_event_is_one_json_line_with_fields(json_log) -> None:
    logger, stream = json_log
    event(logger, "consultation_created", consultation="c-1", ward="north", staff="sato")
    event(logger, "peer_closed", logging.WARNING, consultation="c-1", role="subscriber",
          packets=12, loss=0.01)
    first, second = lines(stream)
    assert first["event"] == "consultation_created" and first["level"] == "info"
    # the id is written as this hour's pseudonym: same id, same name; never the id
    assert (first["consultation"], first["ward"], first["staff"]) == (
        log_pseudonym("c-1"), "north", "sato")
    assert second["consultation"] == first["consultation"] != "c-1"
    assert re.fullmatch(r"L[0-9a-f]{12}", first["consultation"])
    assert first["logger"] == "madoguchi.test_logs.json"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert second["level"] == "warning" and second["packets"] == 12 and second["loss"] == 0.01


def test_multiline_and_non_json_values_stay_on_one_line(json_log) -> None:
    logger, stream = json_log
    event(logger, "odd", note="two\nlines", data=object(), raw=b"\x00\xff", text="窓口")
    (only,) = lines(stream)
    assert only["note"] == "two\nlines" and only["text"] == "窓口"
    assert isinstance(only["data"], str) and isinstance(only["raw"], str)


def test_exception_type_only_never_its_message(json_log) -> None:
    logger, stream = json_log
    try:
        raise ValueError(f"cannot send to {PHONE}")
    except ValueError:
        logger.exception("sms_failed", extra={"consultation": "c-2"})
    try:
        raise KeyError(PHONE)
    except KeyError as exc:
        event(logger, "lookup_failed", logging.ERROR, consultation="c-2", exc_info=exc)
    text = stream.getvalue()
    assert PHONE not in text and "cannot send" not in text and "Traceback" not in text
    first, second = lines(stream)
    assert first["exception"] == "ValueError" and first["consultation"] == "c-2"
    assert first["level"] == "error"
    assert second["exception"] == "KeyError" and second["event"] == "lookup_failed"


def test_reserved_field_names_do_not_raise(json_log) -> None:
    logger, stream = json_log
    event(logger, "odd_fields", name="x", module="sfu", msg="m", message="n", args=1)
    (only,) = lines(stream)
    assert only["event"] == "odd_fields"
    assert (only["name_"], only["module_"], only["msg_"], only["message_"], only["args_"]) == \
        ("x", "sfu", "m", "n", 1)


def test_text_format_is_human_readable() -> None:
    record = logging.LogRecord("madoguchi.sfu", logging.INFO, __file__, 1, "peer_connected",
                               None, None)
    record.consultation = "c-3"
    try:
        raise RuntimeError(PHONE)
    except RuntimeError:
        import sys
        record.exc_info = sys.exc_info()
    line = TextFormatter().format(record)
    assert "\n" not in line and PHONE not in line
    assert re.match(r"\d\d:\d\d:\d\d INFO +madoguchi\.sfu: peer_connected  consultation=c-3",
                    line)
    assert line.endswith("exception=RuntimeError")


def test_setup_logging_replaces_its_handler_and_quiets_noisy_loggers() -> None:
    root = logging.getLogger()
    saved_level = root.level
    saved_noisy = {n: logging.getLogger(n).level for n in ("aioice", "aiortc", "aiohttp.access")}
    first, second = io.StringIO(), io.StringIO()
    try:
        setup_logging("json", "INFO", first)
        setup_logging("text", "DEBUG", second)
        ours = [h for h in root.handlers if getattr(h, "_madoguchi", False)]
        assert len(ours) == 1
        event(logging.getLogger("madoguchi.test_logs"), "hello", consultation="c-4")
        logging.getLogger("aiohttp.access").info("GET /c/secret-token-value HTTP/1.1")
        assert first.getvalue() == ""
        assert "hello" in second.getvalue() and f"consultation={log_pseudonym('c-4')}" in second.getvalue()
        assert "secret-token-value" not in second.getvalue()
    finally:
        for h in [h for h in root.handlers if getattr(h, "_madoguchi", False)]:
            root.removeHandler(h)
        root.setLevel(saved_level)
        for name, level in saved_noisy.items():
            logging.getLogger(name).setLevel(level)
