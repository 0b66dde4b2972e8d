"""Operator commands from another terminal: a running batch listens on a local socket.

The socket is a Linux abstract Unix socket named after the journal's absolute
path: no file to clean up, gone the moment the batch process ends, and only
reachable from this machine. One JSON line in (command, operator, password,
reason), one JSON line out (accepted with the new state, or refused: with the
valid commands, or why the signature was refused).

Every command is an electronically signed act: the operator's id and password
are checked against the site's users and the role table (:mod:`twin.access`)
before anything happens; the command's event is then followed by its signature
event, and a refusal is journalled (who, which act, why; never the password).
Event-driven: a command reaches the engine at once, and nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
from pathlib import Path
from typing import Any, Protocol

from twin.access.esign import SIMULATED_PERSON, journal_refusal
from twin.access.roles import Act
from twin.access.users import (
    BATCH_BUSY_TIMEOUT_S,
    AccessRefused,
    Signer,
    UserStore,
    UserStoreError,
)
from twin.engine.alarms import is_critical
from twin.engine.lots import MATERIALS, LotScan, NoScanWanted, expiry_date
from twin.engine.states import LEVELS, Command
from twin.errors import CommandRefused, PocTwinError
from twin.journal import Event, Journal
from twin.names import UnsafeName, check_safe_name
from twin.words import UnfitText, check_barcode_id, check_reason, escaped

__all__ = [
    "RELAYED_COMMANDS",
    "RELAY_ENV",
    "BatchProcessRunning",
    "CommandTarget",
    "NoRunningBatch",
    "address_held",
    "claim_command_address",
    "command_address",
    "send_command",
    "serve_commands",
]


class NoRunningBatch(PocTwinError):
    """No batch process is running for that journal."""


class BatchProcessRunning(PocTwinError):
    """Another process already runs the batch of that journal (it holds its command address)."""


class CommandTarget(Protocol):
    """What the inbox hands commands to (the Batch)."""

    journal: Journal
    alarm_events: dict[int, Event]

    async def between_scans(self) -> None: ...

    def command(
        self,
        command: str,
        *,
        who: str,
        why: str,
        level: str = "procedure",
        signer: Signer | None = None,
    ) -> Event: ...

    def present_identity(
        self, patient_id: str, bag_id: str, *, who: str, why: str, signer: Signer | None = None
    ) -> bool: ...

    @property
    def identity_wanted(self) -> bool: ...

    def present_lot(
        self, scan: LotScan, *, who: str, why: str, signer: Signer | None = None
    ) -> tuple[Event, str | None]: ...

    def acknowledge(
        self,
        alarm_seq: int,
        *,
        who: str,
        comment: str,
        via: str | None = None,
        signer: Signer | None = None,
    ) -> Event: ...

    @property
    def state(self) -> Any: ...

    @property
    def status(self) -> str: ...


def command_address(journal_path: Path | str) -> str:
    """The abstract socket name of the batch writing ``journal_path``."""
    digest = hashlib.sha256(str(Path(journal_path).resolve()).encode()).hexdigest()[:40]
    return f"\0poc-twin-{digest}"


def address_held(journal_path: Path | str) -> bool:
    """Whether a process holds ``journal_path``'s command address, listening or not (a
    resume re-running the record, a run starting: claimed, no commands taken yet).

    Read from /proc/net/unix, never by binding the name: a probe that bound it, however
    briefly, could make the resume or run claiming it then fail. False where it cannot be
    read (no command then says more than that no process answers)."""
    name = "@" + command_address(journal_path)[1:]
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as table:
            return any(line.split()[-1:] == [name] for line in table)
    except OSError:
        return False


def claim_command_address(journal_path: Path | str) -> socket.socket:
    """Bind the command address of ``journal_path``'s batch, or BatchProcessRunning.

    Only one process may write a batch's journal, and the one that does holds this
    address for its whole life (the kernel lets it go the moment the process ends, even
    on kill -9). A process that would write an existing journal (``resume``) claims it
    before it reads a password or writes a byte, and hands the socket to
    :func:`serve_commands` once the batch takes commands.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(command_address(journal_path))
    except OSError as exc:
        sock.close()
        raise BatchProcessRunning(
            f"another batch process already writes {journal_path} ({exc.strerror})"
        ) from None
    sock.setblocking(False)
    return sock


