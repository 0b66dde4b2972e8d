"""What a running phase may touch: equipment through a journaling facade, the clock, safe points.

Every setpoint a phase writes is journalled (and committed) before it goes to the
device and confirmed after the device took it; every reading is journalled after
it comes back. The engine acts on values exactly as the journal keeps them (floats
to six decimals), so its decisions are a function of the journal alone: replay
feeds the recorded values back and must see the same decisions. The latest
setpoints are remembered so a restart after a hold can re-establish them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from twin.access.esign import sign_event
from twin.access.users import Signer
from twin.clock import Clock
from twin.engine.alarms import Alarms
from twin.engine.interlocks import check_write
from twin.engine.lots import LotDesk
from twin.equipment import Bioreactor, Electroporator, GasDispenser
from twin.errors import DeviceRefused, EquipmentError, PocTwinError
from twin.journal import Event, Journal

if TYPE_CHECKING:
    from twin.engine.modules import ControlModules

__all__ = [
    "CONFIRMED",
    "BatchContext",
    "PhaseInterrupted",
    "Transfer",
    "as_record",
    "as_recorded",
    "check_numbers",
    "journal_answer",
    "recorded_pair",
    "refusal",
]

T = TypeVar("T")


class PhaseInterrupted(PocTwinError):
    """Raised inside a phase at a safe point when the batch must leave Running."""


#: Types that both conversions hand back as they are (checked first: most values are these).
_AS_IS: frozenset[type] = frozenset({int, str, bool, type(None)})


@dataclasses.dataclass(frozen=True, slots=True)
class _Shape:
    """A dataclass type's fields, worked out once per type rather than on every reading."""

    names: tuple[str, ...]
    #: ``cls(*values)`` builds what ``dataclasses.replace`` would: a generated ``__init__``
    #: taking every field positionally, and no ``__post_init__`` that could alter them.
    rebuild: bool


@functools.cache
def _shape(cls: type) -> _Shape | None:
    """The fields of instances of ``cls``; None when they are not dataclass instances."""
    if issubclass(cls, type) or not dataclasses.is_dataclass(cls):
        return None
    fields = dataclasses.fields(cls)
    rebuild = (
        len(fields) == len(cls.__dataclass_fields__)  # no InitVar or ClassVar pseudo-fields
        and all(f.init and not f.kw_only for f in fields)
        and not hasattr(cls, "__post_init__")
    )
    return _Shape(tuple(f.name for f in fields), rebuild)


#: Journal names of enum dict keys, per enum type: ``Enum.name`` is a slow Python property,
#: and a table per type keeps apart members of different IntEnums that compare equal.
_ENUM_NAMES: dict[type, dict[Any, str]] = {}


def _key(key: Any) -> str:
    """A dict key as the journal names it: an enum by its lower-case name, else ``str``."""
    if type(key) is str:
        return key
    names = _ENUM_NAMES.get(type(key))
    if names is None:
        if not isinstance(key, Enum):
            return key.name.lower() if hasattr(key, "name") else str(key)
        names = _ENUM_NAMES[type(key)] = {}
    name = names.get(key)
    if name is None:
        name = names[key] = key.name.lower()
    return name


#: ``round(x, 6)`` of floats met before. Rounding to digits goes through a decimal string
#: (~0.7 us, ~18 floats a scan); readings repeat a small set of quantized values, so a
#: lookup nearly always answers. Zeros (0.0 and -0.0 compare equal, each rounds to itself)
#: and NaN are never kept; the table is emptied when it grows past ``_ROUNDED_MAX``.
_ROUNDED: dict[float, float] = {}
_ROUNDED_MAX = 1 << 16


def _round6(x: float) -> float:
    """``round(x, 6)``, remembered."""
    r = _ROUNDED.get(x)
    if r is None:
        r = round(x, 6)
        if x and x == x:
            if len(_ROUNDED) >= _ROUNDED_MAX:
                _ROUNDED.clear()
            _ROUNDED[x] = r
    return r


def as_record(value: Any) -> Any:
    """A reading as plain JSON-able data for the journal."""
    cls = type(value)
    if cls is float:
        return _round6(value)
    if cls in _AS_IS:
        return value
    shape = _shape(cls)
    if shape is not None:
        record: dict[str, Any] = {}
        for name in shape.names:
            field = getattr(value, name)
            record[name] = _round6(field) if type(field) is float else as_record(field)
        return record
    if isinstance(value, dict):
        return {_key(k): as_record(v) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 6)  # a float subclass: its own round
    return value


