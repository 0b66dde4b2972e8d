"""Malformed recipe files: each a clear FILE:LINE:COL and exit 2, within a second, never a
traceback, a hang or unbounded memory (issue 18). Generated, not hand-picked: every byte
value, encodings, nesting depths, alias bombs, overlong numbers and non-finite values."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin.cli import app
from twin.errors import InvalidInput
from twin.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
SMOKE = (ROOT / "recipes" / "smoke.yaml").read_text()
cli = CliRunner()
PROBLEM = re.compile(r"^\S+:\d+:\d+: .+", re.M)


def refused(tmp_path: Path, content: bytes | str, name: str = "bad.yaml") -> str:
    """Validate the file from the command line: exit 2, every line FILE:LINE:COL, fast."""
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(content)
    started = time.monotonic()
    result = cli.invoke(app, ["validate", str(path)], catch_exceptions=False)
    assert time.monotonic() - started < 2.0
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and all(PROBLEM.match(line) for line in lines), result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("byte", [*range(0, 9), 11, 12, *range(14, 32), 127])
def test_a_control_character_anywhere_is_named_with_its_line(tmp_path: Path, byte: int) -> None:
    lines = SMOKE.splitlines(keepends=True)
    lines[6] = lines[6][:10] + chr(byte) + lines[6][10:]
    out = refused(tmp_path, "".join(lines).encode())
    assert ":7:11: control character" in out


ESCAPES = [
    *(f"\\x{b:02x}" for b in [*range(0, 9), 11, 12, *range(14, 32), *range(0x7F, 0xA0)]),
    "\\e[2J",  # clears the screen of whoever validates it
    "\\a",
    "\\0",
    "\\u202e",  # right-to-left override
    "\\u2066",
    "\\u200f",
    "\\U0000202A",
]


@pytest.mark.parametrize("escape", ESCAPES)
def test_a_control_character_written_as_an_escape_is_named_with_its_line(
    tmp_path: Path, escape: str
) -> None:
    """The text passes the byte check, but the double-quoted value decodes to a terminal
    escape or a bidirectional control: refused at its value, for a product name (shown on
    every console, report and dashboard) as for a key."""
    value = f'  product: "Smoke{escape}[31mRED"\n'
    lines = SMOKE.splitlines(keepends=True)
    assert lines[3].startswith("  product:")
    lines[3] = value
    out = refused(tmp_path, "".join(lines))
    assert ":4:12: control character U+" in out and "in a value" in out, out
    lines[3] = f'  "prod{escape}uct": Smoke\n'
    assert ":4:3: control character U+" in refused(tmp_path, "".join(lines))


@pytest.mark.parametrize("char", ["\u202e", "\u2067", "\u200e", "\x9b", "\x85"])
def test_a_bidirectional_or_c1_control_in_the_text_is_refused_even_in_a_comment(
    tmp_path: Path, char: str
) -> None:
    """A comment that reorders what a reviewer sees (Trojan Source) or a C1 control that a
    terminal reads as an escape: named at its line and column like a C0 control."""
    lines = SMOKE.splitlines(keepends=True)
    lines[0] = lines[0][:10] + char + lines[0][10:]
    assert ":1:11: control character" in refused(tmp_path, "".join(lines))


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (SMOKE.encode("utf-16"), "not UTF-8"),
        (SMOKE.encode("utf-16-le"), "not UTF-8"),
        (
            SMOKE.encode("latin-1").replace(b"Commissioning", b"Comm\xe9ssioning"),
            ":4:16: not UTF-8",
        ),
        (bytes(range(256)) * 8, "not UTF-8"),
        (b"\x00" * 4096, "not UTF-8"),
        (SMOKE.encode()[:300] + b"\x00" + SMOKE.encode()[300:], "control character"),
        (SMOKE.encode()[:200] + b"\xed\xa0\x80" + SMOKE.encode()[200:], "not UTF-8"),  # surrogate
        (b"", "expected a mapping"),
        (b"- a\n- b\n", "expected a mapping"),
        (b"recipe: [unclosed\n", "YAML syntax"),
    ],
)
def test_bytes_that_are_not_a_recipe(tmp_path: Path, content: bytes, expect: str) -> None:
    assert expect in refused(tmp_path, content)


@pytest.mark.parametrize("depth", [65, 900, 20_000])
def test_deep_nesting_is_refused_before_it_is_built(tmp_path: Path, depth: int) -> None:
    for text in ("a: " + "[" * depth + "]" * depth, "a: " + "{b: " * depth + "1" + "}" * depth):
        assert "nested more than 64 levels" in refused(tmp_path, text)


def test_a_billion_laughs_is_refused_at_its_first_alias(tmp_path: Path) -> None:
    bomb = ['lol0: &l0 "lol"'] + [
        f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 12)
    ]
    out = refused(tmp_path, "\n".join(bomb) + "\n")
    assert ":2:" in out and "aliases" in out


@pytest.mark.parametrize("digits", [31, 400, 5000])
def test_an_overlong_integer_is_out_of_range(tmp_path: Path, digits: int) -> None:
    text = SMOKE.replace("volume_ml: 2.0", "volume_ml: " + "9" * digits)
    assert "out of range" in refused(tmp_path, text)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e999", "1e999 mL", "-1e999 mL"])
def test_non_finite_numbers_are_refused_where_they_stand(tmp_path: Path, value: str) -> None:
    text = SMOKE.replace("volume_ml: 2.0", f"volume_ml: {value}")
    out = refused(tmp_path, text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if f"volume_ml: {value}" in s)
    assert f":{line}:" in out


def test_markup_in_a_product_name_is_printed_as_text(tmp_path: Path) -> None:
    path = tmp_path / "markup.yaml"
    path.write_text(SMOKE.replace("Commissioning smoke test", "Smoke [/] [bold]x[/bold]"))
    result = cli.invoke(app, ["validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 0 and "Smoke [/] [bold]x[/bold]" in result.output


def test_a_file_over_a_mebibyte_is_not_read(tmp_path: Path) -> None:
    assert "larger than 1024 KiB" in refused(tmp_path, SMOKE + "#" * (1024 * 1024) + "\n")


def test_the_shipped_recipes_still_load() -> None:
    for path in (ROOT / "recipes").glob("*.yaml"):
        try:
            load_recipe(path)
        except InvalidInput as exc:  # only missing batch parameters may be asked for
            assert all("--param" in p.message for p in exc.problems), exc.problems


@pytest.mark.parametrize("value", ["[]", "{}", "[a, b]", "{x: 1}"])
@pytest.mark.parametrize(
    ("old", "line"), [("operation: conditioning", 17), ("phase: set_rocking", 19)]
)
def test_a_name_or_phase_type_that_is_not_text_is_a_problem(
    tmp_path: Path, value: str, old: str, line: int
) -> None:
    """Found by fuzzing: `operation: []` and `phase: []` were unhashable-type TypeErrors."""
    key = old.split(":")[0]
    text = SMOKE.replace(old, f"{key}: {value}", 1)
    assert f":{line}:" in refused(tmp_path, text)


@pytest.mark.parametrize(
    ("declared", "expect"),
    [
        ("gas: {type: gas_dispenser, on_stop: control}", "gas dispenser is made safe at a stop"),
        ("electroporator: {type: electroporator, on_hold: control}", "no control loop to keep"),
        ("gas: {type: gas_dispenser, on_hold: keep}", "on_hold"),
        ("gas: {type: gas_dispenser, on_abort: control}", "on_abort"),
        ("gas: {type: gas_dispenser, on_hold: }", "on_hold: written but empty"),
        ("gas: {type: gas_dispenser, on_hold: null}", "on_hold: written but empty"),
        ("bioreactor: {type: bioreactor, on_stop: ~}", "on_stop: written but empty"),
        ("gas: {type: gas_dispenser, on_abort: }", "unknown key 'on_abort'"),
    ],
)
def test_what_a_hold_or_stop_may_not_do_to_an_item_is_refused_where_it_is_declared(
    tmp_path: Path, declared: str, expect: str
) -> None:
    """Declarations no batch can honour (gases flowing on after a stopped batch's loops
    ended, control of a chamber that has none) or that name no reaction (written and left
    empty: was taken as not written) are refused at the item's line, before any batch
    starts."""
    name = declared.split(":", 1)[0]
    lines = SMOKE.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip() == "equipment:") + 1
    item = [i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:")]
    if item:  # declared on the recipe's own item, else on one added after "equipment:"
        at = item[0]
        del lines[at]
    lines.insert(at, "  " + declared + "\n")
    out = refused(tmp_path, "".join(lines))
    assert f":{at + 1}:" in out and expect in out


@pytest.mark.parametrize("lot", ['"ACT 1 "', '" ACT-1"', '"A\\tB"', '"   "'])
def test_a_fixed_lot_no_label_can_print_is_refused_at_its_line(tmp_path: Path, lot: str) -> None:
    """A lot with padding or a control character passed validation, and then no scan
    could ever match it: the add phase waited forever. Refused where it is written."""
    old = "{phase: add, material: activator, volume_ml: 2.0}"
    text = SMOKE.replace(old, old[:-1] + f", lot: {lot}}}")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "lot:" in ln)
    out = refused(tmp_path, text)
    assert f":{line}:" in out and "as its label prints it" in out, out


def test_a_key_of_another_phase_type_is_named_as_such(tmp_path: Path) -> None:
    """Not "unknown key 'scan_lot' (did you mean 'scan_lot'?)"."""
    text = SMOKE.replace(
        "{phase: set_rocking, rpm: 10}", "{phase: set_rocking, rpm: 10, scan_lot: true}"
    )
    out = refused(tmp_path, text)
    assert "unknown key 'scan_lot' (a key of another kind of phase or item" in out
    assert "did you mean" not in out


@pytest.mark.parametrize("key", ["on_hold", "on_stop"])
def test_a_reaction_written_and_left_empty_is_refused_at_its_line(tmp_path: Path, key: str) -> None:
    """Block style: `on_hold:` with nothing after it was the default, silently."""
    text = SMOKE.replace(
        "  gas: {type: gas_dispenser}\n", f"  gas:\n    type: gas_dispenser\n    {key}:\n"
    )
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.strip() == f"{key}:")
    out = refused(tmp_path, text)
    assert f":{line}:" in out and f"{key}: written but empty" in out, out
