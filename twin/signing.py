"""Per-site Ed25519 signatures over the journal's chain head, and their verification.

A hash chain shows that no event was edited, removed, inserted or moved, but
anyone who can write the file can recompute the whole chain. So each site holds
an Ed25519 key (kept outside the journal); at checkpoints the journal appends a
``checkpoint`` event whose signature covers the head before it. A rewrite then
needs the site's private key; and a head anchored elsewhere (sent to the control
site as it was signed) exposes a rewrite even by someone holding that key.
What this does and does not protect against: docs/journal.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from twin.errors import JournalError
from twin.journal import CHECKPOINT, Event, read_events

__all__ = [
    "ENV_KEY",
    "Anchor",
    "SignatureCheck",
    "SiteKey",
    "anchors_of",
    "check_journal_signatures",
    "check_signatures",
    "default_key_dir",
    "generate_site_key",
    "head_message",
    "key_id",
    "load_public_key",
    "load_site_key",
    "parse_anchors",
    "read_anchors",
    "site_key_from_env",
]

ENV_KEY = "POC_TWIN_SITE_KEY"
_HEX64 = re.compile(r"[0-9a-f]{64}")
ALGORITHM = "ed25519"
_DOMAIN = b"poc-twin journal head v1\n"


def head_message(seq: int, head: str) -> bytes:
    """What is signed: a domain tag, the sequence number and the hash of that event."""
    return _DOMAIN + f"{seq}:{head}".encode("ascii")


def key_id(public: Ed25519PublicKey) -> str:
    """Short fingerprint of a public key (first 16 hex of SHA-256 of its raw bytes)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SiteKey:
    """A site's private key: signs chain heads as checkpoint events."""

    site: str
    private: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.private.public_key())

    @property
    def source(self) -> str:
        return f"site:{self.site}"

    def checkpoint(self, seq: int, head: str) -> dict[str, Any]:
        """Data of the checkpoint event that signs event ``seq`` (hash ``head``)."""
        signature = self.private.sign(head_message(seq, head)).hex()
        return {
            "signed_seq": seq,
            "head": head,
            "site": self.site,
            "key_id": self.key_id,
            "alg": ALGORITHM,
            "signature": signature,
        }


