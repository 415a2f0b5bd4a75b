"""Who is asking: HTTP Basic for scripts, a signed session cookie for the console.

* **Basic**: verified against the account's argon2id hash; a verified pair is
  remembered for ``CACHE_TTL`` seconds (as Dovecot's auth cache does), so a script
  polling the API does not pay ~0.15 s of CPU per request.
* **Session**: ``POST /api/v1/session`` sets an HttpOnly, SameSite=Strict cookie
  holding ``payload.signature`` (HMAC-SHA256 with the cluster's session secret,
  so it stays valid when the admin service fails over). The account is read
  again on every request: a removed account or a changed role counts at once.
* **CSRF**: a change (any method but GET) made with the cookie must carry the
  session's token in ``X-CSRF-Token``; any change whose ``Origin`` is not this
  server is refused, whatever the credential.
* **Throttling**: past ``MAX_FAILURES`` failed logins within ``WINDOW`` seconds
  from one client address or for one account name, logins are refused with 429
  until the window moves on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass

from aiohttp import web

from clustermail.admin.api.accounts import Account, Accounts
from clustermail.admin.api.roles import ApiError

COOKIE = "clustermail_session"
CSRF_HEADER = "X-CSRF-Token"
#: Sent by the console so a 401 does not make the browser pop up its own login box.
CONSOLE_HEADER = "X-Clustermail-Console"
SESSION_TTL = 12 * 3600.0
CACHE_TTL = 60.0
MAX_FAILURES = 5
WINDOW = 60.0


def unauthorized(message: str, challenge: bool = True) -> ApiError:
    return ApiError(401, "unauthorized", message, challenge=challenge)


@dataclass(frozen=True, slots=True)
class Session:
    name: str
    expires: float
    nonce: str


class Throttle:
    """Failed logins per key (client address, account name) in a sliding window."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, keys: list[str], now: float | None = None) -> float:
        """Seconds until a login may be tried again for these keys (0: now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self.max_failures:
                wait = max(wait, times[-self.max_failures] + self.window - now)
        return wait

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in keys:
            self._recent(key, now).append(now)
        if len(self._failures) > 10_000:  # bounded: forget quiet keys
            for key in [k for k, v in self._failures.items() if not v]:
                del self._failures[key]

    def succeeded(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)


class Authenticator:
    def __init__(self, accounts: Accounts, secret: bytes) -> None:
        self.accounts = accounts
        self.secret = secret
        self.throttle = Throttle()
        self._cache: dict[tuple[str, bytes], float] = {}

    # ------------------------------------------------------------------ logins

    async def login(self, request: web.Request, name: str, password: str) -> Account:
        """Checks a name and password, throttled; 401 or 429 when they do not pass."""
        keys = [f"addr:{request.remote or '?'}", f"name:{name.lower()}"]
        wait = self.throttle.retry_after(keys)
        if wait > 0:
            raise ApiError(429, "too_many_attempts",
                           f"too many failed logins; try again in {wait:.0f} s",
                           retry_after=wait)
        digest = hashlib.sha256(f"{name}\0{password}".encode()).digest()
        now = time.monotonic()
        if self._cache.get((name, digest), 0.0) > now:
            account = await self.accounts.get(name)
            if account is not None:
                return account
        account = await self.accounts.verify(name, password)
        if account is None:
            from clustermail.admin.api.service_metrics import ADMIN_LOGINS_FAILED

            ADMIN_LOGINS_FAILED.inc()
            self.throttle.failed(keys)
            raise unauthorized("wrong administrator name or password")
        self.throttle.succeeded(keys)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[(name, digest)] = now + CACHE_TTL
        return account

    # ------------------------------------------------------------------ sessions

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self.secret, payload, hashlib.sha256).hexdigest()

    def new_session(self, account: Account) -> tuple[str, Session]:
        session = Session(account.name, time.time() + SESSION_TTL, secrets.token_hex(16))
        payload = base64.urlsafe_b64encode(json.dumps(
            {"u": session.name, "e": session.expires, "n": session.nonce}).encode())
        return f"{payload.decode()}.{self._sign(payload)}", session

    def read_session(self, token: str) -> Session | None:
        payload, _, signature = token.partition(".")
        if not hmac.compare_digest(self._sign(payload.encode()), signature):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload.encode()))
            session = Session(str(data["u"]), float(data["e"]), str(data["n"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        return session if session.expires > time.time() else None

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf:{session.nonce}".encode())

    def set_cookie(self, response: web.StreamResponse, token: str, *, secure: bool) -> None:
        """``secure`` over HTTPS: the cookie is then never sent over plain HTTP."""
        response.set_cookie(COOKIE, token, max_age=int(SESSION_TTL), path="/", httponly=True,
                            samesite="Strict", secure=secure)

    # ------------------------------------------------------------------ requests

    async def identify(self, request: web.Request,
                       changes: bool) -> tuple[Account, Session | None]:
        """The account making ``request`` and its console session (None for Basic); 401
        without a valid credential, 403 for a change without its CSRF token or from
        another origin."""
        origin = request.headers.get("Origin")
        if changes and origin is not None and origin != f"{request.scheme}://{request.host}":
            raise ApiError(403, "cross_origin", f"changes from {origin} are refused")
        challenge = CONSOLE_HEADER not in request.headers
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise unauthorized("malformed Basic credentials", challenge) from None
            name, sep, password = decoded.partition(":")
            if not sep:
                raise unauthorized("malformed Basic credentials", challenge)
            return await self.login(request, name, password), None
        if header:
            raise unauthorized("use HTTP Basic authentication or a session", challenge)
        token = request.cookies.get(COOKIE)
        if not token:
            raise unauthorized("authentication required", challenge)
        session = self.read_session(token)
        if session is None:
            raise unauthorized("the session expired or is not valid; log in again", challenge)
        if changes:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent, self.csrf_token(session)):
                raise ApiError(403, "csrf", f"missing or wrong {CSRF_HEADER} header")
        account = await self.accounts.get(session.name)
        if account is None:
            raise unauthorized("the account of this session no longer exists", challenge)
        return account, session
