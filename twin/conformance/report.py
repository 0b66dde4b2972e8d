"""What a conformance kit found: one line per check, and one error listing every failure.

A commissioning engineer reads the report, not a traceback: each check says
passed, failed or skipped and why, naming the device, so a failed bench is
fixed from the report alone (and CI prints the same lines in the HIL summary).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from twin.errors import EquipmentError

__all__ = ["Check", "ConformanceReport", "NonConforming", "Verdict", "conformance_table"]


class Verdict(StrEnum):
    """How one check ended."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # the check does not apply to this device (e.g. no O2 line)


@dataclass(frozen=True)
class Check:
    """One check of one device: what was tried and what the device did."""

    name: str
    verdict: Verdict
    detail: str = ""

    def line(self) -> str:
        """``passed  temperature setpoint read back: 13, 4, 40 °C``: for terminals and logs."""
        return f"{self.verdict.value:<8}{self.name}" + (f": {self.detail}" if self.detail else "")


class NonConforming(EquipmentError):
    """A device does not behave as its equipment interface promises; lists every failed check.

    An :class:`~twin.errors.EquipmentError` (device refused, failed or stopped
    answering): the CLI turns it into one sentence, the device named first.
    """

    def __init__(self, report: ConformanceReport) -> None:
        self.report = report
        failed = report.failures
        lines = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        super().__init__(
            report.device,
            f"does not conform to the {report.interface} interface "
            f"({len(failed)} of {len(report.checks)} checks failed): {lines}",
        )


@dataclass
class ConformanceReport:
    """Every check a kit ran against one device."""

    device: str
    interface: str  # "Bioreactor", "GasDispenser", "Electroporator"
    identity: str = ""  # vendor, model, serial and firmware as the device reported them
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.verdict is Verdict.FAILED]

    @property
    def skipped(self) -> list[Check]:
        return [c for c in self.checks if c.verdict is Verdict.SKIPPED]

    @property
    def passed(self) -> bool:
        """True when no check failed (skipped checks do not count against a device)."""
        return bool(self.checks) and not self.failures

    def verdict_of(self, name: str) -> Verdict:
        """The verdict of one named check (KeyError if the kit has no such check)."""
        for check in self.checks:
            if check.name == name:
                return check.verdict
        raise KeyError(f"{self.device}: no check named {name!r}")

    def raise_on_failure(self) -> None:
        """Raise :class:`NonConforming` naming the device and every failed check."""
        if not self.passed:
            raise NonConforming(self)

    def summary(self) -> str:
        """``11 passed, 1 failed, 1 skipped``."""
        counts = {v: sum(c.verdict is v for c in self.checks) for v in Verdict}
        return ", ".join(f"{n} {v.value}" for v, n in counts.items() if n)

    def text(self) -> str:
        """The whole report: a header naming the device, then one line per check."""
        head = f"{self.device} ({self.interface}) {self.identity}".rstrip()
        return "\n".join([f"{head}: {self.summary()}", *("  " + c.line() for c in self.checks)])


def _grouped(checks: list[Check]) -> str:
    """``identity, status: <why>`` : checks that failed for one reason are named together."""
    reasons: dict[str, list[str]] = {}
    for check in checks:
        reasons.setdefault(check.detail, []).append(check.name)
    return "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())


def conformance_table(reports: Iterable[ConformanceReport]) -> str:
    """A Markdown table, one row per device: what CI shows next to the fault matrix."""
    lines = [
        "| device | interface | identity | result | failed / skipped checks |",
        "|---|---|---|---|---|",
    ]
    for r in reports:
        notes = [f"failed {_grouped(r.failures)}"] if r.failures else []
        notes += [f"skipped {_grouped(r.skipped)}"] if r.skipped else []
        cell = " / ".join(notes).replace("|", "/") or "-"
        identity = r.identity or "-"
        lines.append(f"| {r.device} | {r.interface} | {identity} | {r.summary()} | {cell} |")
    return "\n".join(lines)