def _not_numbers(record: Any, at: str = "") -> list[tuple[str, float]]:
    """Where a recorded device answer holds NaN or an infinity, and what: ``("ph", nan)``,
    ``("mass_flow_sccm.n2", inf)``."""
    if type(record) is float:
        return [] if record - record == 0.0 else [(at or "value", record)]
    if isinstance(record, dict):
        return [w for k, v in record.items() for w in _not_numbers(v, f"{at}.{k}" if at else k)]
    if isinstance(record, list):
        return [w for i, v in enumerate(record) for w in _not_numbers(v, f"{at}[{i}]")]
    return []


def check_numbers(equipment: str, what: str, record: Any) -> None:
    """Refuse a device's answer that holds no number where a number belongs (NaN, an
    infinity: a failed probe, a broken device stack): no control loop, monitor or phase may
    act on it, and no journal can hold it. It is an equipment fault, alarmed and recorded as
    any other (the message keeps the values that were numbers), which holds the batch."""
    bad = _not_numbers(record)
    if not bad:
        return
    given = ", ".join(f"{where} {value}" for where, value in bad)
    rest = ""
    if isinstance(record, dict):
        good = [f"{k} {v:g}" for k, v in record.items() if type(v) is float and v - v == 0.0]
        rest = f"; the rest read {', '.join(good)}" if good else ""
    raise EquipmentError(
        equipment, f"{what} answer is no number: {given} (a failed sensor or device){rest}"
    )


def journal_answer(
    journal: Journal,
    kind: str,
    equipment: str,
    what: str,
    data: dict[str, Any],
    answer: Any,
    *,
    durable: bool = False,
) -> Event:
    """Journal a device's answer (``answer``: its record inside ``data``). The journal
    refuses what holds NaN or an infinity before it changes anything: that is then the
    device's fault (:func:`check_numbers`), found at no cost to an answer that is fine."""
    try:
        return journal.append(kind, equipment, data, durable=durable)
    except ValueError:
        check_numbers(equipment, what, answer)
        raise


def as_recorded(value: T) -> T:
    """The value as the journal will hold it (floats rounded as :func:`as_record` rounds them)."""
    return recorded_pair(value)[0]  # type: ignore[no-any-return]


def recorded_pair(value: Any) -> tuple[Any, Any]:
    """:func:`as_recorded` of ``value`` and that value's :func:`as_record`, in one pass.

    A reading is rounded once and its record built from the same rounded floats (rounding
    to six decimals again would change nothing: ``round`` is idempotent). A reading that
    rounding leaves as it was (an Alicat frame's flows, two decimals) is handed back
    itself, not rebuilt.
    """
    cls = type(value)
    if cls is float:
        rounded = _round6(value)
        return rounded, rounded
    if cls in _AS_IS:
        return value, value
    shape = _shape(cls)
    if shape is not None:
        fields: list[Any] = []
        changes: dict[str, Any] = {}
        record: dict[str, Any] = {}
        for name in shape.names:
            field = getattr(value, name)
            if type(field) is float:
                field_record = _round6(field)
                if field_record != field:
                    field = changes[name] = field_record
            elif isinstance(field, float | dict):
                recorded, field_record = recorded_pair(field)
                if recorded is not field:
                    field = changes[name] = recorded
            else:
                field_record = as_record(field)
            fields.append(field)
            record[name] = field_record
        if not changes:
            return value, record
        if shape.rebuild:
            return cls(*fields), record
        rebuilt = dataclasses.replace(value, **changes)  # __post_init__ may change it
        return rebuilt, as_record(rebuilt)
    if isinstance(value, dict):
        recorded: dict[Any, Any] = {}
        record = {}
        same = True
        for k, v in value.items():
            if type(v) is float:  # a gas line's flow: no call per value (~10 a reading)
                r = recorded[k] = record[_key(k)] = _round6(v)
                same = same and r == v
            else:
                r, record[_key(k)] = recorded_pair(v)
                recorded[k] = r
                same = same and r is v
        return (value if same else recorded), record
    if isinstance(value, float):  # a float subclass
        rounded = round(value, 6)
        return rounded, rounded
    return value, as_record(value)


#: Kind of the event that says a device took a setpoint (with what it answered).
CONFIRMED = "confirmed"

