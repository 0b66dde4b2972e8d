"""Material lots scanned at the bedside: an addition waits until the operator scans its container.

An ``add`` phase with ``scan_lot: true`` asks for a scan before it doses; the scan
(the container's GS1 label, or lot and expiry keyed in) is checked against what
the batch expects: the material the phase adds, the lot the recipe or the run
fixed (if any), and the expiry date against the batch's date. A scan that passes
becomes the lot journalled with the dose; one that fails is journalled with why,
and the phase goes on waiting for the right container, as a real line-clearance
scan does. Every scan is a signed act of the operator who made it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import biip
from biip import ParseError
from biip.gs1_messages import GS1Message

from twin.access.esign import sign_event
from twin.access.users import Signer
from twin.equipment import Material
from twin.journal import Event, Journal

__all__ = [
    "MATERIALS",
    "LotDesk",
    "LotScan",
    "NoScanWanted",
    "expiry_date",
    "parse_gs1",
    "scan_from",
]

#: The materials an addition port delivers, by the names recipes and scans use.
MATERIALS: tuple[str, ...] = tuple(m.name.lower() for m in Material)

#: GS1 application identifiers a material label carries: GTIN, expiry date, batch/lot.
AI_GTIN, AI_EXPIRY, AI_LOT = "01", "17", "10"


class NoScanWanted(ValueError):
    """A lot was scanned while no addition waits for one."""


@dataclass(frozen=True)
class LotScan:
    """What the operator scanned from a material's container."""

    material: str
    lot: str
    expiry: date | None = None
    gtin: str | None = None

    def record(self) -> dict[str, Any]:
        return {
            "material": self.material,
            "lot": self.lot,
            "expiry": self.expiry.isoformat() if self.expiry is not None else None,
            "gtin": self.gtin,
        }


def parse_gs1(code: str) -> tuple[str, date | None, str | None]:
    """(lot, expiry, GTIN) from a GS1 label: bracketed ``(01)...(17)YYMMDD(10)LOT`` as printed
    under the barcode, or the scanner's raw string (FNC1 as ASCII 29, ``]d2``/``]C1`` prefix).

    ValueError says what is wrong: not GS1, an AI given twice (which lot, which expiry?),
    no lot (AI 10), a bad GTIN check digit. A label without an expiry (AI 17) parses (its
    expiry None): the batch refuses and journals that scan, as it does an expired one. An
    expiry's day 00 is the month's last day (GS1).
    """
    text = code.strip()
    if not text:
        raise ValueError("not a GS1 label: nothing was scanned")
    if text.startswith("("):
        try:
            message = GS1Message.parse_hri(text)
        except ParseError as exc:
            raise ValueError(f"not a GS1 label: {exc}") from None
    else:  # as a scanner sends it: biip reads the symbology prefix and FNC1 separators
        parsed = biip.parse(text)
        if parsed.gs1_message is None:
            raise ValueError(f"not a GS1 label: {parsed.gs1_message_error}")
        message = parsed.gs1_message
    found: dict[str, Any] = {}
    for element in message.element_strings:
        ai = element.ai.ai
        if ai in found:  # two lots or two expiries: never guess which one is meant
            raise ValueError(
                f"the label gives application identifier ({ai}) twice: not a well-formed "
                "GS1 label; scan the container's own label"
            )
        found[ai] = element
    if AI_LOT not in found:
        raise ValueError("the label has no lot (GS1 application identifier 10)")
    gtin = found.get(AI_GTIN)
    if gtin is not None and gtin.gtin_error:
        raise ValueError(f"the label's GTIN is not valid: {gtin.gtin_error}")
    expiry = found.get(AI_EXPIRY)
    return (
        found[AI_LOT].value,
        expiry.date if expiry is not None else None,
        gtin.value if gtin is not None else None,
    )


