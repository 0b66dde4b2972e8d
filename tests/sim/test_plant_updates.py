"""The plant's update rate: requests within one second share one bag step, and no time is lost."""

from __future__ import annotations

import pytest

from twin.sim import Plant

HOUR = 3600.0


def test_requests_within_one_second_see_the_same_bag_state() -> None:
    plant = Plant(seed=3)
    plant.advance_to(2 * HOUR)
    first = plant.bioreactor.state.viable_cells
    steps = plant.bioreactor.t
    for t in (2 * HOUR + 0.02, 2 * HOUR + 0.4, 2 * HOUR + 0.99):
        plant.advance_to(t)
        assert plant.bioreactor.state.viable_cells == first
        assert plant.bioreactor.t == steps
    assert plant.t == pytest.approx(2 * HOUR + 0.99)


def test_sub_second_requests_lose_no_time() -> None:
    chunked, whole = Plant(seed=3), Plant(seed=3)
    t = 0.0
    while t < 6 * HOUR:
        t += 0.37
        chunked.advance_to(t)
    whole.advance_to(t)
    assert chunked.bioreactor.t == whole.bioreactor.t == pytest.approx(int(t))
    assert chunked.bioreactor.state.viable_cells == pytest.approx(
        whole.bioreactor.state.viable_cells, rel=1e-3
    )


def test_gas_lines_follow_the_exact_time() -> None:
    plant = Plant(seed=3)
    mfc = plant.gas.mfcs["A"]
    mfc.setpoint_sccm = 100.0
    plant.advance_to(0.5)
    assert mfc.flow_sccm == pytest.approx(100.0, rel=1e-3)
    assert plant.bioreactor.t == 0.0
