"""Conformance kits: one per equipment interface, the same checks for the twin and real devices.

    report = await check_bioreactor(make_device)   # make_device(): async context manager
    print(report.text())
    report.raise_on_failure()                      # NonConforming lists every failed check

A kit reads every process value, writes each setpoint and reads it back,
takes the safe state, expects out-of-limit values to be refused, and reports
identity and status; each check opens a fresh device and puts back what it
changed. Kits know a device only through ``twin.equipment``: the unit tests run
them against the twin over its real protocols, ``hil_tests/test_conformance.py``
against whatever bench ``--bench`` names. ``check_bench_equipment(bench, name)``
picks the kit for an equipment item of a bench file.

Errors: :class:`NonConforming` (an :class:`twin.errors.EquipmentError`) when
asked to raise; otherwise a kit never raises for what a device does — every
finding is a line of the :class:`ConformanceReport`.
"""

from twin.conformance.bench import KITS, check_bench_equipment, device_factory
from twin.conformance.bioreactor import check_bioreactor
from twin.conformance.electroporator import check_electroporator
from twin.conformance.gas import check_gas_dispenser
from twin.conformance.kit import DeviceFactory
from twin.conformance.report import (
    Check,
    ConformanceReport,
    NonConforming,
    Verdict,
    conformance_table,
)

__all__ = [
    "KITS",
    "Check",
    "ConformanceReport",
    "DeviceFactory",
    "NonConforming",
    "Verdict",
    "check_bench_equipment",
    "check_bioreactor",
    "check_electroporator",
    "check_gas_dispenser",
    "conformance_table",
    "device_factory",
]
