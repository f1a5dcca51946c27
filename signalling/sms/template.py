"""The SMS text: a per-deployment template with ``{url}`` and ``{minutes}``.

Every message goes out as UCS-2 (Japanese), where one segment holds 70 UTF-16 code
units; a longer text is split into parts (and some phones show them badly), so the
server refuses at start-up a template whose rendered message, with the configured public
URL and a full-length link, does not fit one segment.
"""

from __future__ import annotations

import string
from typing import Any

from madoguchi.config import ConfigError

SEGMENT_UNITS = 70  # UCS-2 characters in one SMS segment
LINK_PATH_PREFIX = "/c/"  # citizen link: <public_url>/c/<token>
TOKEN_CHARS = 22  # 128-bit token, base64url without padding
FIELDS = ("url", "minutes")


def sms_length(text: str) -> int:
    """Length as the SMS network counts it in UCS-2 (characters beyond the BMP count 2)."""
    return len(text.encode("utf-16-be")) // 2


def link_url(public_url: str, token: str) -> str:
    return public_url.rstrip("/") + LINK_PATH_PREFIX + token


def _check_fields(template: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"[sms] template is not a valid template: {exc}") from None
    names = [name for _, name, _, _ in parsed if name is not None]
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FIELDS or spec or conversion:
            raise ConfigError(f"[sms] template: unknown placeholder {{{name}}}; "
                              "only {url} and {minutes} are filled in")
    if "url" not in names:
        raise ConfigError("[sms] template must contain {url} (the citizen's link)")


def render_sms(template: str, url: str, minutes: float) -> str:
    """The message text; raises ConfigError for placeholders other than {url}/{minutes}."""
    _check_fields(template)
    shown = int(minutes) if float(minutes).is_integer() else round(float(minutes), 1)
    return template.format(url=url, minutes=shown)


def check_template(cfg: Any) -> str:
    """Refuse (ConfigError) a template that does not fit one segment with the configured
    ``[server] public_url`` and ``[links] lifetime_minutes``; return the sample message."""
    url = link_url(cfg.server.public_url, "x" * TOKEN_CHARS)
    sample = render_sms(cfg.sms.template, url, cfg.links.lifetime_minutes)
    length = sms_length(sample)
    if length > SEGMENT_UNITS:
        over = length - SEGMENT_UNITS
        raise ConfigError(
            f"[sms] template: the rendered SMS is {length} characters with public_url "
            f"{cfg.server.public_url} and a {TOKEN_CHARS}-character link token; one Japanese "
            f"(UCS-2) SMS holds {SEGMENT_UNITS}. Shorten the template or the public URL by "
            f"{over} character{'s' if over != 1 else ''}.")
    return sample
