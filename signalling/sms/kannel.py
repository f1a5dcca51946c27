"""Kannel (smsbox HTTP ``sendsms``): Japanese text as UCS-2, delivery reports by dlr-url.

The request is a POST with a ``text/plain; charset=UTF-8`` body and ``X-Kannel-*``
headers (``X-Kannel-Coding: 2`` = UCS-2), so neither the text (it carries the link token)
nor the credentials appear in a URL that a proxy or access log could keep. Nothing here
logs the URL, the number or the text.

Failures: connection refused / connect timeout / 5xx are retried ``retries`` times with
backoff; a request that timed out after it was sent is not retried (the gateway may have
taken it; staff get a clear error and a retry button rather than a 3x longer wait).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import aiohttp

from madoguchi.logs import event
from signalling.sms.interfaces import (
    GATEWAY_AUTH,
    GATEWAY_REJECTED,
    GATEWAY_UNAVAILABLE,
    INVALID_RECIPIENT,
    QUEUED,
    SENT,
    SendResult,
    SmsError,
    check_reference,
)

log = logging.getLogger(__name__)

DLR_MASK_ALL = 31  # delivered | failed | buffered | accepted by SMSC | rejected by SMSC
UCS2 = 2

UNAVAILABLE_MESSAGE = ("SMSゲートウェイに接続できません。しばらくしてから再送してください。"
                       " / The SMS gateway cannot be reached; please retry in a moment.")
AUTH_MESSAGE = ("SMSゲートウェイが認証を拒否しました。管理者に連絡してください。"
                " / The SMS gateway refused our credentials; contact the administrator.")
REJECTED_MESSAGE = ("SMSゲートウェイが送信を拒否しました。管理者に連絡してください。"
                    " / The SMS gateway refused the message; contact the administrator.")
RECIPIENT_MESSAGE = ("送信先の電話番号の形式が正しくありません。"
                     " / The recipient number is not in E.164 form.")


def _is_e164(number: str) -> bool:
    return (number.startswith("+") and number[1:].isascii() and number[1:].isdigit()
            and 8 <= len(number) <= 16)


class KannelProvider:
    """One smsbox ``sendsms`` endpoint. ``dlr_url`` is the callback prefix including the
    secret (``http://host:port/sms/dlr/<secret>``), or empty for no delivery reports."""

    name = "kannel"

    def __init__(self, url: str, username: str, password: str, sender: str = "",
                 dlr_url: str = "", timeout_seconds: float = 5.0, retries: int = 2,
                 backoff_seconds: float = 0.25) -> None:
        self._url = url
        self._username = username
        self._password = password
        self._sender = sender
        self._dlr_url = dlr_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds,
                                              sock_connect=min(timeout_seconds, 3.0))
        self._retries = max(0, retries)
        self._backoff = backoff_seconds
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"KannelProvider(retries={self._retries})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No cookie jar, no environment proxies: the gateway is addressed directly.
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def _headers(self, to_e164: str, reference: str) -> dict[str, str]:
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-Kannel-Username": self._username,
            "X-Kannel-Password": self._password,
            "X-Kannel-To": to_e164,
            "X-Kannel-Coding": str(UCS2),
        }
        if self._sender:
            headers["X-Kannel-From"] = self._sender
        if self._dlr_url:
            headers["X-Kannel-DLR-Mask"] = str(DLR_MASK_ALL)
            headers["X-Kannel-DLR-Url"] = f"{self._dlr_url}?ref={reference}&type=%d"
        return headers

    async def send(self, to_e164: str, text: str, reference: str) -> SendResult:
        check_reference(reference)
        if not _is_e164(to_e164):
            raise SmsError(INVALID_RECIPIENT, RECIPIENT_MESSAGE, retryable=False)
        headers = self._headers(to_e164, reference)
        body = text.encode("utf-8")
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._client().post(self._url, data=body, headers=headers,
                                               allow_redirects=False) as resp:
                    answer = (await resp.text(errors="replace"))[:200]
                    status = resp.status
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError,
                    aiohttp.ServerDisconnectedError) as exc:
                failure = exc.__class__.__name__
                retry = True
            except (TimeoutError, aiohttp.ClientError) as exc:
                failure = exc.__class__.__name__
                retry = False
            else:
                if status == 202 or (200 <= status < 300):
                    queued = answer.lstrip().startswith("3:") or "queued" in answer.lower()
                    result = SendResult(message_id=secrets.token_hex(8),
                                        status=QUEUED if queued else SENT)
                    event(log, "sms_accepted", consultation=reference, status=result.status,
                          message_id=result.message_id, attempts=attempt,
                          ms=round((time.monotonic() - started) * 1000))
                    return result
                if status in (401, 403):
                    event(log, "sms_gateway_auth_refused", logging.ERROR,
                          consultation=reference, http_status=status)
                    raise SmsError(GATEWAY_AUTH, AUTH_MESSAGE, retryable=False)
                if 400 <= status < 500:
                    event(log, "sms_gateway_rejected", logging.ERROR,
                          consultation=reference, http_status=status)
                    raise SmsError(GATEWAY_REJECTED, REJECTED_MESSAGE, retryable=False)
                failure = f"http_{status}"
                retry = True
            event(log, "sms_gateway_failure", logging.WARNING, consultation=reference,
                  failure=failure, attempt=attempt, will_retry=retry and attempt <= self._retries)
            if not retry or attempt > self._retries:
                raise SmsError(GATEWAY_UNAVAILABLE, UNAVAILABLE_MESSAGE)
            await asyncio.sleep(min(self._backoff * 2 ** (attempt - 1), 2.0))

    async def check(self) -> None:
        """smsbox answers and accepts our credentials: a sendsms without recipient is
        refused with 400 (nothing is sent); 403 means wrong credentials."""
        headers = {"Content-Type": "text/plain; charset=UTF-8",
                   "X-Kannel-Username": self._username, "X-Kannel-Password": self._password}
        try:
            async with self._client().post(self._url, data=b"", headers=headers,
                                           allow_redirects=False) as resp:
                await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError):
            raise SmsError(GATEWAY_UNAVAILABLE, UNAVAILABLE_MESSAGE) from None
        if status in (401, 403):
            raise SmsError(GATEWAY_AUTH, AUTH_MESSAGE, retryable=False)
        if status >= 500:
            raise SmsError(GATEWAY_UNAVAILABLE, UNAVAILABLE_MESSAGE)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