def expiry_date(text: str) -> date:
    """An expiry keyed in as YYYY-MM-DD (only that: not 20301231, nor a week date such as
    2030-W01-1, which reads as 2029-12-31); ValueError otherwise."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text, re.ASCII):
        raise ValueError(f"expiry {text[:40]!r} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expiry {text!r} is not a date (YYYY-MM-DD)") from None  # 2030-02-30


def scan_from(material: str, gs1: str | None, lot: str | None, expiry: str | None) -> LotScan:
    """A scan from a container's GS1 label, or from its lot and expiry (YYYY-MM-DD) keyed in:
    ValueError says what is wrong, before anything reaches the batch (a lot keyed in without
    its expiry too: every label prints one)."""
    if material not in MATERIALS:
        raise ValueError(f"material '{material}': one of {', '.join(MATERIALS)}")
    gs1, lot, expiry = (v.strip() if v and v.strip() else None for v in (gs1, lot, expiry))
    if (gs1 is None) == (lot is None):
        raise ValueError("give the label's GS1 code, or the lot and expiry keyed in")
    if gs1 is not None:
        if expiry is not None:
            raise ValueError("the expiry comes from the GS1 label; key it in only with a lot")
        found_lot, when, gtin = parse_gs1(gs1)
        return LotScan(material, found_lot, when, gtin)
    assert lot is not None
    if len(lot) > 64 or not lot.isprintable():
        raise ValueError("a lot is 1-64 printable characters")
    if expiry is None:
        raise ValueError(
            f"lot {lot} keyed in without its expiry: key in the expiry date the label "
            "prints too (YYYY-MM-DD)"
        )
    return LotScan(material, lot, expiry_date(expiry))


@dataclass(frozen=True)
class _Wanted:
    material: str
    expected_lot: str | None
    future: asyncio.Future[LotScan]


class LotDesk:
    """Where an addition waits for its container's scan, and where scans arrive."""

    def __init__(
        self,
        journal: Journal,
        today: Callable[[], date],
        on_waiting: Callable[[bool], None],
    ) -> None:
        self.journal = journal
        self._today = today
        self._on_waiting = on_waiting
        self._wanted: _Wanted | None = None
        #: A scan without an expiry is refused (batches recorded before 2026-12-07 took it:
        #: their replay and resume judge it as they did, from ``batch_started``).
        self.expiry_required = True

    @property
    def waiting_for(self) -> str | None:
        """The material an addition is waiting to see scanned, if any (none once a scan of
        it passed, though the addition has not yet taken it)."""
        wanted = self._wanted
        return wanted.material if wanted is not None and not wanted.future.done() else None

    @property
    def just_accepted(self) -> LotScan | None:
        """A scan that passed and that its addition has not yet taken (the same loop turn)."""
        wanted = self._wanted
        if wanted is None or not wanted.future.done() or wanted.future.cancelled():
            return None
        return wanted.future.result()

    async def wait(self, material: str, expected_lot: str | None) -> LotScan:
        """Ask for a scan of ``material`` and wait (a person's act) until one passes."""
        self.journal.append(
            "lot_requested", "batch", {"material": material, "expected_lot": expected_lot}
        )
        future: asyncio.Future[LotScan] = asyncio.get_running_loop().create_future()
        self._wanted = _Wanted(material, expected_lot, future)
        self._on_waiting(True)
        try:
            return await future
        finally:
            self._wanted = None
            self._on_waiting(False)

    def present(
        self, scan: LotScan, *, who: str, why: str, signer: Signer | None = None
    ) -> tuple[Event, str | None]:
        """Check and journal a scan; (its event, why it was refused or None if it passed).

        NoScanWanted when no addition waits (nothing is journalled then)."""
        wanted = self._wanted
        if wanted is None or wanted.future.done():
            raise NoScanWanted("no addition is waiting for a lot scan")
        refused = self._check(scan, wanted)
        data = {
            **scan.record(),
            "operator": who,
            "reason": why,
            "accepted": refused is None,
            "refused": refused,
            "meaning": "material lot verified" if refused is None else "lot scan refused",
        }
        with self.journal.together():  # the scan and its signature: one commit
            event = self.journal.append("lot_scan", "batch", data)
            if signer is not None:
                sign_event(self.journal, event, signer)
        if refused is None:
            wanted.future.set_result(scan)
            self._on_waiting(False)  # no person awaited from now: the addition goes on
        return event, refused

    def _check(self, scan: LotScan, wanted: _Wanted) -> str | None:
        if scan.material != wanted.material:
            return f"scanned {scan.material}, the addition waits for {wanted.material}"
        if wanted.expected_lot is not None and scan.lot != wanted.expected_lot:
            return f"lot {scan.lot} scanned, the batch is to use lot {wanted.expected_lot}"
        today = self._today()
        if scan.expiry is None and self.expiry_required:  # whatever client sent it
            return (
                f"lot {scan.lot} scanned without an expiry date (batch date {today}): scan "
                "the label's GS1 code with its expiry (AI 17), or key in lot and expiry"
            )
        if scan.expiry is not None and scan.expiry < today:
            return f"lot {scan.lot} expired on {scan.expiry.isoformat()} (batch date {today})"
        return None
