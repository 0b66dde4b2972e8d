"""Anchoring sites' chain heads: keep each batch's last good head, flag what breaks it.

A site publishes its journal's chain head: the latest *signed* checkpoint once
the journal has one (``seq``, ``hash``, ``signature``, ``key_id``), the plain
head before that or for a site without a key. The control site keeps, per
batch, the last head it *anchored*, and anchors a new head only when:

* its signature verifies with the site's registered public key (a site with a
  registered key is anchored by signed heads only; an unsigned head from it is
  ignored, since a journal's first events come before its first checkpoint);
* it extends the anchored head: the events stored between the two form one
  unbroken chain, from the anchored hash to the new one. Stored events are
  never overwritten, so a site that rewrote its history, even re-signed with
  its own key, cannot produce a head that extends what was anchored before.

Flags (shown on the dashboard until investigated): a bad signature (signed by
another key, or not verifying), and a head that does not extend the anchored
one (a different hash for an anchored event, or a chain that does not link).
A head whose events are not all stored yet waits and is decided when they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twin.control_site.keys import HeadVerdict, SiteKeys
from twin.journal import GENESIS

__all__ = ["Anchoring"]

#: Undecided heads kept per batch (the newest); an older one is covered by a newer one.
_MAX_PENDING = 8

Query = Callable[..., Any]
Flagger = Callable[[str, str, int, str, float], None]


class Anchoring:
    """The head rules over the store's connection (called under the store's lock)."""

    def __init__(self, x: Query, flag: Flagger, keys: SiteKeys | None) -> None:
        self._x = x
        self._flag = flag
        self.keys = keys
        self.pending: dict[tuple[str, str], list[tuple[dict[str, Any], HeadVerdict]]] = {}

    def head(self, site: str, batch: str, body: dict[str, Any], now: float) -> None:
        """One ``head`` message: check its signature, then anchor it when it can be decided."""
        if self.keys is not None:
            verdict = self.keys.check(site, body)
        else:
            verdict = HeadVerdict(unsigned=not body.get("signature"))
        if verdict.bad is not None:
            self._flag(site, batch, int(body.get("seq", 0)), verdict.bad, now)
            return
        if verdict.unsigned and verdict.registered:
            return  # this site signs: only its signed heads count
        waiting = self.pending.setdefault((site, batch), [])
        waiting.append((body, verdict))
        del waiting[:-_MAX_PENDING]
        self.settle(site, batch, now)

    def settle(self, site: str, batch: str, now: float) -> None:
        """Decide every waiting head of a batch whose events are now stored."""
        waiting = self.pending.pop((site, batch), [])
        undecided = []
        for body, verdict in sorted(waiting, key=lambda item: int(item[0].get("seq", 0))):
            if not self._decide(site, batch, body, verdict, now):
                undecided.append((body, verdict))
        if undecided:
            self.pending[(site, batch)] = undecided

    def _decide(
        self, site: str, batch: str, body: dict[str, Any], verdict: HeadVerdict, now: float
    ) -> bool:
        """Anchor, ignore (an old head of the same chain) or flag; False if events are missing."""
        seq, digest = int(body.get("seq", 0)), str(body.get("hash", ""))
        row = self._x(
            "SELECT seq, hash FROM heads WHERE site=? AND batch=?", (site, batch)
        ).fetchone()
        a_seq, a_hash = (0, GENESIS) if row is None else (int(row[0]), str(row[1]))
        where = f"the site's journal no longer extends its anchored head at event {a_seq}"
        if seq <= a_seq:
            stored = GENESIS if seq == 0 else self._event_hash(site, batch, seq)
            if stored is None:
                return False
            if stored != digest:
                self._flag(site, batch, seq, f"{where}: its head at event {seq} differs", now)
            return True  # the same chain seen earlier (a resend): nothing new to anchor
        chain = self._x(
            "SELECT seq, prev_hash, hash FROM events WHERE site=? AND batch=? "
            "AND seq BETWEEN ? AND ? ORDER BY seq",
            (site, batch, max(a_seq, 1), seq),
        ).fetchall()
        expected = seq - max(a_seq, 1) + 1
        if len(chain) < expected:
            return False  # not every event between the heads is stored yet
        prev = GENESIS
        for e_seq, e_prev, e_hash in chain:
            if e_seq == a_seq:
                if e_hash != a_hash:
                    self._flag(site, batch, a_seq, f"{where}: the anchored event changed", now)
                    return True
            elif e_prev != prev:
                why = f"{where}: event {e_seq} does not link to the one before"
                self._flag(site, batch, e_seq, why, now)
                return True
            prev = e_hash
        if prev != digest:
            why = f"{where}: its new head at event {seq} is not the event stored"
            self._flag(site, batch, seq, why, now)
            return True
        self._x(
            "INSERT INTO heads (site, batch, seq, hash, signature, received_at, key_id, verified) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (site, batch) DO UPDATE SET "
            "seq=excluded.seq, hash=excluded.hash, signature=excluded.signature, "
            "received_at=excluded.received_at, key_id=excluded.key_id, verified=excluded.verified",
            (
                site,
                batch,
                seq,
                digest,
                body.get("signature"),
                now,
                body.get("key_id"),
                1 if verdict.verified_key else 0,
            ),
        )
        return True

    def _event_hash(self, site: str, batch: str, seq: int) -> str | None:
        row = self._x(
            "SELECT hash FROM events WHERE site=? AND batch=? AND seq=?", (site, batch, seq)
        ).fetchone()
        return None if row is None else str(row[0])
