"""Sending the citizen's link by SMS.

``make_provider(cfg)`` returns the provider named by ``[sms] provider``, wrapped so every
send is counted (madoguchi_sms_sent_total / madoguchi_sms_failed_total{reason}) and any
unexpected exception becomes an :class:`SmsError`.

Adding a city's own gateway (e.g. an LGWAN SMS service with its own HTTP API) is one small
class and one line here:

1. write ``signalling/sms/<name>.py`` with a class that has ``name``, ``async send(to_e164,
   text, reference) -> SendResult``, ``async check()`` and ``async close()`` (see
   ``interfaces.SmsProvider``; ``kannel.py`` is a complete example: timeouts, bounded
   retries, ``SmsError`` codes with a staff-facing message, no number/text in logs);
2. add a factory ``def _make_<name>(cfg) -> SmsProvider`` below and register it in
   ``PROVIDERS``; put its settings in ``[sms]`` (madoguchi/config.py + config/default.toml);
3. if the gateway reports delivery, call the same ``on_report(reference, status)`` the
   Kannel DLR route uses (``dlr.py``), with status ``sent``/``delivered``/``failed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from madoguchi.config import ConfigError
from signalling.sms.console import ConsoleProvider
from signalling.sms.instrumented import InstrumentedProvider
from signalling.sms.interfaces import SendResult, SmsError, SmsProvider

__all__ = ["PROVIDERS", "SendResult", "SmsError", "SmsProvider", "make_provider"]


def _make_console(cfg: Any) -> SmsProvider:
    return ConsoleProvider()


def _make_kannel(cfg: Any) -> SmsProvider:
    from signalling.sms.dlr import dlr_callback_url, load_dlr_secret
    from signalling.sms.kannel import KannelProvider

    if not cfg.sms.kannel_username or not cfg.sms.kannel_password:
        raise ConfigError("[sms] provider = kannel needs kannel_username and kannel_password "
                          "(MADOGUCHI_SMS_KANNEL_PASSWORD in the environment is preferred)")
    return KannelProvider(
        url=cfg.sms.kannel_url,
        username=cfg.sms.kannel_username,
        password=cfg.sms.kannel_password,
        sender=cfg.sms.sender_id,
        dlr_url=dlr_callback_url(cfg, load_dlr_secret(cfg)),
        timeout_seconds=cfg.sms.timeout_seconds,
        retries=cfg.sms.retries,
    )


PROVIDERS: dict[str, Callable[[Any], SmsProvider]] = {
    "console": _make_console,
    "kannel": _make_kannel,
}


def make_provider(cfg: Any) -> SmsProvider:
    """The configured provider, instrumented. ``.inner`` is the bare provider (e.g. the
    ConsoleProvider whose ``outbox`` development pages and tests read)."""
    factory = PROVIDERS.get(cfg.sms.provider)
    if factory is None:
        raise ConfigError(f"[sms] provider must be one of {', '.join(sorted(PROVIDERS))}, "
                          f"not {cfg.sms.provider!r}")
    return InstrumentedProvider(factory(cfg))
