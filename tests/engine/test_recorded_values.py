"""Readings as the journal keeps them: floats to six decimals, whatever remembers them."""

from __future__ import annotations

import json
import math
import random
import struct

from twin.engine.context import as_record, recorded_pair
from twin.equipment import BioreactorPV


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
