"""Material container labels as a bedside scanner gives them: GS1 lot, expiry and GTIN, and
what is refused before anything reaches the batch."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twin.engine.lots import MATERIALS, parse_gs1, scan_from

#: A lot as GS1 AI 10 allows it (up to 20 characters), kept to what labels print.
LOTS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-./",
    min_size=1,
    max_size=20,
)
#: GS1 YYMMDD years are read in a window around today: keep to the next 40 years.
EXPIRIES = st.dates(min_value=date(2026, 1, 1), max_value=date(2060, 12, 28))
GTIN_13 = st.text(alphabet="0123456789", min_size=12, max_size=12)


def with_check_digit(payload: str) -> str:
    """A GTIN-14 (leading 0) with its GS1 mod-10 check digit."""
    body = "0" + payload
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


@given(lot=LOTS, expiry=EXPIRIES, payload=GTIN_13)
def test_every_label_form_gives_back_its_lot_expiry_and_gtin(
    lot: str, expiry: date, payload: str
) -> None:
    gtin, yymmdd = with_check_digit(payload), expiry.strftime("%y%m%d")
    printed = f"(01){gtin}(17){yymmdd}(10){lot}"
    raw = f"01{gtin}17{yymmdd}10{lot}"  # lot last: no separator needed
    lot_first = f"]C101{gtin}10{lot}\x1d17{yymmdd}"  # a variable field ends with FNC1 (GS)
    for code in (printed, raw, f"]d2{raw}", lot_first):
        assert parse_gs1(code) == (lot, expiry, gtin), code


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("hello", "not a GS1 label"),
        ("(01)09506000134353(10)TA-1", "GTIN is not valid"),  # check digit off by one
        ("(01)09506000134352(17)301231", "has no lot"),
        ("(17)301399(10)TA-1", "not a GS1 label"),  # month 13
        ("", "not a GS1 label"),
    ],
)
def test_a_label_that_cannot_be_trusted_is_refused_with_why(code: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_gs1(code)


def test_a_scan_is_a_label_or_a_lot_keyed_in_never_both_or_neither() -> None:
    assert scan_from("vector", None, " LV-9 ", "2030-01-31").lot == "LV-9"
    assert scan_from("vector", None, "LV-9", "2030-01-31").expiry == date(2030, 1, 31)
    label = scan_from("il2", "(01)09506000134352(17)301231(10)IL-7", "", "")
    assert (label.lot, label.gtin) == ("IL-7", "09506000134352")
    for material, gs1, lot, expiry, why in [
        ("vectr", None, "LV-9", None, "one of " + ", ".join(MATERIALS)),
        ("vector", None, None, None, "or the lot"),
        ("vector", "(10)LV-9", "LV-9", None, "or the lot"),
        ("vector", "(10)LV-9", None, "2030-01-31", "comes from the GS1 label"),
        ("vector", None, "LV-9", "31/01/2030", "is not a date"),
        ("vector", None, "L" * 65, None, "1-64 printable"),
        ("vector", None, "LV\x009", None, "1-64 printable"),
    ]:
        with pytest.raises(ValueError, match=why):
            scan_from(material, gs1, lot, expiry)