def _act(command: str, request: dict[str, Any], target: CommandTarget) -> Act:
    """The act a request asks to sign for; ValueError for what is not one."""
    if command == "acknowledge":
        alarm = target.alarm_events.get(_alarm_seq(request))
        if alarm is None:
            raise ValueError(f"event {request.get('alarm')} is not an alarm of this batch")
        return Act.ACKNOWLEDGE_CRITICAL if is_critical(alarm) else Act.ACKNOWLEDGE
    if command in _COMMAND_ACTS:
        return Act(command)
    raise ValueError(f"unknown command '{command}'")


def _level_of(command: str, request: dict[str, Any]) -> str:
    """The level a request names; ValueError for one that does not exist, or for a pause or
    resume below the procedure (they act on the whole procedure)."""
    level = request.get("level", "procedure")
    if level not in LEVELS:
        raise ValueError(f"unknown level {str(level)[:40]!r}; levels: {', '.join(LEVELS)}")
    if command in ("pause", "resume") and level != "procedure":
        raise ValueError(f"{command} acts on the whole procedure, not a {level}")
    return str(level)


def _alarm_seq(request: dict[str, Any]) -> int:
    seq = request.get("alarm")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else -1


_COMMAND_ACTS = {a.value for a in Act if a.value in {c.value for c in Command}} | {
    Act.CONFIRM_IDENTITY.value,
    Act.SCAN_LOT.value,
}


RELAY_ENV = "POC_TWIN_RELAY_TOKEN"
"""The run process's secret for its telemetry forwarder (environment of that child only)."""
RELAYED = "control-site:"


#: What the control site may ask of a batch (its user signed there with their password).
RELAYED_COMMANDS = frozenset({"hold", "acknowledge"})


def _relayed(request: dict[str, Any], relay_token: str | None) -> bool:
    """A hold or an alarm acknowledgement the control site requested (its user signed there),
    relayed by this batch's own forwarder: the only acts not signed by a site user."""
    token = request.get("relay_token")
    return (
        relay_token is not None
        and isinstance(token, str)
        and hmac.compare_digest(token.encode(), relay_token.encode())
        and request.get("command") in RELAYED_COMMANDS
        and str(request.get("operator", "")).startswith(RELAYED)
    )


