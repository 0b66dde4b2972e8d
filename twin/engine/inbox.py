"""Operator commands from another terminal: a running batch listens on a local socket.

The socket is a Linux abstract Unix socket named after the journal's absolute
path: no file to clean up, gone the moment the batch process ends, and only
reachable from this machine. One JSON line in (command, operator, reason), one
JSON line out (accepted with the new state, or refused with the valid commands).
Event-driven: a command reaches the engine at once, and nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

from twin.errors import CommandRefused, PocTwinError

__all__ = ["CommandTarget", "NoRunningBatch", "command_address", "send_command", "serve_commands"]


class NoRunningBatch(PocTwinError):
    """No batch process is running for that journal."""


class CommandTarget(Protocol):
    """What the inbox hands commands to (the Batch)."""

    def command(self, command: str, *, who: str, why: str, level: str = "procedure") -> None: ...

    def present_identity(self, patient_id: str, bag_id: str, *, who: str, why: str) -> None: ...

    @property
    def state(self) -> Any: ...

    @property
    def status(self) -> str: ...


def command_address(journal_path: Path | str) -> str:
    """The abstract socket name of the batch writing ``journal_path``."""
    digest = hashlib.sha256(str(Path(journal_path).resolve()).encode()).hexdigest()[:40]
    return f"\0poc-twin-{digest}"


def _answer(target: CommandTarget, request: dict[str, Any]) -> dict[str, Any]:
    try:
        command, operator, reason = request["command"], request["operator"], request["reason"]
    except (KeyError, TypeError):
        return {"status": "invalid", "message": "need command, operator and reason"}
    if not str(operator).strip() or not str(reason).strip():
        return {"status": "invalid", "message": "operator and reason must not be empty"}
    if command == "confirm-identity":
        patient, bag = request.get("patient_id"), request.get("bag_id")
        if not patient or not bag:
            return {"status": "invalid", "message": "confirm-identity needs patient_id and bag_id"}
        target.present_identity(str(patient), str(bag), who=str(operator), why=str(reason))
        return {"status": "accepted", "state": target.status}
    try:
        level = str(request.get("level", "procedure"))
        target.command(str(command), who=str(operator), why=str(reason), level=level)
    except CommandRefused as exc:
        return {"status": "refused", "message": str(exc), "state": exc.state, "valid": exc.valid}
    except ValueError as exc:
        return {"status": "invalid", "message": str(exc) or f"unknown command '{command}'"}
    return {"status": "accepted", "state": target.status}


async def serve_commands(target: CommandTarget, journal_path: Path | str) -> asyncio.Server:
    """Start listening for operator commands for this batch."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
            except ValueError:
                reply: dict[str, Any] = {"status": "invalid", "message": "not a JSON request"}
            else:
                reply = _answer(target, request)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    try:
        return await asyncio.start_unix_server(handle, path=command_address(journal_path))
    except OSError as exc:
        raise PocTwinError(
            f"another batch process already writes {journal_path} ({exc.strerror})"
        ) from None


async def send_command(
    journal_path: Path | str,
    command: str,
    *,
    operator: str,
    reason: str,
    level: str = "procedure",
    extra: dict[str, str] | None = None,
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
