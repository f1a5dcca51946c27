"""Staff login and sessions.

A session is created by ``login`` (ID + password, after the mutual-TLS handshake) and
bound to the SHA-256 fingerprint of the client certificate of that connection: the
cookie replayed over another office PC's connection is refused (and the session ended).
The cookie value is random; the store keeps only its SHA-256. Idle and absolute timeouts
come from ``[auth]``. Failed logins lock the account after ``lockout_failures`` for
``lockout_minutes``; failures per client certificate are rate-limited too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from madoguchi import metrics
from madoguchi.clock import Clock
from madoguchi.config import AuthConfig
from madoguchi.logs import event
from signalling import audit as audit_actions
from signalling.passwords import (
    PasswordPolicyError,
    check_policy,
    dummy_verify,
    hash_password,
    needs_rehash,
    verify_password,
)
from signalling.store.interfaces import StaffAccount, StaffSession, Store
from signalling.tls import peer_certificate, peer_revoked

log = logging.getLogger(__name__)

SESSION_COOKIE = "md_session"
# Routes a new account (must_change_password) may use before changing its password.
PASSWORD_CHANGE_PATHS = frozenset({"/api/me", "/api/password", "/api/logout"})
TOUCH_INTERVAL = 5.0  # seconds between last_seen writes
_REQUEST_KEY: Any = (web.RequestKey("md_auth_principal", object)
                     if hasattr(web, "RequestKey") else "md_auth_principal")
_MISSING = object()

ERROR_STATUS = {"invalid_credentials": 401, "locked": 401, "disabled": 401,
                "rate_limited": 429, "weak_password": 400, "no_certificate": 401}
MESSAGES = {
    "invalid_credentials": "The user name or password is wrong.",
    "locked": "Too many failed logins: the account is locked for a while.",
    "disabled": "This account is disabled.",
    "rate_limited": "Too many failed logins from this PC: wait a minute.",
    "no_certificate": "A client certificate is required.",
}


class LoginError(Exception):
    """A refused login or password change; ``code`` is the API error code."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message or MESSAGES.get(code, code)

    @property
    def status(self) -> int:
        return ERROR_STATUS.get(self.code, 401)


@dataclass
class Principal:
    """The logged-in staff member behind a request."""

    username: str
    ward: str
    role: str
    session: StaffSession
    must_change_password: bool
    cert_fingerprint: str = ""
    cert_serial: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token


def password_change_required(principal: Principal, path: str) -> bool:
    """True when ``path`` must answer 403 ``password_change_required`` for ``principal``."""
    return principal.must_change_password and path not in PASSWORD_CHANGE_PATHS


def session_hash(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode("utf-8", "replace")).hexdigest()