def _answer(
    target: CommandTarget,
    request: dict[str, Any],
    users: UserStore | None,
    relay_token: str | None = None,
) -> dict[str, Any]:
    if not isinstance(request, dict):
        return {"status": "invalid", "message": "need command, operator, password and reason"}
    command, operator = request.get("command"), request.get("operator")
    reason, password = request.get("reason"), request.get("password")
    if not all(isinstance(v, str) for v in (command, operator, reason, password)):
        return {"status": "invalid", "message": "need command, operator, password and reason"}
    if not operator.strip() or not reason.strip():
        return {"status": "invalid", "message": "operator and reason must not be empty"}
    try:
        check_reason(reason)
    except UnfitText as exc:
        return {"status": "invalid", "message": str(exc)}
    if _relayed(request, relay_token):
        try:  # the control site's user id: a safe name, as every user id (docs/access.md)
            check_safe_name(operator.removeprefix(RELAYED), "control-site user")
        except UnsafeName as exc:
            return {"status": "invalid", "message": escaped(exc, 300)}
        try:
            if command == "acknowledge":
                target.acknowledge(
                    _alarm_seq(request), who=operator, comment=reason, via="control-site"
                )
            else:
                target.command("hold", who=operator, why=reason, via="control-site")
        except CommandRefused as exc:
            return {"status": "refused", "message": str(exc), "state": exc.state}
        except ValueError as exc:  # not an alarm of this batch, or acknowledged already
            return {"status": "refused", "message": str(exc), "state": target.status}
        return {"status": "accepted", "state": target.status}
    if operator.startswith(RELAYED):
        return {"status": "invalid", "message": f"'{RELAYED}' names are the control site's"}
    if operator.startswith(SIMULATED_PERSON):
        return {"status": "invalid", "message": f"'{SIMULATED_PERSON}' names are the twin's"}
    try:  # no site user has any other id: nothing to sign, count or journal
        check_safe_name(operator, "operator")
    except UnsafeName as exc:
        return {"status": "invalid", "message": f"{exc}: a site user id"}
    try:
        act = _act(command, request, target)
        _level_of(command, request)  # before anyone signs, as the command line checks it
    except ValueError as exc:
        return {"status": "invalid", "message": str(exc)}
    if command == "confirm-identity":
        patient, bag = request.get("patient_id"), request.get("bag_id")
        if not isinstance(patient, str) or not isinstance(bag, str) or not patient or not bag:
            return {"status": "invalid", "message": "confirm-identity needs patient_id and bag_id"}
        try:
            check_barcode_id(patient, "patient id")
            check_barcode_id(bag, "bag id")
        except UnfitText as exc:
            return {"status": "invalid", "message": str(exc)}
    if command == "scan-lot":
        try:
            lot_scan_of(request)  # malformed: invalid before anyone signs
        except ValueError as exc:
            return {"status": "invalid", "message": str(exc)}
    try:
        if users is None:
            raise AccessRefused(
                operator, act.value, "this batch runs without site users (run --users FILE)"
            )
        signer = users.sign(operator, password, act)
    except AccessRefused as exc:
        journal_refusal(target.journal, exc)
        return {"status": "refused", "message": str(exc), "state": target.status}
    except UserStoreError as exc:  # the users file locked by another process: nobody refused
        return {"status": "refused", "message": str(exc), "state": target.status}
    return _perform(target, command, request, signer)


def lot_scan_of(request: dict[str, Any]) -> LotScan:
    """The scan a ``scan-lot`` request carries; ValueError says what is missing or malformed."""
    material, lot = request.get("material"), request.get("lot")
    expiry, gtin = request.get("expiry"), request.get("gtin")
    if not isinstance(material, str) or material not in MATERIALS:
        raise ValueError(f"scan-lot needs the material scanned, one of {', '.join(MATERIALS)}")
    if not isinstance(lot, str) or not 0 < len(lot) <= 64 or not lot.isprintable():
        raise ValueError("scan-lot needs a lot of 1-64 printable characters")
    if lot != lot.strip():
        raise ValueError(f"lot {lot!r} has leading or trailing spaces: give it as printed")
    if expiry is not None and not isinstance(expiry, str):
        raise ValueError("an expiry is a date, YYYY-MM-DD")
    if gtin is not None and not (isinstance(gtin, str) and gtin.isdigit() and len(gtin) == 14):
        raise ValueError("a GTIN is 14 digits")
    # No expiry is no malformed request: the batch refuses (and journals) that scan itself.
    return LotScan(material, lot, expiry_date(expiry) if expiry else None, gtin)


