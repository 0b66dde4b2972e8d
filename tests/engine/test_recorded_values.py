"""Readings as the journal keeps them: floats to six decimals, whatever remembers them."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest

from twin.engine.context import as_record, check_numbers, recorded_pair
from twin.equipment import BioreactorPV
from twin.errors import EquipmentError


def test_remembered_rounding_is_round_to_six_decimals() -> None:
    rng = random.Random(5)
    values = [struct.unpack(">f", struct.pack(">f", rng.uniform(-500, 500)))[0] for _ in range(500)]
    values += [rng.uniform(0, 1e7) for _ in range(500)] + [1e-7, -1e-7, 2.5e-7, math.inf]
    for _ in range(2):  # the second pass answers from what the first remembered
        for x in values:
            assert json.dumps(as_record(x)) == json.dumps(round(x, 6))
            assert recorded_pair({"x": x}) == ({"x": round(x, 6)}, {"x": round(x, 6)})


def test_zeros_keep_their_sign_and_nan_stays_nan() -> None:
    for _ in range(2):
        assert json.dumps([as_record(0.0), as_record(-0.0), as_record(-1e-9)]) == (
            "[0.0, -0.0, -0.0]"
        )
        assert math.isnan(as_record(math.nan))


def test_a_reading_is_rebuilt_from_its_rounded_floats() -> None:
    pv = BioreactorPV(37.0400009, 37.0, 47.900002, 7.707, 103.0, 10.0, 0.0, 9.8e5, 2880, 2)
    recorded, record = recorded_pair(pv)
    assert recorded.temperature_c == 37.040001 and record["do_pct"] == 47.900002
    assert record == {k: round(v, 6) if isinstance(v, float) else v for k, v in vars(pv).items()}


def test_an_answer_with_no_number_is_refused_naming_each_value() -> None:
    """Anywhere in the answer: a gas line's flow as much as a bioreactor's reading."""
    from twin.equipment import Gas, GasDispenserPV

    flows = {Gas.O2: 1.0, Gas.N2: math.nan, Gas.CO2: 2.0, Gas.AIR: 0.0}
    gas = GasDispenserPV(mass_flow_sccm=flows, setpoint_sccm={**flows, Gas.N2: -math.inf})
    with pytest.raises(EquipmentError) as raised:
        check_numbers("gas", "pv", recorded_pair(gas)[1])
    assert raised.value.device == "gas"
    assert "mass_flow_sccm.n2 nan, setpoint_sccm.n2 -inf" in str(raised.value)
    pv = BioreactorPV(math.inf, 37.0, 47.9, 7.2, 103.0, 10.0, 0.0, 9.8e5, 2880, 2)
    with pytest.raises(EquipmentError, match=r"temperature_c inf .*the rest read .*ph 7\.2"):
        check_numbers("bioreactor", "pv", recorded_pair(pv)[1])
    for fine in ({"a": 1.0, "b": [2.0]}, 3.0, None, "text", {"a": {"b": 1e308}}):
        check_numbers("x", "y", fine)
    with pytest.raises(EquipmentError, match=r"pulses\[1\]\.kv inf"):
        check_numbers("ep", "pulse", {"pulses": [{"kv": 1.0}, {"kv": math.inf}]})
    with pytest.raises(EquipmentError, match="value nan"):
        check_numbers("bioreactor", "harvest", math.nan)