Restorer = tuple[Any, str, Callable[[], Awaitable[Any]]]


def refusal(exc: BaseException) -> dict[str, Any]:
    """What a failure's record says beyond its message: that the device refused the call
    (it answered with an error, so nothing was done), for a replay to raise the same kind."""
    return {"refused": True} if isinstance(exc, DeviceRefused) else {}


#: Setpoints that run a bioreactor's pump for a while (a dose, the harvest): a hold or abort
#: may cut them short, and the record must then say what the pump moved.
def is_transfer(parameter: str) -> bool:
    return parameter.startswith("add_") or parameter == "harvest"


@dataclasses.dataclass(slots=True)
class Transfer:
    """One run of a bioreactor's pump (a dose, the harvest), from its setpoint to what it
    moved."""

    equipment: str
    parameter: str
    #: The dose's volume (None for a harvest: it drains the bag).
    requested_ml: float | None
    #: Its setpoint event (the record links the two by its seq: ``Journal.as_written``).
    setpoint: Event
    #: The task that runs it (a phase's, or the pH loop's base dose): a transfer whose task
    #: still runs (a controlled stop lets a phase finish) is not settled under it.
    runner: asyncio.Future[Any]
    #: What the pump moved: a dose's volume (a harvest's) once the device confirmed it, the
    #: pump's total once a hold or abort cut it short and stopped the pump; None until one
    #: of the two (or when that total could not be read).
    delivered_ml: float | None = None


#: An identity scan as journalled: patient id, bag id, and whether it matched the batch's.
Scan = tuple[str, str, bool]


def _never() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


def _reached(changed: asyncio.Future[Any]) -> None:
    if not changed.done():
        changed.set_result(True)


