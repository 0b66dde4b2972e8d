"""Dashboard logins: scrypt off the event loop, rate limits per user and per address, lockout.

A password check is a deliberately slow scrypt (about 50 ms of CPU). On the
event loop, a few wrong passwords a second stalled MQTT ingest and every page;
unlimited, they were also a way to guess passwords. So:

* hashes run in a small thread pool of their own (``hashers`` threads), never on
  the loop and never in the pool the dashboard's store queries use; at most
  ``in_flight`` logins wait for it, the others are answered 503 at once;
* a user name or an address that tried ``attempts_per_minute`` times in the last
  minute is answered 429 (with ``Retry-After``) without hashing;
* after ``user_failures`` wrong passwords for one user, or ``address_failures``
  from one address, within ``window_s``, that user or address is locked out for
  ``lockout_s``: 429 even with the right password, so guessing cannot continue.
  A successful login clears the user's and the address's failures.

Behind a TLS proxy every request comes from the proxy's address, so the address
limits then apply to everyone together; the per-user limits still stand.
Time comes from an injected ``now`` (wall monotonic by default), so the tests
step through a lockout without waiting for it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from twin.clock import wall_monotonic
from twin.names import UnsafeName, check_safe_name
from twin.telemetry.topics import TelemetryError

__all__ = ["LoginGuard", "LoginRefused", "Logins", "Users"]

#: Tracked names and addresses kept at most (the idle ones are dropped first).
_MAX_TRACKED = 10_000


class Users:
    """``name:scrypt:SALT:HASH`` lines; ``Users.line(name, password)`` makes one."""

    def __init__(self, path: Path | None) -> None:
        self._users: dict[str, tuple[bytes, bytes]] = {}
        if path is not None:
            for number, line in enumerate(Path(path).read_text().splitlines(), 1):
                if line.strip() and not line.startswith("#"):
                    self._take(f"{path}:{number}", line.strip())
        self._decoy = (secrets.token_bytes(16), secrets.token_bytes(64))

    def _take(self, where: str, line: str) -> None:
        """One ``name:scrypt:SALT:HASH`` line; anything else names its line (a typo, a line
        cut short) and says what makes a good one. A name twice is refused: which of two
        passwords would be hers?"""
        fields = line.split(":")
        try:
            name, scheme, salt, digest = fields
            if scheme != "scrypt":
                raise ValueError(f"scheme {scheme!r}")
            hashed = (bytes.fromhex(salt), bytes.fromhex(digest))
        except ValueError:
            raise TelemetryError(
                f"{where}: not a user line (NAME:scrypt:SALT:HASH); control-site add-user makes one"
            ) from None
        try:  # its name goes to sites with every request it signs: a user id
            check_safe_name(name, f"{where}: user")
        except UnsafeName as exc:
            raise TelemetryError(f"{exc} (control-site add-user makes one)") from None
        if name in self._users:
            raise TelemetryError(f"{where}: user {name} is in the file twice; keep one line")
        self._users[name] = hashed

    def __contains__(self, name: object) -> bool:
        return name in self._users

    def __len__(self) -> int:
        return len(self._users)

    @staticmethod
    def _hash(password: str, salt: bytes) -> bytes:
        return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)

    @classmethod
    def line(cls, name: str, password: str) -> str:
        salt = secrets.token_bytes(16)
        return f"{name}:scrypt:{salt.hex()}:{cls._hash(password, salt).hex()}"

    def verify(self, name: str, password: str) -> bool:
        """Whether the password is the user's; as slow for an unknown name (no user probing)."""
        salt, digest = self._users.get(name, self._decoy)
        good = hmac.compare_digest(self._hash(password, salt), digest)
        return good and name in self._users


