"""The SMS template: rendering and the one-segment (70 UCS-2 characters) start-up check."""

from __future__ import annotations

import pytest

from madoguchi.config import Config, ConfigError
from signalling.sms.template import (
    SEGMENT_UNITS,
    TOKEN_CHARS,
    check_template,
    link_url,
    render_sms,
    sms_length,
)


def _cfg(template: str, public_url: str = "https://localhost:8443", minutes: int = 30) -> Config:
    cfg = Config()
    cfg.sms.template = template
    cfg.server.public_url = public_url
    cfg.links.lifetime_minutes = minutes
    return cfg


def test_render_fills_url_and_minutes() -> None:
    url = link_url("https://soudan.example.lg.jp/", "A" * TOKEN_CHARS)
    assert url == "https://soudan.example.lg.jp/c/" + "A" * 22
    text = render_sms("【○○市】映像相談はこちら（{minutes}分有効）{url}", url, 30)
    assert text == "【○○市】映像相談はこちら（30分有効）" + url


def test_default_template_fits_with_default_url() -> None:
    sample = check_template(Config())
    assert sms_length(sample) <= SEGMENT_UNITS
    assert sample.endswith("/c/" + "x" * TOKEN_CHARS)


def test_exactly_70_is_accepted_71_is_refused_with_the_excess() -> None:
    url_len = len("https://a.jp/c/") + TOKEN_CHARS  # 37
    fits = "あ" * (SEGMENT_UNITS - url_len) + "{url}"
    assert sms_length(check_template(_cfg(fits, "https://a.jp"))) == 70
    with pytest.raises(ConfigError) as info:
        check_template(_cfg("い" + fits, "https://a.jp"))
    text = str(info.value)
    assert "71" in text and "70" in text and "by 1 character" in text


def test_long_public_url_says_by_how_much() -> None:
    cfg = _cfg("【窓口】映像相談はこちら（{minutes}分有効）{url}",
               "https://video-consultation.city.example-municipality.lg.jp")
    expected = sms_length(render_sms(cfg.sms.template, link_url(cfg.server.public_url,
                                                                 "x" * 22), 30))
    assert expected > 70
    with pytest.raises(ConfigError) as info:
        check_template(cfg)
    assert f"by {expected - 70} characters" in str(info.value)
    assert f"is {expected} characters" in str(info.value)


def test_minutes_count_in_the_length() -> None:
    url_len = len("https://a.jp/c/") + TOKEN_CHARS
    template = "あ" * (SEGMENT_UNITS - url_len - 2) + "{minutes}{url}"
    check_template(_cfg(template, "https://a.jp", minutes=30))
    with pytest.raises(ConfigError, match="by 1 character"):
        check_template(_cfg(template, "https://a.jp", minutes=120))


def test_characters_beyond_the_bmp_count_twice() -> None:
    assert sms_length("あ") == 1
    assert sms_length("😀") == 2
    url_len = len("https://a.jp/c/") + TOKEN_CHARS
    with pytest.raises(ConfigError, match="by 1 character"):
        check_template(_cfg("😀" + "あ" * (SEGMENT_UNITS - url_len - 1) + "{url}",
                            "https://a.jp"))


@pytest.mark.parametrize("template", [
    "映像相談はこちら",  # no link
    "{url} {name}",  # unknown placeholder
    "{url.__class__}",  # attribute access
    "{url!r}",  # conversion
    "{minutes:>5} {url}",  # format spec
    "{url",  # broken brace
])
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(ConfigError):
        check_template(_cfg(template))


def test_minutes_as_configured_float() -> None:
    assert render_sms("{minutes}分 {url}", "u", 30.0) == "30分 u"
    assert render_sms("{minutes}分 {url}", "u", 0.5) == "0.5分 u"
    cfg = Config()
    cfg.links.lifetime_minutes = 30.0
    assert "（30分有効）" in check_template(cfg)


def test_literal_braces() -> None:
    assert render_sms("{{窓口}} {url}", "https://a.jp/c/x", 30) == "{窓口} https://a.jp/c/x"
