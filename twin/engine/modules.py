"""Control modules owned by the unit: reading, monitors and regulatory control in every state.

ISA-88 keeps basic control in equipment and control modules, apart from the
procedural state machine: whatever the procedure does (Running, Held, Paused,
Holding, Restarting, between phases), the unit goes on reading every process
value at its poll period, journalling it, checking every monitor and raising
alarms, and its regulatory loops (the DO cascade, pH by CO2 with base as
backup, perfusion from a density) go on acting. Phases only *engage* a loop
with its setpoint; a hold or stop decides, per equipment item as the recipe
declares, whether its control is kept (additions stop) or it is made safe
(its loops stop writing to it). Temperature and rocking are the bioreactor's
own loops: a setpoint written stays in force on the device.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from twin.engine.context import BatchContext, PhaseInterrupted, refusal
from twin.engine.control import DOCascade, PHControl
from twin.engine.setpoints import lost
from twin.equipment import Gas, Material
from twin.errors import CommunicationError, EquipmentError, JournalError, SetpointLost

__all__ = [
    "DEFAULT_PERIOD_S",
    "FLOW_DEADBAND_SCCM",
    "ControlModules",
    "DOLoop",
    "PHLoop",
    "PerfusionLoop",
]

HOUR = 3600.0
#: Poll period of the unit's control modules unless a phase asks for another.
DEFAULT_PERIOD_S = 60.0
#: Smallest flow change worth a setpoint write (controllers warn against needless writes).
FLOW_DEADBAND_SCCM = 1.0

#: Told of a device that stopped answering, an interlock that refused a loop's write, or
#: (once per kind of fault) anything else that broke a scan: monitoring must never stop
#: silently, so the scan goes on at its next period whatever happened.
FailureHandler = Callable[[Exception, "str | None"], None]


@dataclass
class DOLoop:
    """The DO cascade of one bag: its DO process value sets the O2 and N2 lines."""

    bioreactor: str
    gas_dispenser: str
    setpoint_pct: float
    cascade: DOCascade
    #: The flow last written per line: a controller is not rewritten with what it holds.
    written: dict[Gas, float] = field(default_factory=dict)


@dataclass
class PHLoop:
    """pH by CO2 in the sparge gas; base dosed (an addition) when no CO2 is left to take away."""

    bioreactor: str
    gas_dispenser: str
    setpoint: float
    deadband: float
    base_dose_ml: float
    base_interval_s: float
    control: PHControl | None = None
    last_co2: float | None = None
    last_base_at: float | None = None


@dataclass
class PerfusionLoop:
    """Perfusion at a rate per culture volume once the density reaches a threshold, raised
    step by step as it reaches the ramp's densities (a step is never taken back)."""

    bioreactor: str
    #: (density from which, volumes per day), in rising order of density.
    steps: list[tuple[float, float]]
    #: How many steps were taken (0: not started).
    taken: int = 0
    #: Whether it may still start: only while its culture runs (a later check or harvest
    #: phase does not see perfusion begin under it).
    armed: bool = True


