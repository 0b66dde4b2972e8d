"""The sites' registered public keys, and the signature check on every chain head received.

A site signs its journal's chain head with its Ed25519 key (twin.signing); the
control site holds each site's *public* key, given to it out of band (QA hands
over ``<site>.pub`` from ``poc-twin site keygen``). A head is then evidence the
site itself vouched for, not something the broker or the control site's own
database could have made up. The MQTT topic names the site (the broker checked
its credentials); the key registered under that name is the only one accepted.

Keys are files named ``<site>.pub`` (PEM), in one or more directories or given
one by one. The registry re-reads them when a file changes, at most every few
seconds, so a new site or a rotated key (``site keygen --force``) needs no restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from twin.clock import wall_monotonic
from twin.errors import JournalError
from twin.signing import head_message, key_id, load_public_key
from twin.telemetry.topics import TelemetryError

__all__ = ["HeadVerdict", "SiteKeys"]

#: Longest time a changed key file goes unnoticed (seconds).
RESCAN_S = 5.0


@dataclass(frozen=True)
class HeadVerdict:
    """What the signature of one head says: verified by key, unsigned, or bad (and why)."""

    verified_key: str | None = None
    bad: str | None = None
    unsigned: bool = False
    registered: bool = False


class SiteKeys:
    """Public keys by site name, from ``<site>.pub`` files or directories of them."""

    def __init__(self, paths: Iterable[Path | str] = ()) -> None:
        self.paths = [Path(p) for p in paths]
        for path in self.paths:
            if not path.exists():
                raise TelemetryError(f"site keys: {path} does not exist")
        self._keys: dict[str, tuple[Ed25519PublicKey, str]] = {}
        self._stamp: tuple[tuple[str, float], ...] = ()
        self._checked = float("-inf")
        self._refresh(force=True)

    def _files(self) -> list[Path]:
        files: list[Path] = []
        for path in self.paths:
            files += sorted(path.glob("*.pub")) if path.is_dir() else [path]
        return files

    def _refresh(self, force: bool = False) -> None:
        """Re-read the key files if any was added, removed or rewritten (throttled)."""
        now = wall_monotonic()
        if not force and now - self._checked < RESCAN_S:
            return
        self._checked = now
        files = self._files()
        stamp = tuple((str(f), f.stat().st_mtime) for f in files if f.exists())
        if stamp == self._stamp:
            return
        keys: dict[str, tuple[Ed25519PublicKey, str]] = {}
        for f in files:
            try:
                public = load_public_key(f)
            except JournalError as exc:
                if force:
                    raise TelemetryError(f"site keys: {exc}") from None
                continue  # a half-written file: keep the others, try again at the next scan
            keys[f.stem] = (public, key_id(public))
        self._keys, self._stamp = keys, stamp

    def __len__(self) -> int:
        return len(self._keys)

    def sites(self) -> list[str]:
        """Every site with a registered key: the fleet the control site expects to hear from."""
        self._refresh()
        return sorted(self._keys)

    def public_key(self, site: str) -> Ed25519PublicKey | None:
        """The site's registered key, to check the signatures of a record built from its events."""
        self._refresh()
        found = self._keys.get(site)
        return None if found is None else found[0]

    def key_id(self, site: str) -> str | None:
        """Fingerprint of the site's registered key, or None if it has none."""
        self._refresh()
        found = self._keys.get(site)
        return None if found is None else found[1]

    def check(self, site: str, head: dict[str, Any]) -> HeadVerdict:
        """Check a ``head`` message of ``site`` against the site's registered key."""
        self._refresh()
        found = self._keys.get(site)
        signature = head.get("signature")
        seq = int(head.get("seq", 0))
        if not signature:
            return HeadVerdict(unsigned=True, registered=found is not None)
        if found is None:
            return HeadVerdict()  # signed, but nobody gave us this site's key: not verified
        public, want = found
        got = head.get("key_id")
        if got != want:
            return HeadVerdict(
                bad=f"bad signature: head at event {seq} is signed with key {got}, "
                f"not the site's registered key {want}",
                registered=True,
            )
        try:
            public.verify(bytes.fromhex(str(signature)), head_message(seq, str(head.get("hash"))))
        except (InvalidSignature, ValueError):
            return HeadVerdict(
                bad=f"bad signature: head at event {seq} does not verify with the site's "
                f"registered key {want}",
                registered=True,
            )
        return HeadVerdict(verified_key=want, registered=True)
