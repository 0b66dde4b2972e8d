"""The live progress view of a batch: a journal subscriber, like every other consumer."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from twin.journal import Event
from twin.status import status_words

__all__ = ["BatchDisplay"]

DAY = 86400.0


#: States of a lower element worth showing beside a Running procedure.
_WAITING_BELOW = frozenset({"Holding", "Held", "Restarting", "Pausing", "Paused"})


class BatchDisplay:
    """Shows state, phase, simulated day and key process values, refreshed per batch hour."""

    def __init__(self, console: Console, batch_id: str, refresh_every_s: float = 3600.0) -> None:
        self.console = console
        self.batch_id = batch_id
        self.refresh_every_s = refresh_every_s
        self.state = "Idle"
        #: Elements below the procedure that are held, paused or ending (element -> state).
        self.below: dict[str, str] = {}
        #: Whether the batch waits for the operator's identity scan.
        self.scan = False
        #: The material whose container the batch waits to see scanned ("" for none).
        self.lot_wanted = ""
        self.phase = "-"
        self.batch_time = 0.0
        self.pv: dict[str, Any] = {}
        self.gas: dict[str, Any] = {}
        self.sample: dict[str, Any] = {}
        self.alarm = ""
        #: Alarms raised and not yet acknowledged (event number -> text): an operator must
        #: see that someone still has to look at them, not only the latest one.
        self.unacknowledged: dict[int, str] = {}
        self._last_refresh = -1e18
        #: How often the panel was redrawn for an event (what an operator gets to see).
        self.refreshes = 0
        self._live = Live(self.render(), console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> BatchDisplay:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.update(self.render(), refresh=True)
        self._live.__exit__(None, None, None)

    def __call__(self, event: Event) -> None:
        self.batch_time = event.batch_time
        force = False
        if event.kind == "transition":
            to = event.data["to"]
            if event.source.startswith("procedure:"):
                self.state = to
                force = True
            else:  # a hold or pause below the procedure is shown at its level
                if to in _WAITING_BELOW:
                    self.below[event.source] = to
                else:
                    self.below.pop(event.source, None)
                force = True
                if event.source.startswith("phase:") and to == "Running":
                    self.phase = event.source.removeprefix("phase:")
                elif event.source.startswith("phase:"):
                    # A scan asked for lapses with its phase's run; asked again if it runs.
                    self.scan, self.lot_wanted = False, ""
        elif event.kind == "identity_requested":
            self.scan = True
            force = True
        elif event.kind == "identity_confirmation":
            self.scan = False
            force = True
        elif event.kind == "lot_requested":
            self.lot_wanted = str(event.data.get("material", ""))
            force = True
        elif event.kind == "lot_scan":
            if event.data.get("accepted"):
                self.lot_wanted = ""
            force = True
        elif event.kind == "reading" and event.data.get("what") == "pv":
            if "do_pct" in event.data["values"]:
                self.pv = event.data["values"]
            else:
                self.gas = event.data["values"]
        elif event.kind == "sample":
            self.sample = event.data
        elif event.kind == "alarm":
            self.alarm = f"{event.source}: {event.data.get('message', '')}"
            self.unacknowledged[event.seq] = self.alarm
            force = True
        elif event.kind == "alarm_ack":
            self.unacknowledged.pop(event.data.get("alarm_seq", -1), None)
            force = True
        # While the batch waits on a person its clock follows the wall: show each reading.
        waiting = self.state != "Running" or self.below or self.scan or self.lot_wanted
        if force or waiting or self.batch_time - self._last_refresh >= self.refresh_every_s:
            self._last_refresh = self.batch_time
            self.refreshes += 1
            self._live.update(self.render(), refresh=True)

    @property
    def shown_state(self) -> str:
        """The procedure's state, with a lower element's hold or pause, or a scan awaited."""
        return status_words(
            self.state, self.below.items(), identity_wanted=self.scan, lot_wanted=self.lot_wanted
        )

    def render(self) -> Panel:
        day = self.batch_time / DAY
        head = Text.assemble(
            ("batch ", "dim"),
            (self.batch_id, "bold"),
            ("   state ", "dim"),
            (
                self.shown_state,
                "bold green" if self.shown_state in ("Running", "Complete") else "bold yellow",
            ),
            ("   day ", "dim"),
            (f"{day:5.2f}", "bold"),
        )
        table = Table.grid(padding=(0, 2))
        table.add_column(style="dim")
        table.add_column(justify="right")
        table.add_column(style="dim")
        table.add_column(justify="right")
        pv = self.pv
        sample = self.sample

        def fmt(values: dict[str, Any], key: str, spec: str) -> str:
            value = values.get(key)
            return format(value, spec) if isinstance(value, (int, float)) else "-"

        table.add_row(
            "temperature °C",
            fmt(pv, "temperature_c", ".2f"),
            "viable cells /mL",
            fmt(pv, "viable_cells_per_ml", ".3g"),
        )
        table.add_row(
            "DO % air sat.",
            fmt(pv, "do_pct", ".1f"),
            "viability % (sample)",
            fmt(sample, "viability_pct", ".1f"),
        )
        table.add_row("pH", fmt(pv, "ph", ".2f"), "volume mL", fmt(pv, "volume_ml", ".0f"))
        flows = self.gas.get("mass_flow_sccm", {}) if self.gas else {}
        table.add_row("O2 sccm", fmt(flows, "o2", ".1f"), "N2 sccm", fmt(flows, "n2", ".1f"))
        parts: list[Any] = [head, Text(f"phase  {self.phase}"), table]
        if self.alarm:
            parts.append(Text(f"alarm  {self.alarm}", style="bold red"))
        if self.unacknowledged:
            seqs = ", ".join(str(seq) for seq in sorted(self.unacknowledged))
            parts.append(
                Text(
                    f"{len(self.unacknowledged)} alarm(s) not acknowledged (events {seqs}): "
                    "poc-twin ack JOURNAL EVENT, or the operator station",
                    style="bold red",
                )
            )
        return Panel(Group(*parts), title="poc-twin", border_style="cyan")