class _FailureWindow:
    """Failed attempts per key within a sliding minute (memory only, per node)."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 10000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: dict[str, collections.deque[float]] = {}

    def _trim(self, key: str, now: float) -> collections.deque[float]:
        q = self._hits.setdefault(key, collections.deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def blocked(self, key: str, now: float) -> bool:
        if self.limit <= 0:
            return False
        q = self._trim(key, now)
        if not q:
            self._hits.pop(key, None)
        return len(q) >= self.limit

    def add(self, key: str, now: float) -> None:
        if len(self._hits) >= self.max_keys:
            for k in [k for k, q in self._hits.items() if not q or q[-1] <= now - self.window]:
                del self._hits[k]
        self._trim(key, now).append(now)


class _PhantomLockout:
    """Failure counts and lockouts of user names that have no account, kept like a real
    account's (``failed_logins``, ``locked_until``) so the answers are the same. Memory
    only, bounded: the oldest names go first."""

    def __init__(self, failures: int, lock_seconds: float, max_names: int = 10000) -> None:
        self.failures = failures
        self.lock_seconds = lock_seconds
        self.max_names = max_names
        self._names: dict[str, tuple[int, float]] = {}  # name hash -> (failures, until)

    def fail(self, username: str, now: float) -> bool:
        """Count one failure; True when the name is (now) locked."""
        key = hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()
        count, until = self._names.pop(key, (0, 0.0))
        if until > now:
            self._names[key] = (count, until)
            return True
        count += 1
        if count >= self.failures:
            count, until = 0, now + self.lock_seconds
        self._names[key] = (count, until)  # re-inserted: dict order is age order
        while len(self._names) > self.max_names:
            del self._names[next(iter(self._names))]
        return until > now


class _KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it. Login attempts
    are serialised per certificate and per account, so parallel guesses cannot slip past
    the failure counters (read-modify-write in the store)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Authenticator:
    """Login, session checks, logout and password changes for the staff site."""

    def __init__(self, store: Store, auth_cfg: AuthConfig, clock: Clock, audit: Any = None,
                 is_revoked: Callable[[str], bool] | None = None) -> None:
        self.store = store
        self.cfg = auth_cfg
        self.clock = clock
        self.audit = audit
        self.is_revoked = is_revoked
        self._cert_failures = _FailureWindow(auth_cfg.cert_failures_per_minute)
        self._phantoms = _PhantomLockout(auth_cfg.lockout_failures,
                                         auth_cfg.lockout_minutes * 60)
        self._cert_locks = _KeyedLocks()
        self._user_locks = _KeyedLocks()

    # ------------------------------------------------------------------ helpers
    def _audit(self, action: str, **fields: Any) -> None:
        if self.audit is not None:
            try:
                self.audit.write(action, **fields)
            except OSError as exc:
                event(log, "audit_write_failed", logging.ERROR, action=action,
                      reason=type(exc).__name__)

    async def _verify(self, password_hash: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, verify_password, password_hash, password)

    async def _dummy(self, password: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, dummy_verify, password)

    async def _hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, hash_password, password)

    async def _count_failure(self, account: StaffAccount, now: float) -> bool:
        """Count one failure on ``account``; True when this failure locked it."""
        failures = account.failed_logins + 1
        if failures >= self.cfg.lockout_failures:
            await self.store.update_staff(account.username, {
                "failed_logins": 0, "locked_until": now + self.cfg.lockout_minutes * 60})
            metrics.ACCOUNT_LOCKOUTS.inc()
            event(log, "account_locked", logging.WARNING, staff=account.username,
                  minutes=self.cfg.lockout_minutes)
            return True
        await self.store.update_staff(account.username, {"failed_logins": failures})
        return False

    # ------------------------------------------------------------------ login
    async def login(self, username: str, password: str, cert_fingerprint: str,
                    cert_serial: str) -> tuple[StaffSession, str, StaffAccount]:
        """Check the password; on success a new session bound to the certificate.

        Returns (session, cookie value, account). Raises LoginError with code
        ``invalid_credentials`` (unknown user and wrong password alike), ``locked``,
        ``disabled`` or ``rate_limited``.
        """
        if not cert_fingerprint:
            raise LoginError("no_certificate")
        fp = cert_fingerprint.lower()
        user_key = username if isinstance(username, str) else ""
        async with self._cert_locks.hold(fp), self._user_locks.hold(user_key):
            return await self._login(username, password, fp, cert_serial)

    async def _login(self, username: str, password: str, fp: str,
                     cert_serial: str) -> tuple[StaffSession, str, StaffAccount]:
        now = self.clock.now()
        if self.is_revoked is not None and self.is_revoked(cert_serial):
            self._audit(audit_actions.LOGIN_FAILED, cert_serial=cert_serial, result="revoked")
            raise LoginError("no_certificate", "This certificate is revoked.")
        if self._cert_failures.blocked(fp, now):
            metrics.LOGINS.labels(result="rate_limited").inc()
            self._audit(audit_actions.LOGIN_FAILED, cert_serial=cert_serial,
                        result="rate_limited")
            raise LoginError("rate_limited")
        if not isinstance(username, str) or not isinstance(password, str):
            raise LoginError("invalid_credentials")
        account = await self.store.get_staff(username) if 0 < len(username) <= 64 else None
        if account is None:
            await self._dummy(password)
            self._cert_failures.add(fp, now)
            metrics.LOGINS.labels(result="failure").inc()
            # The typed name is not recorded: it may be a password typed in the wrong field.
            self._audit(audit_actions.LOGIN_FAILED, cert_serial=cert_serial,
                        result="unknown_user")
            # An unknown name locks like a real one: "locked" must not reveal an account.
            raise LoginError("locked" if self._phantoms.fail(username, now) else
                             "invalid_credentials")
        who = {"staff": account.username, "ward": account.ward, "cert_serial": cert_serial}
        if account.locked_until > now:
            # The answer is "locked" whatever the password is; the hash is still run so
            # the time taken does not tell a locked real account from an unknown name.
            await self._dummy(password)
            self._cert_failures.add(fp, now)
            metrics.LOGINS.labels(result="locked").inc()
            self._audit(audit_actions.LOGIN_LOCKED, **who, result="locked")
            raise LoginError("locked")
        if not await self._verify(account.password_hash, password):
            self._cert_failures.add(fp, now)
            metrics.LOGINS.labels(result="failure").inc()
            locked = await self._count_failure(account, now)
            self._audit(audit_actions.LOGIN_FAILED, **who, result="wrong_password")
            if locked:
                self._audit(audit_actions.ACCOUNT_LOCKED, **who,
                            detail=f"{self.cfg.lockout_minutes} minutes")
                raise LoginError("locked")
            raise LoginError("invalid_credentials")
        if account.disabled:
            metrics.LOGINS.labels(result="disabled").inc()
            self._audit(audit_actions.LOGIN_FAILED, **who, result="disabled")
            raise LoginError("disabled")
        changes: dict[str, Any] = {"failed_logins": 0, "locked_until": 0.0}
        if needs_rehash(account.password_hash):
            changes["password_hash"] = await self._hash(password)
        updated = await self.store.update_staff(account.username, changes) or account
        cookie = secrets.token_urlsafe(32)
        session = StaffSession(
            id_hash=session_hash(cookie), username=account.username, cert_fingerprint=fp,
            csrf_token=secrets.token_urlsafe(32), created_at=now, last_seen=now,
            expires_at=now + self.cfg.session_absolute_hours * 3600)
        await self.store.put_session(session)
        metrics.LOGINS.labels(result="success").inc()
        self._audit(audit_actions.LOGIN_OK, **who)
        event(log, "staff_login", staff=account.username, ward=account.ward)
        return session, cookie, updated

    async def login_request(self, request: web.Request, username: str, password: str
                            ) -> tuple[StaffSession, str, StaffAccount]:
        """``login`` with the client certificate of ``request``'s connection (refused when
        missing or revoked since the connection was opened)."""
        cert = peer_certificate(request)
        if cert is None:
            raise LoginError("no_certificate")
        if peer_revoked(request):
            self._audit(audit_actions.LOGIN_FAILED, cert_serial=cert[1], result="revoked")
            raise LoginError("no_certificate", "This certificate is revoked.")
        return await self.login(username, password, cert[0], cert[1])

    # ------------------------------------------------------------------ sessions
    async def authenticate(self, request: web.Request) -> Principal | None:
        """The principal of this request, or None (no/unknown/expired session, or a
        session presented over another client certificate). Cached per request."""
        cached = request.get(_REQUEST_KEY, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        principal = await self._authenticate(request)
        request[_REQUEST_KEY] = principal
        return principal

    async def revalidate(self, request: web.Request, user_action: bool = False
                         ) -> Principal | None:
        """Check the session again (long-lived WebSockets: call it every minute or so and
        close the socket on None: expired session, logout, disabled account, or the
        certificate revoked since the connection was opened). Only a ``user_action``
        counts as activity: a periodic check must not keep an unattended PC logged in."""
        request[_REQUEST_KEY] = _MISSING
        principal = await self._authenticate(request, touch=user_action)
        request[_REQUEST_KEY] = principal
        return principal

    async def _authenticate(self, request: web.Request, touch: bool = True
                            ) -> Principal | None:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if not cookie or len(cookie) > 256:
            return None
        id_hash = session_hash(cookie)
        session = await self.store.get_session(id_hash)
        if session is None:
            return None
        now = self.clock.now()
        if now >= session.expires_at or now - session.last_seen >= \
                self.cfg.session_idle_minutes * 60:
            await self.store.delete_session(id_hash)
            event(log, "staff_session_expired", staff=session.username)
            return None
        cert = peer_certificate(request)
        transport = getattr(request, "transport", None)
        if cert is None and (transport is None or transport.is_closing()):
            return None  # the client left mid-request (a console tab closed): no leak
        if cert is None or not hmac.compare_digest(cert[0], session.cert_fingerprint):
            # A cookie replayed from another office PC: end the session, it leaked.
            await self.store.delete_session(id_hash)
            self._audit(audit_actions.SESSION_REFUSED, staff=session.username,
                        cert_serial=cert[1] if cert else "", result="certificate_mismatch")
            event(log, "staff_session_cert_mismatch", logging.WARNING, staff=session.username)
            return None
        if peer_revoked(request) or (self.is_revoked is not None and self.is_revoked(cert[1])):
            # A keep-alive connection (or resumed session) from before the revocation.
            await self.store.delete_session(id_hash)
            self._audit(audit_actions.SESSION_REFUSED, staff=session.username,
                        cert_serial=cert[1], result="certificate_revoked")
            return None
        account = await self.store.get_staff(session.username)
        if account is None or account.disabled:
            await self.store.delete_session(id_hash)
            return None
        if touch and now - session.last_seen >= TOUCH_INTERVAL:
            await self.store.update_session(id_hash, {"last_seen": now})
            session.last_seen = now
        return Principal(username=account.username, ward=account.ward, role=account.role,
                         session=session, must_change_password=account.must_change_password,
                         cert_fingerprint=cert[0], cert_serial=cert[1])

    async def logout(self, request: web.Request,
                     response: web.StreamResponse | None = None) -> None:
        """End this request's session (if any) and clear the cookie on ``response``."""
        principal = await self.authenticate(request)
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and len(cookie) <= 256:
            await self.store.delete_session(session_hash(cookie))
        if principal is not None:
            self._audit(audit_actions.LOGOUT, staff=principal.username, ward=principal.ward,
                        cert_serial=principal.cert_serial)
        request[_REQUEST_KEY] = None
        if response is not None:
            self.clear_cookie(response)

    async def change_password(self, principal: Principal, old: str, new: str) -> None:
        """Change the principal's password; other sessions of the account end.

        LoginError ``invalid_credentials`` (old password wrong; counts towards the
        lockout) or ``weak_password`` (message says why).
        """
        async with self._user_locks.hold(principal.username):
            await self._change_password(principal, old, new)

    async def _change_password(self, principal: Principal, old: str, new: str) -> None:
        now = self.clock.now()
        account = await self.store.get_staff(principal.username)
        if account is None or account.disabled:
            raise LoginError("invalid_credentials")
        who = {"staff": account.username, "ward": account.ward,
               "cert_serial": principal.cert_serial}
        fp = principal.cert_fingerprint.lower()
        # The same lockout and per-certificate limit as login: a live session is no
        # licence to guess the old password.
        if self._cert_failures.blocked(fp, now):
            self._audit(audit_actions.PASSWORD_CHANGED, **who, result="rate_limited")
            raise LoginError("rate_limited")
        if account.locked_until > now:
            await self._dummy(old)
            self._cert_failures.add(fp, now)
            self._audit(audit_actions.PASSWORD_CHANGED, **who, result="locked")
            raise LoginError("locked")
        if not await self._verify(account.password_hash, old):
            self._cert_failures.add(fp, now)
            locked = await self._count_failure(account, now)
            self._audit(audit_actions.PASSWORD_CHANGED, **who, result="wrong_password")
            if locked:
                self._audit(audit_actions.ACCOUNT_LOCKED, **who,
                            detail=f"{self.cfg.lockout_minutes} minutes")
                raise LoginError("locked")
            raise LoginError("invalid_credentials", "The current password is wrong.")
        try:
            check_policy(new, self.cfg.password_min_length, account.username)
        except PasswordPolicyError as exc:
            raise LoginError("weak_password", str(exc)) from None
        if new == old:
            raise LoginError("weak_password", "The new password must differ from the old one.")
        await self.store.update_staff(account.username, {
            "password_hash": await self._hash(new), "must_change_password": False,
            "failed_logins": 0})
        await self.store.delete_sessions_of(account.username)
        await self.store.put_session(principal.session)
        principal.must_change_password = False
        self._audit(audit_actions.PASSWORD_CHANGED, **who, result="ok")

    # ------------------------------------------------------------------ cookies
    @staticmethod
    def set_cookie(response: web.StreamResponse, cookie_value: str) -> None:
        response.set_cookie(SESSION_COOKIE, cookie_value, secure=True, httponly=True,
                            samesite="Strict", path="/")

    @staticmethod
    def clear_cookie(response: web.StreamResponse) -> None:
        response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True,
                            samesite="Strict")