def default_key_dir() -> Path:
    """Where `poc-twin site keygen` puts keys unless told: outside any journal or repo."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "poc-twin" / "keys"


def generate_site_key(site: str, directory: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<site>.key`` (private, mode 0600) and ``<site>.pub`` (PEM) into ``directory``."""
    if not site or any(c in site for c in "/\\ \t\n"):
        raise JournalError(f"site name {site!r} must be one word without slashes")
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{site}.key", directory / f"{site}.pub"
    if private_path.exists() and not overwrite:
        raise JournalError(f"{private_path} exists; a site keeps its key (use --force to replace)")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def load_site_key(path: Path | str) -> SiteKey:
    """A site key file; the site's name is the file's stem (``lyon-huc.key`` -> ``lyon-huc``)."""
    path = Path(path)
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise JournalError(f"{path}: not a readable site key ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise JournalError(f"{path}: not an Ed25519 private key")
    return SiteKey(path.stem, private)


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """A site's public key (PEM, as written by `poc-twin site keygen`)."""
    path = Path(path)
    try:
        public = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise JournalError(f"{path}: not a readable public key ({exc})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise JournalError(f"{path}: not an Ed25519 public key")
    return public


def site_key_from_env() -> SiteKey | None:
    """The key named by ``POC_TWIN_SITE_KEY`` (how a site configures signing), or None."""
    value = os.environ.get(ENV_KEY)
    return load_site_key(value) if value else None


@dataclass(frozen=True)
class Anchor:
    """A chain head held outside the site (e.g. by the control site): event seq had this hash."""

    seq: int
    head: str
    signature: str | None = None


def anchors_of(path: Path | str) -> Iterator[dict[str, Any]]:
    """The journal's signed heads as anchor records (what telemetry sends the control site)."""
    for event in read_events(path):
        if event.kind == CHECKPOINT:
            yield {
                "seq": event.data["signed_seq"],
                "head": event.data["head"],
                "site": event.data.get("site"),
                "key_id": event.data.get("key_id"),
                "signature": event.data.get("signature"),
            }


def read_anchors(path: Path | str) -> list[Anchor]:
    """Anchor records, one JSON object per line (as printed by `poc-twin site anchor`)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise JournalError(f"{path}: cannot read anchors ({exc})") from None
    return parse_anchors(lines, str(path))


def parse_anchors(lines: Iterable[str], where: str) -> list[Anchor]:
    """Anchor records from JSON lines (a file, or the control site's answer)."""
    anchors = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            seq, head = rec["seq"], rec["head"]
            if type(seq) is not int or seq < 1 or not _HEX64.fullmatch(str(head)):
                raise ValueError("seq must be a whole number >= 1 and head 64 hex digits")
            anchors.append(Anchor(seq, head, rec.get("signature")))
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            raise JournalError(f"{where}:{n}: not an anchor record (seq, head)") from None
    return anchors


@dataclass
class SignatureCheck:
    """Outcome of checking the checkpoints (and anchors) of a journal whose chain verified."""

    ok: bool = True
    checkpoints: int = 0
    verified: int = 0
    signed_through: int = 0
    events: int = 0
    key_ids: set[str] = field(default_factory=set)
    anchors_matched: int = 0
    #: The ``batch_ended`` event's seq; None while the batch runs, or if it never ended.
    ended_at: int | None = None
    first_bad_seq: int | None = None
    reason: str = ""

    @property
    def unsigned_tail(self) -> int:
        """Events after the last signed head: protected by the chain only."""
        return self.events - self.signed_through

    def fail(self, seq: int, reason: str) -> SignatureCheck:
        if self.ok:
            self.ok, self.first_bad_seq, self.reason = False, seq, reason
        return self


def check_signatures(
    events: Iterable[Event],
    public_key: Ed25519PublicKey | None = None,
    anchors: Iterable[Anchor] = (),
) -> SignatureCheck:
    """Check each checkpoint's head and signature, and that anchored heads are in the chain.

    Call on a journal whose chain verified. Without ``public_key`` the heads are
    checked but not the signatures; with it, a journal without any checkpoint,
    or a finished batch whose end is not signed, fails.
    """
    result = SignatureCheck()
    hashes: dict[int, str] = {}
    last_kind = ""
    ended_at: int | None = None
    want_id = key_id(public_key) if public_key is not None else None
    for event in events:
        hashes[event.seq] = event.hash
        result.events = event.seq
        if event.kind == "batch_ended":
            ended_at = result.ended_at = event.seq
        last_kind = event.kind
        if event.kind != CHECKPOINT:
            continue
        result.checkpoints += 1
        data = event.data
        signed = data.get("signed_seq")
        if signed != event.seq - 1 or hashes.get(signed) != data.get("head"):
            return result.fail(event.seq, "checkpoint does not sign the head before it")
        result.key_ids.add(str(data.get("key_id")))
        if public_key is not None:
            if data.get("key_id") != want_id:
                return result.fail(
                    event.seq, f"signed with key {data.get('key_id')}, not the given key {want_id}"
                )
            try:
                public_key.verify(
                    bytes.fromhex(data["signature"]), head_message(signed, data["head"])
                )
            except (InvalidSignature, ValueError, KeyError):
                return result.fail(event.seq, "signature does not verify with the site's key")
            result.verified += 1
        result.signed_through = event.seq
    for anchor in anchors:
        if anchor.seq not in hashes:
            return result.fail(
                anchor.seq,
                f"a head for event {anchor.seq} was anchored but the journal ends at "
                f"{result.events} (truncated)",
            )
        if hashes[anchor.seq] != anchor.head:
            return result.fail(anchor.seq, "differs from the head anchored elsewhere (rewritten)")
        result.anchors_matched += 1
    if public_key is not None:
        if result.checkpoints == 0:
            return result.fail(1, "no signed checkpoint in the journal (signatures removed?)")
        if ended_at is not None and last_kind != CHECKPOINT:
            return result.fail(ended_at, "the batch ended but its final head is not signed")
    return result


def check_journal_signatures(
    path: Path | str, public_key: Ed25519PublicKey | None = None, anchors: Iterable[Anchor] = ()
) -> SignatureCheck:
    """:func:`check_signatures` over a journal file."""
    return check_signatures(read_events(path), public_key, anchors)
