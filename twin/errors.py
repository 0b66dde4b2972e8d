"""The exception tree of poc-twin: one root, so the CLI can turn any error into one sentence.

PocTwinError
├── InvalidInput            bad recipe or bench file; carries every problem (FILE:LINE:COL)
├── CommandRefused          an ISA-88 command not valid in the current state
├── EquipmentError          a device refused, failed or stopped answering
│   ├── CommunicationError  no (valid) answer within the driver's timeout and retries
│   └── DeviceRefused       the device answered with an error (Modbus exception, ``?``/ERR reply)
├── InterlockTripped        an action the safety layer will not allow, whatever the recipe says
└── JournalError            the journal cannot be written or does not verify
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "CommandRefused",
    "CommunicationError",
    "DeviceRefused",
    "EquipmentError",
    "InterlockTripped",
    "InvalidInput",
    "JournalError",
    "JournalWriteFailed",
    "PocTwinError",
    "Problem",
    "SetpointLost",
]


class PocTwinError(Exception):
    """Root of every error poc-twin raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, where a text editor can jump to it."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class InvalidInput(PocTwinError):
    """A recipe or bench that cannot be used; lists all problems at once, nothing started."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class CommandRefused(PocTwinError):
    """A command not valid in the current state: names the state and the valid commands."""

    def __init__(
        self, element: str, command: str, state: str, valid: list[str], why: str = ""
    ) -> None:
        self.element, self.command, self.state, self.valid = element, command, state, valid
        #: The journalled refused command (set by the batch), for its signature to bind to.
        self.event: Any = None
        allowed = ", ".join(valid) if valid else "none"
        super().__init__(
            f"{element}: '{command}' is not valid in state {state}; valid commands: {allowed}"
            + (f" ({why})" if why else "")
        )


class EquipmentError(PocTwinError):
    """A device could not do what was asked."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"{device}: {message}")


class CommunicationError(EquipmentError):
    """The device did not answer (or answered garbage) within timeout and retries."""


class DeviceRefused(EquipmentError):
    """The device answered with an explicit error (Modbus exception code, error reply)."""


class SetpointLost(EquipmentError):
    """A device no longer holds a setpoint the batch wrote (it restarted, or was changed at
    its panel): its readback differs."""


class InterlockTripped(PocTwinError):
    """A safety interlock refused an action; no recipe can bypass it."""


class JournalError(PocTwinError):
    """The journal could not be written, or does not verify."""


class JournalWriteFailed(JournalError):
    """A running batch's journal refused a write (disk full, I/O error, file gone): the
    batch stops where it stands, unrecorded work being no work. Names the file, the cause,
    the first event not recorded, and the way back (``poc-twin resume``)."""

    def __init__(self, path: Any, cause: BaseException, seq: int, *, started: bool = True) -> None:
        self.path, self.cause, self.seq, self.started = path, cause, seq, started
        reason = str(cause) or type(cause).__name__
        if not started:  # the batch's own first events: no procedure ran, nothing to resume
            super().__init__(
                f"journal {path} cannot be written ({reason}) at event {seq}, before the "
                "batch began: nothing started; free the disk or name another --journal and "
                "run again"
            )
            return
        super().__init__(
            f"journal {path} cannot be written ({reason}) at event {seq}: the batch was "
            "stopped where it stood and its equipment left as last set; the journal keeps "
            "every event committed before; free the disk or mend the file, then "
            f"'poc-twin resume {path}' brings the batch back Held"
        )

    def again(self) -> JournalWriteFailed:
        """The same failure, raised anew (each raise its own traceback)."""
        return JournalWriteFailed(self.path, self.cause, self.seq, started=self.started)