def _perform(
    target: CommandTarget, command: str, request: dict[str, Any], signer: Signer
) -> dict[str, Any]:
    """Do the signed act and journal its signature."""
    who, why = signer.user, str(request["reason"])
    if command == "confirm-identity":
        if not target.identity_wanted:  # as a lot scan nothing waits for: nothing journalled
            return {
                "status": "refused",
                "message": "no identity scan is asked for now: the batch asks for it at its "
                "confirm_identity phase (identity_requested), and again after a hold or pause "
                "there; scan then",
                "state": target.status,
            }
        patient, bag = str(request["patient_id"]), str(request["bag_id"])
        if target.present_identity(patient, bag, who=who, why=why, signer=signer):
            return {"status": "accepted", "state": target.status}
        return {  # recorded, signed, and the phase reacts as the recipe says (its on_failure)
            "status": "mismatch",
            "message": f"patient '{patient}' / bag '{bag}' do not match this batch's ids: the "
            "mismatch is recorded and the batch reacts as its recipe says (on_failure)",
            "state": target.status,
        }
    if command == "scan-lot":
        try:
            _, refused = target.present_lot(lot_scan_of(request), who=who, why=why, signer=signer)
        except NoScanWanted as exc:
            return {"status": "refused", "message": str(exc), "state": target.status}
        if refused is not None:
            return {"status": "refused", "message": refused, "state": target.status}
        return {"status": "accepted", "state": target.status}
    if command == "acknowledge":
        try:  # the act and its signature: one commit
            target.acknowledge(_alarm_seq(request), who=who, comment=why, signer=signer)
        except ValueError as exc:
            return {"status": "refused", "message": str(exc), "state": target.status}
        return {"status": "accepted", "state": target.status}
    try:  # the command and its signature (accepted or refused): one commit, then it acts
        level = str(request.get("level", "procedure"))
        target.command(command, who=who, why=why, level=level, signer=signer)
    except CommandRefused as exc:
        return {"status": "refused", "message": str(exc), "state": exc.state, "valid": exc.valid}
    except ValueError as exc:
        return {"status": "invalid", "message": str(exc) or f"unknown command '{command}'"}
    return {"status": "accepted", "state": target.status}


async def serve_commands(
    target: CommandTarget,
    journal_path: Path | str,
    users: UserStore | None = None,
    relay_token: str | None = None,
    claimed: socket.socket | None = None,
) -> asyncio.Server:
    """Start listening for operator commands for this batch, signed by ``users``
    (and control-site holds relayed by the forwarder holding ``relay_token``); on
    ``claimed``, the address :func:`claim_command_address` bound, if given (the server
    then owns it)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):  # longer than the stream's limit
                line = None
            if line == b"":
                return  # connected and gone: a reader asking whether the batch runs
            reply: dict[str, Any]
            if line is None:  # answered, not a traceback on the batch's console
                reply = {"status": "invalid", "message": _TOO_LONG}
            else:
                try:
                    request = json.loads(line)
                except ValueError:
                    reply = {"status": "invalid", "message": "not a JSON request"}
                else:
                    await target.between_scans()  # where replay finds it (Batch.between_scans)
                    reply = _answer(target, request, users, relay_token)
            writer.write(json.dumps(reply).encode() + b"\n")
            with contextlib.suppress(ConnectionError):  # the sender gave up: it is journalled
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    if users is not None:  # signed on the batch's loop: never stall it for long
        users.wait_for_lock_at_most(BATCH_BUSY_TIMEOUT_S)
    sock = claimed if claimed is not None else claim_command_address(journal_path)
    try:
        return await asyncio.start_unix_server(handle, sock=sock)
    except Exception:  # never served; a cancel may land once it is (the server has it then)
        sock.close()
        raise


#: What a request over the command socket's line limit (64 KiB) is told.
_TOO_LONG = "request longer than 64 KiB: no command, password or reason is that long"


async def send_command(
    journal_path: Path | str,
    command: str,
    *,
    operator: str,
    password: str,
    reason: str,
    level: str = "procedure",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Send one command to the batch writing ``journal_path`` and return its answer."""
    try:
        reader, writer = await asyncio.open_unix_connection(path=command_address(journal_path))
    except (ConnectionRefusedError, FileNotFoundError):
        raise NoRunningBatch(f"no running batch is writing {journal_path}") from None
    try:
        request = {
            "command": command,
            "operator": operator,
            "password": password,
            "reason": reason,
            "level": level,
            **(extra or {}),
        }
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if not line:
        raise NoRunningBatch(f"the batch writing {journal_path} closed without answering")
    reply: dict[str, Any] = json.loads(line)
    return reply