class LoginRefused(TelemetryError):
    """A login not checked or not accepted; ``status`` is the HTTP answer (401, 429, 503)."""

    def __init__(self, message: str, status: int, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass
class _Tally:
    attempts: deque[float] = field(default_factory=deque)
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = float("-inf")


class LoginGuard:
    """Counts attempts and failures per user name and per address; says when to refuse."""

    def __init__(
        self,
        *,
        now: Callable[[], float] = wall_monotonic,
        attempts_per_minute: int = 30,
        user_failures: int = 5,
        address_failures: int = 20,
        window_s: float = 300.0,
        lockout_s: float = 300.0,
    ) -> None:
        self.now = now
        self.attempts_per_minute = attempts_per_minute
        self.limits = {"user": user_failures, "address": address_failures}
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._tallies: dict[tuple[str, str], _Tally] = {}

    def _tally(self, what: str, key: str, now: float) -> _Tally:
        tally = self._tallies.get((what, key))
        if tally is None:
            if len(self._tallies) >= _MAX_TRACKED:
                self._forget_idle(now)
            tally = self._tallies[(what, key)] = _Tally()
        while tally.attempts and tally.attempts[0] <= now - 60.0:
            tally.attempts.popleft()
        while tally.failures and tally.failures[0] <= now - self.window_s:
            tally.failures.popleft()
        return tally

    def _forget_idle(self, now: float) -> None:
        """Drop every tally with nothing recent; if all are recent, the unlocked ones."""
        recent = now - max(60.0, self.window_s)
        for key, t in list(self._tallies.items()):
            last = max([*list(t.attempts)[-1:], *list(t.failures)[-1:]], default=recent)
            if last <= recent and t.locked_until <= now:
                del self._tallies[key]
        if len(self._tallies) >= _MAX_TRACKED:
            for key, t in list(self._tallies.items()):
                if t.locked_until <= now:
                    del self._tallies[key]

    def admit(self, user: str, address: str) -> None:
        """Count an attempt, or LoginRefused (429) if the user or address must wait."""
        now = self.now()
        tallies = [("user", user), ("address", address)]
        for what, key in tallies:
            tally = self._tally(what, key, now)
            if tally.locked_until > now:
                raise LoginRefused(
                    f"too many failed logins for this {what}: locked out, try again later",
                    429,
                    tally.locked_until - now,
                )
            if len(tally.attempts) >= self.attempts_per_minute:
                raise LoginRefused(
                    f"too many logins for this {what} in the last minute",
                    429,
                    tally.attempts[0] + 60.0 - now,
                )
        for what, key in tallies:
            self._tally(what, key, now).attempts.append(now)

    def failed(self, user: str, address: str) -> None:
        """A wrong password: counted; at the limit, that user or address is locked out."""
        now = self.now()
        for what, key in (("user", user), ("address", address)):
            tally = self._tally(what, key, now)
            tally.failures.append(now)
            if len(tally.failures) >= self.limits[what]:
                tally.locked_until = now + self.lockout_s
                tally.failures.clear()

    def succeeded(self, user: str, address: str) -> None:
        now = self.now()
        for what, key in (("user", user), ("address", address)):
            self._tally(what, key, now).failures.clear()


class Logins:
    """HTTP Basic logins for the dashboard's requests, checked off the loop and rate limited."""

    def __init__(
        self,
        users: Users,
        guard: LoginGuard | None = None,
        *,
        hashers: int = 2,
        in_flight: int = 16,
    ) -> None:
        self.users = users
        self.guard = guard or LoginGuard()
        self.in_flight = in_flight
        self._busy = 0
        self._pool = ThreadPoolExecutor(max_workers=hashers, thread_name_prefix="scrypt")

    async def authenticate(self, header: str | None, address: str) -> str:
        """The user name for a valid ``Authorization: Basic`` header; else LoginRefused."""
        if not header or not header.startswith("Basic "):
            raise LoginRefused("a control-site user is needed for requests to sites", 401)
        try:
            name, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, password = "", None
        if password is None:
            self.guard.admit(name, address)
            self.guard.failed(name, address)
            raise LoginRefused("malformed Basic credentials", 401)
        return await self.check(name, password, address)

    async def check(self, name: str, password: str, address: str) -> str:
        """The user name if the password is theirs (a sign-in, or the signature of an act);
        else LoginRefused. Counted and limited like every login: a signature dialog is no
        way around the lockout."""
        self.guard.admit(name, address)
        if self._busy >= self.in_flight:
            raise LoginRefused("too many logins at once; try again in a moment", 503, 1.0)
        self._busy += 1
        try:
            loop = asyncio.get_running_loop()
            good = await loop.run_in_executor(self._pool, self.users.verify, name, password)
        finally:
            self._busy -= 1
        if not good:
            self.guard.failed(name, address)
            raise LoginRefused("wrong user name or password", 401)
        self.guard.succeeded(name, address)
        return name

    def close(self) -> None:
        """Stop the hashing threads (the app's cleanup)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