class ControlModules:
    """The unit's basic control: one scan every ``period_s`` from batch start to batch end."""

    def __init__(
        self,
        ctx: BatchContext,
        kinds: dict[str, str],
        on_failure: FailureHandler,
        *,
        period_s: float = DEFAULT_PERIOD_S,
    ) -> None:
        self.ctx = ctx
        #: Equipment name -> type ("bioreactor", "gas_dispenser", "electroporator").
        self.kinds = kinds
        self.on_failure = on_failure
        self.period_s = period_s
        #: Held for a whole scan, and by the engine while it drives equipment (hold, stop,
        #: restart), so a loop's write never crosses a safe-state command on the wire.
        self.lock = asyncio.Lock()
        self.do: dict[str, DOLoop] = {}
        self.ph: dict[str, PHLoop] = {}
        self.perfusion: dict[str, PerfusionLoop] = {}
        #: Items made safe: their loops do not write to them until a restart.
        self.released: set[str] = set()
        #: Whether additions (perfusion start, base) may be made: not while held or ending.
        self.additions = True
        #: Items whose last read failed, with the alarm it raised (communication, device):
        #: the failure is reported once, its recovery once (cleared by that alarm's name).
        self.down: dict[str, str] = {}
        #: How the scan task itself ended (reported once each: it restarts every period).
        self.scan_failures: set[str] = set()
        #: Devices down when the batch was restarted: their next failed read alarms again.
        self.report_again: set[str] = set()
        #: Loop faults reported since the last clean scan or restart (reported once each).
        self.faults: set[str] = set()
        #: Items whose device no longer holds a setpoint of the batch (alarmed), with the
        #: parameters written again since (once each, until it holds them all).
        self.lost: dict[str, set[str]] = {}
        self.scans = 0
        #: The pH loops' base doses under way, by bioreactor: tasks of their own, so the
        #: scans go on while a pump runs and a hold, stop or abort cuts them short at once.
        self._dosing: dict[str, asyncio.Task[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._scanned: list[asyncio.Future[None]] = []

    # -- what phases and the engine set ------------------------------------------------

    def engage_do(self, bioreactor: str, gas_dispenser: str, setpoint_pct: float) -> None:
        """DO control of ``bioreactor`` through ``gas_dispenser`` at ``setpoint_pct``.

        An engaged loop keeps its state when re-engaged (a new setpoint is bumpless).
        """
        loop = self.do.get(bioreactor)
        if loop is not None and loop.gas_dispenser == gas_dispenser:
            loop.setpoint_pct = setpoint_pct
            return
        limits = self.ctx.gas_dispenser(gas_dispenser).limits
        o2_max = min(limits.full_scale_sccm.get(Gas.O2, 0.0), limits.o2_cap_sccm)
        cascade = DOCascade.default(o2_max, limits.full_scale_sccm.get(Gas.N2, 0.0))
        self.do[bioreactor] = DOLoop(bioreactor, gas_dispenser, setpoint_pct, cascade)

    def engage_ph(self, loop: PHLoop) -> None:
        """pH control of a bag (kept bumpless when the same loop is engaged again)."""
        old = self.ph.get(loop.bioreactor)
        if old is not None and old.gas_dispenser == loop.gas_dispenser:
            old.setpoint, old.deadband = loop.setpoint, loop.deadband
            old.base_dose_ml, old.base_interval_s = loop.base_dose_ml, loop.base_interval_s
            return
        self.ph[loop.bioreactor] = loop

    def engage_perfusion(self, loop: PerfusionLoop) -> None:
        """Perfusion of a bag from a density on (once started it stays at its rate)."""
        old = self.perfusion.get(loop.bioreactor)
        if old is not None and old.taken:
            loop.taken = max(loop.taken, min(old.taken, len(loop.steps)))
        self.perfusion[loop.bioreactor] = loop

    def disarm_perfusion(self, bioreactor: str) -> None:
        """The culture that engaged perfusion ended: a start not yet made is not made later."""
        loop = self.perfusion.get(bioreactor)
        if loop is not None:
            loop.armed = False

    def manual(self, gas_dispenser: str, gas: Gas) -> None:
        """A phase sets this line's flow itself: the loop writing it lets go of it (the DO
        loop of O2 and N2, the pH loop of CO2), as a DCS loop goes to manual."""
        if gas in (Gas.O2, Gas.N2):
            for bag in [b for b, loop in self.do.items() if loop.gas_dispenser == gas_dispenser]:
                del self.do[bag]
        if gas is Gas.CO2:
            for bag in [b for b, loop in self.ph.items() if loop.gas_dispenser == gas_dispenser]:
                del self.ph[bag]

    def disengage(self, bioreactor: str) -> None:
        """No more regulatory control of this bag (e.g. harvested): reading goes on."""
        self.do.pop(bioreactor, None)
        self.ph.pop(bioreactor, None)
        self.perfusion.pop(bioreactor, None)

    async def cut_additions(self, names: Collection[str]) -> None:
        """A hold, stop or abort is about to drive ``names``: no addition starts from here,
        and a base dose running on one of them is cancelled first, so nothing of it crosses
        the drive's safe-state commands on the wire and its pump's total (read once the
        drive stopped the pump) records what went in. Before, the dose ran inside the scan
        and the drive waited for it: with a large ``base_dose_ml``, minutes of pumping."""
        self.additions = False
        cut = [task for name, task in self._dosing.items() if name in names and not task.done()]
        for task in cut:
            task.cancel()
        if cut:
            await asyncio.wait(cut)

    def dose_tasks(self) -> list[asyncio.Task[Any]]:
        """The base doses under way (a replay interrupts their calls in flight where the
        batch's process died, as a phase's: a dose is never sent twice)."""
        return list(self._dosing.values())

    def keep(self, name: str) -> None:
        """A hold keeps this item's control: its loops go on writing to it."""
        self.released.discard(name)

    def release(self, name: str) -> None:
        """This item is made safe: its loops stop writing to it until a restart."""
        self.released.add(name)

    def resume(self) -> None:
        """Restart: every item under control again, additions allowed, faults reported anew
        (a device still failing at its next read raises its alarm again, and holds: a batch
        does not run on without a device whose failure held it)."""
        self.released.clear()
        self.additions = True
        self.faults.clear()
        for rewritten in self.lost.values():  # the restart wrote them all: once more if lost
            rewritten.clear()
        self.report_again.update(self.down)

    # -- the scan ----------------------------------------------------------------------

    def start(self, *, after: float = 0.0) -> None:
        """Scan now (or ``after`` batch seconds), then every period until stopped."""
        self._task = asyncio.create_task(self._run(after), name="control modules")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The scan must run until the batch ends: if it ever ends otherwise, say so loudly
        (once per kind of fault) and start it again a period later (monitoring never stops
        silently, and a fault that recurs at every scan cannot spin the process with the
        clock standing still)."""
        if task.cancelled() or self._task is not task:
            return
        exc = task.exception()
        failure = exc if exc is not None else RuntimeError("control modules ended")
        key = repr(failure)
        if key not in self.scan_failures:
            self.scan_failures.add(key)
            self._report(failure)
        self.start(after=self.period_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        dosing, self._dosing = list(self._dosing.values()), {}
        for ending in [task, *dosing]:
            if ending is not None:
                ending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ending

    def equipment_of(self, exc: BaseException) -> str | None:
        """The equipment item a device error names (a driver may name a unit on its line:
        'gas unit B' is item 'gas'): what its alarm, and its clearing, are journalled as."""
        device = getattr(exc, "device", None)
        if device is None:
            return None
        for name in self.kinds:
            if device == name or str(device).startswith(name + " "):
                return name
        return str(device)

    def _report(self, exc: Exception, equipment: str | None = None) -> None:
        """Hand a fault to the batch; if even that fails, the journal still gets an alarm."""
        try:
            self.on_failure(exc, equipment or self.equipment_of(exc))
        except Exception as failed:  # the last line of defence of monitoring
            with contextlib.suppress(Exception):
                self.ctx.journal.append(
                    "alarm",
                    "control modules",
                    {"alarm": "control_modules", "message": f"{exc!r}; reporting it: {failed!r}"},
                )

    async def next_scan(self) -> None:
        """Wait until the next scan has read every device and acted."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._scanned.append(fut)
        await fut

    async def _run(self, after: float = 0.0) -> None:
        clock = self.ctx.clock
        due = clock.now() + after
        if after:
            await clock.sleep_until(due)
        while True:
            async with self.lock:
                await self.scan()
            self.ctx.journal.commit_lagging()  # on the wall: each scan durable before the next
            waiters, self._scanned = self._scanned, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            due += self.period_s
            if due < clock.now():  # a scan that took longer than the period: no burst after
                due = clock.now()
            await clock.sleep_until(due)

    async def scan(self) -> None:
        """Read every bioreactor and gas dispenser, then run every engaged loop once.

        A loop acts only on a fresh reading of both its sensor and its actuator (a device
        that did not answer this scan is not written to). Each loop is guarded on its own:
        a fault in one is reported once (until a scan runs clean or a restart) and the
        others go on.
        """
        self.scans += 1
        ctx = self.ctx
        # A write on the wire while the devices are read may or may not be in what they
        # report back: their setpoints are checked at a scan no write overlapped.
        begun = ctx.writes_begun if ctx.writes_begun == ctx.writes_ended else -1
        pv: dict[str, Any] = {}
        for name, kind in self.kinds.items():
            if kind == "bioreactor":
                pv[name] = await self._read(name, lambda n=name: ctx.bioreactor(n).read())
            elif kind == "gas_dispenser":
                pv[name] = await self._read(name, lambda n=name: ctx.gas_dispenser(n).read())
        clean = True
        if begun == ctx.writes_begun:
            for name, reading in pv.items():
                if reading is not None and name not in self.released:
                    clean &= await self._guarded(
                        f"setpoints {name}", self._check_setpoints(name, reading)
                    )
        for do in list(self.do.values()):
            reading = pv.get(do.bioreactor)
            if (
                reading is not None
                and pv.get(do.gas_dispenser) is not None
                and do.gas_dispenser not in self.released
            ):
                clean &= await self._guarded(
                    f"DO {do.bioreactor}", self._control_do(do, reading.do_pct)
                )
        for ph in list(self.ph.values()):
            reading = pv.get(ph.bioreactor)
            if reading is not None and pv.get(ph.gas_dispenser) is not None:
                clean &= await self._guarded(
                    f"pH {ph.bioreactor}", self._control_ph(ph, reading.ph)
                )
        for perfusion in list(self.perfusion.values()):
            reading = pv.get(perfusion.bioreactor)
            if reading is not None:
                clean &= await self._guarded(
                    f"perfusion {perfusion.bioreactor}", self._control_perfusion(perfusion, reading)
                )
        if clean:
            self.faults.clear()

    async def _guarded(self, loop: str, action: Awaitable[None]) -> bool:
        """Run one loop's action; a fault is reported the first time it happens."""
        try:
            await action
        except Exception as exc:  # a loop's fault must not end monitoring or the other loops
            self._loop_fault(loop, exc)
            return False
        return True

    def _loop_fault(self, loop: str, exc: Exception) -> None:
        """A loop's fault: reported the first time (until a clean scan or a restart), else
        recorded as a failed call (a replay sees it fail), no alarm."""
        key = f"{loop}: {exc!r}"
        if key not in self.faults:
            self.faults.add(key)
            self._report(exc)
        elif isinstance(exc, EquipmentError):
            self.ctx.journal.append(
                "no_answer",
                self.equipment_of(exc) or exc.device,
                {"what": loop, "message": str(exc), **refusal(exc)},
                durable=False,
            )

    async def _read(self, name: str, action: Callable[[], Any]) -> Any:
        """One reading (journalled, monitors checked); a failure is reported once per outage
        (and again at the first read after a restart)."""
        try:
            value = await self.ctx.read(name, "pv", action)
        except JournalError:
            raise  # the record failed, not the device: the batch stops on that
        except Exception as exc:  # a driver's own fault too: this device's reading is lost
            if not isinstance(exc, EquipmentError):
                exc = EquipmentError(name, f"pv reading failed in the driver: {exc!r}")
            if name not in self.down or name in self.report_again:
                self.report_again.discard(name)
                self.down[name] = (
                    "communication" if isinstance(exc, CommunicationError) else "device"
                )
                self._report(exc, name)
            else:  # still silent: recorded (a replay must see this read fail too), no new alarm
                self.ctx.journal.append(
                    "no_answer", name, {"what": "pv", "message": str(exc)}, durable=False
                )
            return None
        self.report_again.discard(name)
        if name in self.down:
            alarm = self.down.pop(name)
            self.ctx.journal.append("alarm_cleared", name, {"alarm": alarm, "why": "answers again"})
        return value

    async def _check_setpoints(self, name: str, reading: Any) -> None:
        """Alarm the setpoints item ``name`` no longer holds (once until it holds them all
        again: ``setpoint_lost``, which holds a running batch) and write each one again, once
        per loss: a device that does not keep a setpoint written again (a panel in local
        mode) is left to the person the alarm calls, not rewritten every scan."""
        found = lost(self.kinds[name], reading, self.ctx.in_force, name)
        rewritten = self.lost.get(name)
        if not found:
            if rewritten is not None:
                del self.lost[name]
                self.ctx.journal.append(
                    "alarm_cleared",
                    name,
                    {"alarm": "setpoint_lost", "why": "the device holds the batch's setpoints"},
                )
            return
        if rewritten is None:
            rewritten = self.lost[name] = set()
            said = ", ".join(f"{p} {held:g} (the batch set {value:g})" for p, held, value in found)
            self._report(
                SetpointLost(name, f"the device holds {said}: restarted, or changed at its panel"),
                name,
            )
        for parameter, held, _ in found:
            if parameter in rewritten:
                continue
            rewritten.add(parameter)
            value, unit, write = self.ctx.in_force[(name, parameter)]
            await self.ctx.write(
                name, parameter, value, write, unit=unit, basis={"device_held": held}
            )

    async def _control_do(self, do: DOLoop, do_pct: float) -> None:
        split = do.cascade.update(do.setpoint_pct, do_pct, self.period_s)
        gd = self.ctx.gas_dispenser(do.gas_dispenser)
        for gas, sccm in ((Gas.O2, split.o2_sccm), (Gas.N2, split.n2_sccm)):
            held = do.written.get(gas)
            if held is None or abs(sccm - held) >= FLOW_DEADBAND_SCCM:
                await self.ctx.write(
                    do.gas_dispenser,
                    f"{gas.name.lower()}_flow_sp",
                    sccm,
                    lambda g=gas, f=sccm: gd.set_flow(g, f),
                    unit="sccm",
                )
                do.written[gas] = sccm

    async def _control_ph(self, ph: PHLoop, value: float) -> None:
        ctx = self.ctx
        gd = ctx.gas_dispenser(ph.gas_dispenser)
        if ph.control is None:
            gas = ctx.latest.get(f"{ph.gas_dispenser}.pv")
            now_co2 = gas.setpoint_sccm.get(Gas.CO2, 0.0) if gas is not None else 0.0
            full = gd.limits.full_scale_sccm.get(Gas.CO2, 0.0)
            ph.control = PHControl.default(now_co2, full)
            ph.last_co2 = now_co2
        if ph.gas_dispenser in self.released:
            return  # made safe: the loop stands still (no wind-up) until the restart
        co2 = ph.control.update(ph.setpoint, value, self.period_s)
        if ph.last_co2 is None or abs(co2 - ph.last_co2) >= FLOW_DEADBAND_SCCM:
            await ctx.write(
                ph.gas_dispenser,
                "co2_flow_sp",
                co2,
                lambda c=co2: gd.set_flow(Gas.CO2, c),
                unit="sccm",
            )
            ph.last_co2 = co2
        now = ctx.clock.now()
        too_acid = value < ph.setpoint - ph.deadband
        due = ph.last_base_at is None or now - ph.last_base_at >= ph.base_interval_s
        if (
            too_acid
            and co2 <= FLOW_DEADBAND_SCCM
            and due
            and self.additions
            and ph.bioreactor not in self.released
            and not ctx.pump_busy(ph.bioreactor)  # a phase's dose or harvest has the pump
        ):
            br = ctx.bioreactor(ph.bioreactor)

            async def dose() -> None:
                # The interval counts from the dose's start, whether it ends whole, cut short
                # by a hold, or refused: never a second dose within it.
                ph.last_base_at = now
                await br.add(Material.BASE, ph.base_dose_ml)

            write = ctx.write(
                ph.bioreactor, "add_base", ph.base_dose_ml, dose, unit="mL", restorable=False
            )
            self._dose_base(ph, write)

    def _dose_base(self, ph: PHLoop, dose: Coroutine[Any, Any, Any]) -> None:
        """Start a base dose as a task of its own: the scan does not wait for the pump (the
        unit goes on reading at its poll period while a large dose runs; the next scans see
        the pump busy), and a hold, stop or abort cuts it short at once
        (:meth:`cut_additions`). A dose that fails is reported as a loop's fault is."""
        name = ph.bioreactor
        task = asyncio.create_task(dose, name=f"base dose {name}")
        self._dosing[name] = task

        def ended(task: asyncio.Task[Any]) -> None:
            if self._dosing.get(name) is task:
                del self._dosing[name]
            if task.cancelled() or self._task is None:
                return  # cut short (the drive settles it), or the batch has ended
            exc = task.exception()
            if isinstance(exc, Exception) and not isinstance(exc, PhaseInterrupted):
                self._loop_fault(f"pH {name}", exc)  # (interrupted: the resume's hold settles it)

        task.add_done_callback(ended)

    async def _control_perfusion(self, loop: PerfusionLoop, pv: Any) -> None:
        if loop.taken >= len(loop.steps) or not loop.armed or not self.additions:
            return  # all steps taken, or its culture ended: nothing changes under a later phase
        if loop.bioreactor in self.released:
            return
        at, volumes_per_day = loop.steps[loop.taken]
        if pv.viable_cells_per_ml < at:
            return
        rate = round(volumes_per_day * pv.volume_ml, 1)
        br = self.ctx.bioreactor(loop.bioreactor)
        await self.ctx.write(
            loop.bioreactor,
            "perfusion_sp",
            rate,
            lambda r=rate: br.set_perfusion(r),
            unit="mL/d",
        )
        loop.taken += 1
