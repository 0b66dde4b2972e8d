"""Signed-in sessions of the operator station: who is at the screen, and a form token.

A session starts with the user's id and password (checked against the site's
users file, lockout included) and ends on sign-out or after ``IDLE_S`` without a
request (EU GMP Annex 11 §12: a station left alone must not keep acting for its
user). Each session has its own CSRF token that every form carries; the cookie
is HttpOnly and SameSite=Strict. Sessions live in the station's memory: a
restarted station asks everyone to sign in again, which is what it should do.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from twin.access.roles import Role
from twin.clock import wall_monotonic

__all__ = ["COOKIE", "IDLE_S", "Session", "Sessions"]

COOKIE = "poc_twin_station"
#: A session nobody used for this long is closed (seconds).
IDLE_S = 15 * 60.0


@dataclass
class Session:
    """One signed-in user at the station."""

    user: str
    name: str
    roles: frozenset[Role]
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    seen: float = field(default_factory=wall_monotonic)
    #: One message for the next page (the outcome of the last act), shown once.
    flash: list[tuple[str, str]] = field(default_factory=list)

    def form_ok(self, token: object) -> bool:
        """Whether a posted form carries this session's token (constant-time compare)."""
        return isinstance(token, str) and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    """Session id (the cookie's value) -> Session; idle ones are forgotten."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._by_id: dict[str, Session] = {}

    def start(self, session: Session) -> str:
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = session
        return sid

    def get(self, sid: str | None, *, used: bool = True) -> Session | None:
        """The live session of ``sid``, None if none; ``used``: a person's request (a page,
        a form), which restarts its idle timer. A page's own refresh is not: a station left
        alone with a batch page open must still sign its user out (before, the 2 s refresh
        kept every session alive for ever)."""
        now = wall_monotonic()
        for key in [k for k, s in self._by_id.items() if now - s.seen > self.idle_s]:
            del self._by_id[key]
        session = self._by_id.get(sid or "")
        if session is not None and used:
            session.seen = now
        return session

    def end(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)
