"""Electronic signatures in the journal, bound to the act they sign (21 CFR 11.50, 11.70).

A signed act is two events: the act itself (a ``command``, an
``identity_confirmation``, a ``lot_scan``, an ``alarm_ack``, a ``qc_result``, a
``record_signature``), then a ``signature`` event that names the signer (id and printed
name), the meaning (performed, verified, reviewed, approved), the UTC time and the
sequence number and hash of the act's event. The act's hash covers its content and its place in the
chain, and the signature event is itself in the chain: a signature cannot be moved
to another act or another record, and a copied one signs an act twice.
:func:`check_signatures` is what ``poc-twin verify`` runs over them.

A refused signature (wrong password, locked account, a role that may not) is a
``access_refused`` event: who tried which act, and why (never the password).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from twin.access.users import AccessRefused, Signer
from twin.journal import Event, Journal

__all__ = [
    "ACCESS_REFUSED",
    "SIGNATURE",
    "SIGNED_KINDS",
    "SIMULATED_PERSON",
    "SignatureCheck",
    "check_signatures",
    "journal_refusal",
    "sign_event",
    "signer_of",
]

SIGNATURE = "signature"
ACCESS_REFUSED = "access_refused"
#: The act events a person signs, and where each names the person.
SIGNED_KINDS = {
    "command": "operator",
    "identity_confirmation": "operator",
    "lot_scan": "operator",  # a material container scanned for an addition
    "alarm_ack": "user",
    "qc_result": "operator",
    "record_signature": "user",
    "deviation": "operator",  # an interrupted batch brought back (resume)
    "batch_started": "operator",  # signed only on a development bench (run-development)
}
#: The name prefix of the twin's simulated people (``twin:bedside``): never a site user (user
#: ids have no ':'), refused from a batch's command socket, and so never signing.
SIMULATED_PERSON = "twin:"
#: Set in the ``batch_started`` event when the site's users sign every act.
REQUIRED_FLAG = "signatures_required"


def sign_event(journal: Journal, event: Event, signer: Signer) -> Event:
    """Journal ``signer``'s signature of ``event`` (committed before anything follows)."""
    return journal.append(
        SIGNATURE,
        f"user:{signer.user}",
        {
            "user": signer.user,
            "name": signer.name,
            "meaning": signer.meaning,
            "act": signer.act,
            "utc": signer.utc,
            "signed_seq": event.seq,
            "signed_hash": event.hash,
        },
        durable=True,
    )


def journal_refusal(journal: Journal, refused: AccessRefused) -> Event:
    """Journal a refused signature or act: who, which act, why."""
    return journal.append(
        ACCESS_REFUSED,
        f"user:{refused.user}"[:120],
        {"user": refused.user[:100], "act": refused.act, "reason": refused.reason},
        durable=True,
    )


def signer_of(event: Event) -> str | None:
    """The person an act event names (None for the engine's own acts)."""
    name_field = SIGNED_KINDS.get(event.kind)
    if name_field is None:
        return None
    who = str(event.data.get(name_field, ""))
    if not who:
        return None
    if event.kind == "command" and (who == "engine" or who.startswith("alarm:")):
        return None  # the engine's, an alarm's
    if event.kind in ("command", "alarm_ack") and event.data.get("via"):
        return None  # Ctrl-C at the console, the control site's (its user signed there)
    if who.startswith(SIMULATED_PERSON):
        return None  # the twin's simulated person at the bag: no one to sign
    return who


@dataclass
class SignatureCheck:
    """What :func:`check_signatures` found."""

    signatures: int = 0
    required: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_signatures(events: Iterable[Event]) -> SignatureCheck:
    """Every signature bound to the act it names, no act signed twice, and, where the
    batch required signatures, every person's act signed."""
    check = SignatureCheck()
    acts: dict[int, Event] = {}
    signed: dict[int, int] = {}
    unsigned: list[Event] = []
    for event in events:
        if event.kind == "batch_started" and event.data.get(REQUIRED_FLAG):
            check.required = True
        if event.kind == SIGNATURE:
            check.signatures += 1
            _check_one(event, acts, signed, check.problems)
        elif signer_of(event) is not None:
            acts[event.seq] = event
            if event.kind != "batch_started" or _development(event):
                unsigned.append(event)
    if check.required:
        for act in unsigned:
            if act.seq not in signed:
                check.problems.append(
                    f"event {act.seq} ({act.kind} by '{signer_of(act)}') has no e-signature"
                )
    return check


def _development(started: Event) -> bool:
    """A batch on a development bench: its start is an engineer's signed act."""
    bench = started.data.get("bench")
    return isinstance(bench, dict) and bench.get("development") is True


def _check_one(
    sig: Event, acts: dict[int, Event], signed: dict[int, int], problems: list[str]
) -> None:
    d = sig.data
    seq, digest, user = d.get("signed_seq"), d.get("signed_hash"), d.get("user")
    act = acts.get(seq) if isinstance(seq, int) else None
    if act is None or act.hash != digest:
        problems.append(f"signature event {sig.seq} does not sign the event it names ({seq})")
    elif signer_of(act) != user:
        problems.append(
            f"signature event {sig.seq} is by '{user}' but event {seq} names '{signer_of(act)}'"
        )
    elif seq in signed:
        problems.append(
            f"signature event {sig.seq} signs event {seq} again (first signed by event "
            f"{signed[seq]}): a replayed signature"
        )
    else:
        signed[seq] = sig.seq
