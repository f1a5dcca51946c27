"""Wraps any provider: counts sends and failures, and turns a provider's unexpected
exception into a clear :class:`SmsError` so staff never see a traceback."""

from __future__ import annotations

import logging

from madoguchi import metrics
from madoguchi.logs import event
from signalling.sms.interfaces import (
    FAILURE_REASONS,
    PROVIDER_ERROR,
    SendResult,
    SmsError,
    SmsProvider,
)

log = logging.getLogger(__name__)

PROVIDER_MESSAGE = ("SMSの送信中にエラーが発生しました。再送してください。"
                    " / Sending the SMS failed unexpectedly; please retry.")


def _reason(code: str) -> str:
    return code if code in FAILURE_REASONS else PROVIDER_ERROR


class InstrumentedProvider:
    def __init__(self, inner: SmsProvider) -> None:
        self.inner = inner
        self.name = inner.name

    async def send(self, to_e164: str, text: str, reference: str) -> SendResult:
        try:
            result = await self.inner.send(to_e164, text, reference)
        except SmsError as exc:
            metrics.SMS_FAILED.labels(reason=_reason(exc.code)).inc()
            raise
        except ValueError:
            raise  # a programming error (bad reference), not a gateway failure
        except Exception as exc:
            metrics.SMS_FAILED.labels(reason=PROVIDER_ERROR).inc()
            event(log, "sms_provider_error", logging.ERROR, consultation=reference,
                  provider=self.name, exception=exc.__class__.__name__)
            raise SmsError(PROVIDER_ERROR, PROVIDER_MESSAGE) from None
        metrics.SMS_SENT.inc()
        return result

    async def check(self) -> None:
        try:
            await self.inner.check()
        except SmsError:
            raise
        except Exception as exc:
            event(log, "sms_provider_error", logging.ERROR, provider=self.name,
                  exception=exc.__class__.__name__)
            raise SmsError(PROVIDER_ERROR, PROVIDER_MESSAGE) from None

    async def close(self) -> None:
        await self.inner.close()
