"""The signed acts an operator station performs for its signed-in user.

Each act carries the user's password again (21 CFR 11.200(a)(1)(i): every
signing after the first in a session needs at least the password). A running
batch gets the act over its command socket and checks id, password and role
itself, exactly as for ``poc-twin command``; for an ended batch the station
signs here and appends to the journal, exactly as ``ack``, ``qc`` and
``review`` do. Nothing here signs for anyone: there is no act without the
person's password, and a refusal is journalled like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.access.entries import (
    EntryRefused,
    alarm_to_acknowledge,
    batch_running,
    ended_batch,
    journal_refusal_in,
    record_to_sign,
    write_alarm_ack,
    write_record_signature,
)
from twin.access.roles import Act, Role
from twin.access.users import AccessRefused, Signer, UserStore, UserStoreError
from twin.engine.inbox import NoRunningBatch, address_held, send_command
from twin.engine.lots import scan_from
from twin.errors import InvalidInput, PocTwinError
from twin.names import UnsafeName, check_safe_name
from twin.words import UnfitText, check_reason, check_scanned_id

__all__ = ["Outcome", "Station"]


@dataclass(frozen=True)
class Outcome:
    """What became of an act: shown to the person who asked, once."""

    ok: bool
    message: str


async def _unserved(journal: Path, what: str) -> Outcome:
    """No process serves the batch's commands: why, from its journal, as ``poc-twin command``
    says it (it has ended, its process died, it has not begun), never naming the server's
    files."""
    from twin.cli.recorded import read_recorded

    name = f"batch {journal.stem}"
    try:
        recorded = await asyncio.to_thread(read_recorded, journal)
    except PocTwinError:
        return Outcome(False, f"{what}: no process serves {name} and its journal is unreadable")
    name = f"batch {recorded.batch_id or journal.stem}"
    if recorded.ended:
        why = f"{name} has ended {recorded.state}: no command can change it"
    elif recorded.batch_id is None or recorded.state == "Idle":
        why = (
            f"{name} has not begun: its process is still starting (try again in a moment) "
            "or died before the batch began"
        )
    elif address_held(journal):  # claimed, not yet listening: a resume re-runs the record
        why = (
            f"another process holds {name} (last recorded state {recorded.state}) and does "
            "not take commands yet: it is being resumed or started; try again in a moment"
        )
    else:
        why = (
            f"no process is running {name}, which has not ended (last recorded state "
            f"{recorded.state}): its process died; a supervisor brings it back (poc-twin resume)"
        )
    return Outcome(False, f"{what}: {why}")


def _reply(what: str, reply: dict[str, Any]) -> Outcome:
    if reply.get("status") == "accepted":
        return Outcome(True, f"{what}: accepted — batch is now {reply.get('state')}")
    return Outcome(False, f"{what}: {reply.get('status')} — {reply.get('message')}")


class Station:
    """The site's users file (and site key) the station signs entries with."""

    def __init__(self, users: Path, site_key: Any = None) -> None:
        self.users = users
        self.site_key = site_key

    # -- signing -----------------------------------------------------------------------

    def _sign(self, journal: Path | None, user: str, password: str, act: Act) -> Signer:
        """``user``'s signature for ``act``; AccessRefused is journalled in ``journal``."""
        store = UserStore.open(self.users)
        try:
            return store.sign(user, password, act)
        except AccessRefused as exc:
            if journal is not None:
                journal_refusal_in(journal, exc)
            raise
        finally:
            store.close()

    async def in_good_standing(self, user: str) -> bool:
        """Whether ``user`` may still act here: known, not disabled, not locked. A signed-in
        session of a user locked or disabled since ends at its next request."""

        def check() -> bool:
            store = UserStore.open(self.users)
            try:
                known = store.get(user)
            finally:
                store.close()
            return known is not None and not known.disabled and not known.locked

        try:
            return await asyncio.to_thread(check)
        except (UserStoreError, PocTwinError):
            return False  # no users file to check against: nobody acts

    async def sign_in(self, user: str, password: str) -> tuple[Signer, frozenset[Role]]:
        """Check id and password (lockout counts here too); the user's printed name and roles.

        An id that is no user id at all (control characters, a NUL, thousands of characters)
        is refused before the users file is opened: not audited (anyone can reach the form)
        and not shown back on the page."""
        try:
            check_safe_name(user, "user id")
        except UnsafeName:
            raise PocTwinError(
                "that is not a user id (letters, digits and . _ - only); nothing was checked"
            ) from None

        def check() -> tuple[Signer, frozenset[Role]]:
            store = UserStore.open(self.users)
            try:
                signer = store.sign_in(user, password)
                known = store.get(user)
                return signer, known.roles if known is not None else frozenset()
            finally:
                store.close()

        return await asyncio.to_thread(check)  # scrypt must not stall the page of anyone else

    # -- acts on a running batch ---------------------------------------------------------

    @staticmethod
    async def command(
        journal: Path, user: str, password: str, action: str, reason: str, level: str
    ) -> Outcome:
        """An ISA-88 command, signed, through the batch's own socket."""
        try:
            reply = await send_command(
                journal, action, operator=user, password=password, reason=reason, level=level
            )
        except NoRunningBatch:
            return await _unserved(journal, action)
        return _reply(action, reply)

    @staticmethod
    async def confirm_identity(
        journal: Path, user: str, password: str, patient: str, bag: str, reason: str
    ) -> Outcome:
        """The scanned patient and bag ids, signed; the batch compares them to its own."""
        try:
            reply = await send_command(
                journal,
                "confirm-identity",
                operator=user,
                password=password,
                reason=reason,
                extra={"patient_id": patient, "bag_id": bag},
            )
        except NoRunningBatch:
            return await _unserved(journal, "identity scan")
        if reply.get("status") == "accepted":
            return Outcome(True, "identity scan matches this batch's patient and bag")
        return _reply("identity scan", reply)

    @staticmethod
    async def scan_lot(
        journal: Path, user: str, password: str, form: dict[str, str], reason: str
    ) -> Outcome:
        """A material container's label (or lot and expiry keyed in), signed; the addition
        waiting for it checks material, lot and expiry."""
        try:
            scan = scan_from(
                form.get("material", ""), form.get("gs1"), form.get("lot"), form.get("expiry")
            )
        except ValueError as exc:
            return Outcome(False, f"material scan: {exc}; nothing was signed")
        try:
            reply = await send_command(
                journal,
                "scan-lot",
                operator=user,
                password=password,
                reason=reason,
                extra=scan.record(),
            )
        except NoRunningBatch:
            return await _unserved(journal, "material scan")
        if reply.get("status") == "accepted":
            return Outcome(True, f"lot {scan.lot} of {scan.material} verified; the batch doses it")
        return _reply("material scan", reply)

    # -- acts on either --------------------------------------------------------------------

    async def acknowledge(
        self, journal: Path, user: str, password: str, alarm: int, comment: str
    ) -> Outcome:
        """Acknowledge an alarm: through the running batch, or into the ended batch's journal."""
        if await batch_running(journal):
            try:
                reply = await send_command(
                    journal,
                    "acknowledge",
                    operator=user,
                    password=password,
                    reason=comment,
                    extra={"alarm": alarm},
                )
            except NoRunningBatch:
                pass  # it ended meanwhile: acknowledged into its journal below
            else:
                return _reply(f"alarm {alarm} acknowledgement", reply)

        def ended() -> Outcome:
            check_reason(comment, "comment")  # before anyone signs, as the batch checks it
            raised, act = alarm_to_acknowledge(journal, alarm)
            person = self._sign(journal, user, password, act)
            write_alarm_ack(journal, raised, person, comment)
            return Outcome(True, f"alarm {alarm} acknowledged by {person.name}")

        return await self._entry(ended)

    # -- acts on an ended batch ------------------------------------------------------------

    async def enter_qc(
        self, journal: Path, user: str, password: str, results: list[str], lab_ref: str, reason: str
    ) -> Outcome:
        """QC lab results (``cd3=92.5`` lines), signed by QA, into the ended batch's journal."""
        from twin.report.qc import parse_results, record_qc_results

        def enter() -> Outcome:
            check_reason(reason)
            if lab_ref:
                check_scanned_id(lab_ref, "lab ref")
            entries = parse_results(results)
            ended_batch(journal, "enter QC results")
            person = self._sign(journal, user, password, Act.QC_RESULT)
            written = record_qc_results(
                journal,
                entries,
                person=person,
                reason=reason,
                lab_ref=lab_ref,
                signer=self.site_key,
            )
            verdicts = ", ".join(
                f"{d['name']} {d['value']:g} {d['unit']} {d['verdict']}" for d in written
            )
            return Outcome(True, f"QC results entered by {person.name}: {verdicts}")

        return await self._entry(enter)

    async def sign_record(
        self, journal: Path, user: str, password: str, comment: str, *, approve: bool
    ) -> Outcome:
        """QA's signed review, or approval, of the ended batch's record."""

        def sign() -> Outcome:
            check_reason(comment, "comment")
            intact = record_to_sign(journal)
            person = self._sign(journal, user, password, Act.APPROVE if approve else Act.REVIEW)
            write_record_signature(journal, intact, person, comment)
            return Outcome(True, f"record {person.meaning} by {person.name} ({person.user})")

        return await self._entry(sign)

    @staticmethod
    async def _entry(work: Callable[[], Outcome]) -> Outcome:
        """Run a signed entry in a thread (scrypt, SQLite); every refusal as an Outcome."""
        try:
            result: Outcome = await asyncio.to_thread(work)
        except InvalidInput as exc:
            return Outcome(False, "; ".join(str(p.message) for p in exc.problems))
        except UnfitText as exc:  # nothing signed or written
            return Outcome(False, str(exc))
        except (AccessRefused, EntryRefused, UserStoreError, PocTwinError) as exc:
            return Outcome(False, str(exc))
        return result
