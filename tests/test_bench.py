"""Bench files are validated like recipes: every problem at FILE:LINE:COL, nothing opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.bench import check_bench, load_bench
from twin.errors import InvalidInput

ROOT = Path(__file__).resolve().parent.parent

HEAD = "bench: t\nclock: wall\nequipment:\n"


def problems(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "b.yaml"
    path.write_text(HEAD + body)
    with pytest.raises(InvalidInput) as err:
        load_bench(path)
    return [str(p).replace(str(path), "B") for p in err.value.problems]


def test_shipped_benches_validate() -> None:
    for name in ("sim.yaml", "sim-in-process.yaml", "sim-rtu.yaml", "example-lab.yaml"):
        load_bench(ROOT / "benches" / name)
    lab = load_bench(ROOT / "benches" / "example-lab.yaml")
    assert lab.model.twin is None and not lab.virtual_clock


def test_unknown_driver(tmp_path: Path) -> None:
    got = problems(tmp_path, "  gas: {type: gas_dispenser, driver: mks_gas, config: {}}\n")
    assert got[0].startswith("B:4:") and "unknown driver 'mks_gas'" in got[0]


def test_missing_endpoint(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        "  br:\n    type: bioreactor\n    driver: modbus_rtu_bioreactor\n"
        "    config: {baud: 19200}\n",
    )
    assert any(p.startswith("B:7:") and "port" in p for p in got), got


def test_duplicate_unit_on_one_bus(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        "  br:\n    type: bioreactor\n    driver: modbus_rtu_bioreactor\n"
        "    config: {port: /dev/ttyUSB0, unit: 3}\n"
        "  gas:\n    type: gas_dispenser\n    driver: bronkhorst_gas\n"
        "    config: {port: /dev/ttyUSB0, units: {air: 3, o2: 4},\n"
        "             limits: {full_scale_sccm: {air: 500, o2: 200}}}\n",
    )
    assert len(got) == 1 and got[0].startswith("B:11:")
    assert "unit 3 on /dev/ttyUSB0 is already taken by 'br'" in got[0]


def test_one_port_two_line_settings(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        "  br:\n    type: bioreactor\n    driver: modbus_rtu_bioreactor\n"
        "    config: {port: /dev/ttyUSB0, unit: 1, parity: E}\n"
        "  ep:\n    type: electroporator\n    driver: ascii_electroporator\n"
        "    config: {port: /dev/ttyUSB0}\n",
    )
    assert len(got) == 1 and got[0].startswith("B:11:") and "other line settings" in got[0]


async def test_bench_check_reports_identity_status_reading_and_link_counters() -> None:
    results = await check_bench(load_bench(ROOT / "benches" / "sim-rtu.yaml"))
    assert [r.name for r in results] == ["bioreactor", "gas", "electroporator"]
    assert all(r.ok for r in results), results
    gas = results[1]
    assert "F-201CV-500SCCM" in gas.identity and "mass_flow_sccm" in gas.reading
    assert gas.counters["transactions"] > 0 and gas.counters["failures"] == 0


def test_bronkhorst_single_unit_is_refused_with_the_fix(tmp_path: Path) -> None:
    """A gas dispenser has a unit id per gas: a lone `unit:` would be silently ignored."""
    bench = tmp_path / "b.yaml"
    bench.write_text(
        "bench: t\nclock: wall\nequipment:\n"
        "  gas:\n    type: gas_dispenser\n    driver: bronkhorst_gas\n"
        "    config: {port: /dev/ttyUSB0, unit: 3}\n"
    )
    with pytest.raises(InvalidInput, match=r"one unit id per gas: write units: \{air: 1"):
        load_bench(bench)


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("baud: 19200", "baud: 12345", "baud"),
        ("timeout_s: 0.5", "timeout_s: .inf", "finite"),
        ("viable_cells_per_ml: 1.0e+6", "viable_cells_per_ml: 1.0e+30", "less than or equal"),
        ("volume_ml: 100", "volume_ml: 1.0e+9", "less than or equal"),
    ],
)
def test_a_bench_out_of_its_physical_range_is_refused_on_its_line(
    tmp_path: Path, old: str, new: str, expect: str
) -> None:
    text = (ROOT / "benches" / "sim.yaml").read_text()
    assert old in text
    bad = tmp_path / "bench.yaml"
    bad.write_text(text.replace(old, new, 1))
    line = next(i for i, s in enumerate(bad.read_text().splitlines(), 1) if new in s)
    with pytest.raises(InvalidInput) as caught:
        load_bench(bad)
    assert any(p.line == line and expect in p.message for p in caught.value.problems), [
        str(p) for p in caught.value.problems
    ]


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../../etc/passwd", "UTC+1", "x" * 300])
def test_a_time_zone_that_is_no_iana_zone_is_refused_on_its_line(tmp_path: Path, zone: str) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(
        f"bench: t\nclock: wall\ntimezone: {zone!r}\nequipment:\n"
        "  gas: {type: gas_dispenser, driver: alicat_gas, config: {port: /dev/ttyUSB0}}\n"
    )
    with pytest.raises(InvalidInput) as err:
        load_bench(path)
    (problem,) = [str(p).replace(str(path), "B") for p in err.value.problems]
    assert problem.startswith("B:3:") and "unknown time zone" in problem
    assert len(problem) < 300


def test_the_site_date_is_the_benchs_time_zone_not_utc(tmp_path: Path) -> None:
    """Half past midnight in London in summer is still yesterday in UTC: a lot that expired
    yesterday (London) is expired there, whatever UTC says."""
    import asyncio
    from datetime import UTC, date, datetime

    from twin.clock import Clock

    path = tmp_path / "b.yaml"
    path.write_text(
        "bench: t\nclock: wall\ntimezone: Europe/London\nequipment:\n"
        "  gas: {type: gas_dispenser, driver: alicat_gas, config: {port: /dev/ttyUSB0}}\n"
    )
    london = load_bench(path).zone
    assert load_bench(ROOT / "benches" / "sim.yaml").model.timezone == "UTC"  # the default

    async def dates() -> tuple[date, date]:
        start = datetime(2027, 7, 1, 23, 30, tzinfo=UTC)  # 00:30 BST on 2 July
        return Clock(start, zone=london).batch_date(), Clock(start).batch_date()

    assert asyncio.run(dates()) == (date(2027, 7, 2), date(2027, 7, 1))