class BatchContext:
    """The engine's side of a running batch, as phases see it."""

    def __init__(
        self,
        clock: Clock,
        journal: Journal,
        equipment: dict[str, Any],
        *,
        safe_point: Callable[[], Awaitable[None]],
        alarms: Alarms,
        cut_short: Callable[[], str | None] = lambda: None,
        pausing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.clock = clock
        #: Whether the next safe point pauses (the batch is Pausing or Paused): a phase
        #: whose equipment runs on between safe points (a media exchange's line) stops it
        #: for the pause.
        self.pausing = pausing
        self.journal = journal
        self.equipment = equipment
        self._safe_point = safe_point
        self._cut_short = cut_short
        self.alarms = alarms
        #: The running phase's task (set by the batch): its writes, and only its, are the
        #: ones a hold or an abort stops before they begin.
        self.phase_task: asyncio.Task[None] | None = None
        #: The transfer on each bioreactor's pump not yet confirmed: one a hold or abort
        #: cut short stays here until its drive reads the pump's total.
        self.transfers: dict[str, Transfer] = {}
        #: Each bioreactor's one pump, held by the transfer that runs it: a phase's dose
        #: that comes while the pH loop's base dose runs waits for it instead of meeting a
        #: busy pump (the device refuses a second command, and the refusal holds the batch).
        self._pumps: dict[str, asyncio.Lock] = {}
        #: Transfers that have or wait for each pump (a lock just released reads unlocked
        #: until its next holder runs).
        self._pump_users: dict[str, int] = {}
        #: The batch's ordered identity (patient id, bag id), from the batch record.
        self.ordered_identity: tuple[str, str] | None = None
        #: Set once an operator's scan matched the ordered identity: unlocks electroporation.
        self.identity: tuple[str, str] | None = None
        self._scans: asyncio.Queue[Scan] = asyncio.Queue()
        #: The phase whose request the scans in ``_scans`` answer (a later phase's request
        #: never takes them).
        self._scan_for: object | None = None
        #: Whether the confirm_identity phase asks for a scan now (a person's scan is taken
        #: only then: one given before, or while the batch is held, is refused).
        self.identity_wanted = False
        #: Lots the run fixed (``run --lot``), by material: a scanned lot must match.
        self.expected_lots: dict[str, str] = {}
        #: Where an addition waits for its container's scan.
        self.lots = LotDesk(
            journal,
            clock.batch_date,
            lambda waiting: self.on_awaiting_scan(waiting),
        )
        self._restore: dict[tuple[str, str], Restorer] = {}
        #: Device writes begun and ended: a scan compares what a device reports back with
        #: the setpoints in force only if no write was on the wire while it read.
        self.writes_begun = 0
        self.writes_ended = 0
        self.latest: dict[str, Any] = {}
        #: The unit's control modules (set by the batch): phases engage loops on them.
        self.control: ControlModules = None  # type: ignore[assignment]
        #: Told when the batch starts or stops waiting for an operator's scan.
        self.on_awaiting_scan: Callable[[bool], None] = lambda waiting: None
        #: A future the batch resolves at its next state change (set by the batch).
        self.next_change: Callable[[], asyncio.Future[None]] = _never

    def bioreactor(self, name: str) -> Bioreactor:
        return self.equipment[name]  # type: ignore[no-any-return]

    def gas_dispenser(self, name: str) -> GasDispenser:
        return self.equipment[name]  # type: ignore[no-any-return]

    def electroporator(self, name: str) -> Electroporator:
        return self.equipment[name]  # type: ignore[no-any-return]

    async def safe_point(self) -> None:
        """Where a phase may be paused or interrupted without harm."""
        await self._safe_point()

    async def wait_until(self, t: float) -> bool:
        """Wait until batch time ``t``, or less if the batch's state changes first; True when
        ``t`` was reached. A phase with nothing to do for hours (a culture between samples)
        waits here instead of waking every minute, and a pause, stop or hold still reaches
        it at once (the caller goes to its safe point)."""
        loop = asyncio.get_running_loop()
        when = self.clock.origin + t
        if when <= loop.time():
            return True
        changed = self.next_change()
        timer = loop.call_at(when, _reached, changed)
        try:
            return bool(await changed)
        finally:
            timer.cancel()

    def pump_busy(self, equipment: str) -> bool:
        """Whether a transfer runs, or waits to run, on this bioreactor's pump."""
        return equipment in self.transfers or self._pump_users.get(equipment, 0) > 0

    async def write(
        self,
        equipment: str,
        parameter: str,
        value: Any,
        action: Callable[[], Awaitable[T]],
        *,
        unit: str = "",
        restorable: bool = True,
        basis: dict[str, Any] | None = None,
        lot: str | None = None,
    ) -> T:
        """Check interlocks, journal the setpoint (committed), write it, journal the device's
        confirmation (with its answer); remember the setpoint for a restart. ``basis``: what
        a calculated setpoint was worked out from, ``lot`` the material lot dosed (journalled
        with it, for the record). A dose or harvest first waits for the bioreactor's pump
        (the setpoint is journalled once it has it)."""
        if not is_transfer(parameter):
            return await self._write(
                equipment, parameter, value, action, unit, restorable, basis, lot
            )
        pump = self._pumps.setdefault(equipment, asyncio.Lock())
        users = self._pump_users
        users[equipment] = users.get(equipment, 0) + 1  # busy from the moment it waits
        try:
            waited = pump.locked()
            async with pump:
                if waited:
                    # Handed the pump as another transfer ended: one turn of the loop first,
                    # so a command due this instant is seen before the setpoint goes out,
                    # live and in a replay alike (as at a phase's safe point).
                    await asyncio.sleep(0)
                return await self._write(
                    equipment, parameter, value, action, unit, restorable, basis, lot
                )
        finally:
            users[equipment] -= 1

    async def _write(
        self,
        equipment: str,
        parameter: str,
        value: Any,
        action: Callable[[], Awaitable[T]],
        unit: str,
        restorable: bool,
        basis: dict[str, Any] | None,
        lot: str | None,
    ) -> T:
        if asyncio.current_task() is self.phase_task and (why := self._cut_short()) is not None:
            raise PhaseInterrupted(why)  # a hold or abort came: nothing new goes out
        check_write(
            equipment,
            self.equipment[equipment],
            parameter,
            value,
            identity_confirmed=self.identity is not None,
        )
        data: dict[str, Any] = {"parameter": parameter, "value": as_record(value), "unit": unit}
        if basis is not None:
            data["basis"] = {k: as_record(v) for k, v in basis.items()}
        if lot is not None:
            data["lot"] = lot
        setpoint = self.journal.append("setpoint", equipment, data)
        transfer = None
        if is_transfer(parameter):
            dose = None if parameter == "harvest" else float(value)
            runner = asyncio.current_task()
            assert runner is not None  # a write is always made by a task
            transfer = Transfer(equipment, parameter, dose, setpoint, runner)
            self.transfers[equipment] = transfer
        try:
            result = await self._confirmed(equipment, parameter, action)
        except DeviceRefused:
            if transfer is not None:  # its command refused: the pump never ran
                transfer.delivered_ml = 0.0
            raise
        if transfer is not None:
            moved = transfer.requested_ml
            transfer.delivered_ml = float(result) if moved is None else moved  # type: ignore[arg-type]
            if self.transfers.get(equipment) is transfer:
                del self.transfers[equipment]
        if restorable:
            self._restore[(equipment, parameter)] = (value, unit, action)
        return result

    @property
    def in_force(self) -> dict[tuple[str, str], Restorer]:
        """The setpoints the batch has put in force, by (item, parameter): (value, unit,
        write), as a restart re-establishes them."""
        return self._restore

    async def _confirmed(
        self, equipment: str, parameter: str, action: Callable[[], Awaitable[T]]
    ) -> T:
        self.writes_begun += 1
        try:
            answer = await action()
        finally:
            self.writes_ended += 1
        result, record = recorded_pair(answer)
        data = {"parameter": parameter, "result": record}
        journal_answer(self.journal, CONFIRMED, equipment, parameter, data, record)
        return result

    async def read(self, equipment: str, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Take a reading and journal it (made durable with the next setpoint or transition)."""
        value, record = recorded_pair(await action())
        data = {"what": what, "values": record}
        journal_answer(self.journal, "reading", equipment, what, data, record)
        self.latest[f"{equipment}.{what}"] = value
        if isinstance(record, dict):
            self.alarms.evaluate(equipment, record, self.clock.now())
        return value

    def present_identity(
        self,
        patient_id: str,
        bag_id: str,
        operator: str,
        reason: str,
        signer: Signer | None = None,
    ) -> bool:
        """An operator's scan of the patient wristband and bag label (from another terminal),
        journalled (with the signature, in one commit) as it is accepted: "accepted" means
        recorded, even if a hold cancels the wait before the phase takes it (its restart
        takes it then, without asking again). Whether it matches the batch's ids."""
        match = (patient_id, bag_id) == self.ordered_identity
        with self.journal.together():
            event = self.journal.append(
                "identity_confirmation",
                "batch",
                {
                    "patient_id": patient_id,
                    "bag_id": bag_id,
                    "operator": operator,
                    "reason": reason,
                    "meaning": "chain of identity verified" if match else "identity mismatch",
                    "match": match,
                },
            )
            if signer is not None:
                sign_event(self.journal, event, signer)
        self._scans.put_nowait((patient_id, bag_id, match))
        self.identity_wanted = False  # one scan answers one request
        return match

    def want_identity(self, asking: object) -> None:
        """The confirm_identity phase ``asking`` asks for a scan (before it journals the
        request); scans recorded for another phase's request are not its to take."""
        if asking is not self._scan_for:
            while not self._scans.empty():
                self._scans.get_nowait()
            self._scan_for = asking
        self.identity_wanted = True

    def scan_recorded_for(self, asking: object) -> bool:
        """Whether a scan answering ``asking``'s request is recorded and not yet taken (it
        was accepted just before a hold or pause cancelled the wait)."""
        return asking is self._scan_for and not self._scans.empty()

    async def next_scan(self) -> Scan:
        """Wait for the next identity scan: the batch now waits on a person."""
        try:
            if not self._scans.empty():
                return self._scans.get_nowait()
            self.on_awaiting_scan(True)
            try:
                return await self._scans.get()  # (cancelled: a scan put meanwhile stays)
            finally:
                self.on_awaiting_scan(False)
        finally:
            self.identity_wanted = False  # taken, or no longer asked for (held, paused)

    def forget(self, equipment: str, parameter: str) -> None:
        """A setpoint no longer to be restored (e.g. perfusion after harvest)."""
        self._restore.pop((equipment, parameter), None)

    async def restore_setpoints(self, go_on: Callable[[], bool] = lambda: True) -> bool:
        """Re-establish every remembered setpoint, in the order they were first written;
        False, with the rest left unwritten, once ``go_on`` says the restart was superseded
        (a hold, stop or abort given meanwhile drives the items as it declares instead)."""
        for (equipment, parameter), (value, unit, action) in list(self._restore.items()):
            if not go_on():
                return False
            self.journal.append(
                "setpoint",
                equipment,
                {"parameter": parameter, "value": as_record(value), "unit": unit, "restored": True},
            )
            await self._confirmed(equipment, parameter, action)
        return True
