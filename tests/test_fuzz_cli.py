"""Property-based fuzzing of the command line (issue 18): every command and option of
`poc-twin` given abusive values (markup, very long strings, control characters, non-ASCII,
directories, /dev/null, files that are not what the option wants, inf/nan/1e999/-0/huge
numbers, empty strings, values that look like options).

Invariants, for every call: no Python traceback; an exit code CLI.md documents (0-5); a
command that would start something long (run, twin serve, control-site serve/broker/
simulate-fleet, resume) is refused with exit 2 by a bad value before anything starts; and
nothing is written outside the example's own temporary directory (the cwd is inside it,
HOME points into it, the repository and /dev/null are unchanged).

In-process with typer's CliRunner (fast), plus a few real processes at the end. Derandomized
and bounded: FUZZ_EXAMPLES (default 25 per property) and FUZZ_RANDOM=1 for a longer hunt
(docs/bad-input.md). Every finding is a plain regression test below the properties.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from twin.cli import app

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "smoke.yaml"
SIM = ROOT / "benches" / "sim.yaml"
POC_TWIN = str(Path(sys.executable).with_name("poc-twin"))
DOCUMENTED_EXITS = {0, 1, 2, 3, 4, 5}  # CLI.md

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")),
    deadline=None,  # an example may replay a batch (~0.5 s); a hang fails the run's timeout
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

cli = CliRunner()

# --- values ------------------------------------------------------------------------------

MARKUP = ["[/]", "[/]x", "[bold]x", "[link=file:///etc/passwd]x[/link]", "[red"]
NUMBERS = [
    "inf", "-inf", "nan", "NaN", "1e999", "-1e999", "-0", "0", "-1", "1e-400", "0x10",
    "1_000", "99999999999999999999999999", "-99999999999999999999999999", "１０", "٣", "",
]  # fmt: skip
OPTION_LIKE = ["--help", "-q", "--debug", "--journal", "-o", "--", "-", "--=x"]
LONG = ["a" * 300, "é" * 200, "x" * 5000, "漢" * 100]
CONTROL = ["\x01", "x\x1by", "\x7f", "a\nb", "a\rb", "\t", "x\x08\x08"]
WEIRD = ["", " ", "..", ".", "~", "$HOME", "*", "'", '"', "\\", "%s%n", "\u202e", "\ufeffx"]

#: Text that never names a path outside the cwd's parents (no "/"): names, ids, reasons.
free_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00/"),
    max_size=40,
)
abusive_text = st.one_of(
    st.sampled_from(MARKUP + NUMBERS + OPTION_LIKE + LONG + CONTROL + WEIRD), free_text
)
abusive_number = st.one_of(
    st.sampled_from(NUMBERS + MARKUP + OPTION_LIKE[:3]),
    st.floats().map(repr),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
)

#: Files and directories of the workspace (see ``workspace``), relative to its cwd.
PATHS = [
    "adir",
    "adir/",
    ".",
    "..",
    "",
    "notes.txt",
    "notes.txt/x",
    "empty.sqlite",
    "foreign.sqlite",
    "journal.sqlite",
    "[/]x.sqlite",
    "missing.sqlite",
    "newdir/new.sqlite",
    "smoke.yaml",
    "sim.yaml",
    "/dev/null",
    "a" * 300,
    "é" * 200 + ".sqlite",
    "x\x01y",
    "-q",
    "--help",
]
abusive_path = st.one_of(st.sampled_from(PATHS), abusive_text)
#: A path a command would read: never the valid recipe or bench (those start things).
BAD_INPUT_FILES = [p for p in PATHS if p not in ("smoke.yaml", "sim.yaml", "--help")]

# --- the workspace -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workspace, copied for every example: files of every wrong kind and a real journal."""
    base = tmp_path_factory.mktemp("cli-fuzz-template")
    cwd = base / "a" / "b"
    (cwd / "adir").mkdir(parents=True)
    (base / "home").mkdir()
    (cwd / "notes.txt").write_text("shift handover notes\n")
    for secret, text in (("pw.txt", "long-enough\n"), ("empty-pw.txt", "")):
        (cwd / secret).write_text(text)
        (cwd / secret).chmod(0o600)
    (cwd / "empty.sqlite").write_bytes(b"")
    with contextlib.closing(sqlite3.connect(cwd / "foreign.sqlite")) as db:
        db.execute("CREATE TABLE stock (item TEXT)")
        db.commit()
    shutil.copy(SMOKE, cwd / "smoke.yaml")
    shutil.copy(SIM, cwd / "sim.yaml")
    for name in ("creds-bad", "creds-nosim"):
        (cwd / name).mkdir()
    (cwd / "creds-bad" / "credentials.json").write_text("{not json")
    (cwd / "creds-nosim" / "credentials.json").write_text('{"control": "pw"}')
    journal = base / "made.sqlite"
    made = cli.invoke(
        app, ["run", str(SMOKE), "--bench", str(SIM), "--journal", str(journal), "-q"]
    )
    assert made.exit_code == 0, made.output
    shutil.copy(journal, cwd / "journal.sqlite")
    (cwd / "[").mkdir()  # so that "[/]x.sqlite" names a journal: markup in a path
    shutil.copy(journal, cwd / "[/]x.sqlite")
    journal.unlink()
    return base


def listing(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size; SQLite's -wal/-shm beside a journal ignored
    (readers open a WAL journal read-only, and SQLite keeps its index there)."""
    found: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if name.endswith(("-wal", "-shm")):
                continue
            found[str(path.relative_to(root))] = -1 if path.is_dir() else path.lstat().st_size
    return found


def outside() -> tuple[list[str], list[str], int]:
    """What must never change: the repository's top level and runs/, and /dev/null."""
    runs = ROOT / "runs"
    return (
        sorted(os.listdir(ROOT)),
        sorted(os.listdir(runs)) if runs.is_dir() else [],
        os.stat("/dev/null").st_mode,
    )


@contextlib.contextmanager
def workspace(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh copy of the template; the cwd is its a/b (so '..' and '../..' stay inside)."""
    root = tmp_path_factory.mktemp("cli-fuzz", numbered=True)
    shutil.rmtree(root)
    shutil.copytree(template, root)
    try:
        with contextlib.chdir(root / "a" / "b"):
            yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def invoke(root: Path, argv: list[str]) -> tuple[int, str]:
    """Run ``poc-twin argv`` in-process; assert no traceback and a documented exit code."""
    env = {
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "home" / ".config"),
        "POC_TWIN_SITE_KEY": None,
        "POC_TWIN_BROKER": None,
        "POC_TWIN_SITE": None,
        "COLUMNS": "100",
    }
    result = cli.invoke(app, argv, env=env)
    shown = repr(argv)[:400]
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        raise AssertionError(f"{shown}: {type(exc).__name__}: {exc}") from exc
    assert "Traceback" not in result.output, (shown, result.output[-2000:])
    assert result.exit_code in DOCUMENTED_EXITS, (shown, result.exit_code, result.output)
    return result.exit_code, result.output


def check(
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    argv: list[str],
    *,
    refused: bool = False,
) -> int:
    """One call with every invariant; ``refused``: exit 2 (or help), the workspace unchanged."""
    before_outside = outside()
    with workspace(template, tmp_path_factory) as root:
        before = listing(root)
        code, output = invoke(root, argv)
        if refused:
            helped = code == 0 and "--help" in argv and "Usage" in output
            assert code == 2 or helped, (argv, code, output)
            assert listing(root) == before, (argv, output)
    assert outside() == before_outside, argv
    return code


def options(draw: st.DrawFn, table: dict[str, st.SearchStrategy[str] | None]) -> list[str]:
    """Some of ``table``'s options, each with a drawn value (None: a flag)."""
    argv: list[str] = []
    for name, values in table.items():
        if draw(st.booleans()):
            argv += [name] if values is None else [name, draw(values)]
    return argv


# --- properties --------------------------------------------------------------------------

journal_arg = st.one_of(st.sampled_from(PATHS), abusive_text)
signature_options: dict[str, st.SearchStrategy[str] | None] = {
    "--public-key": abusive_path,
    "--anchor": abusive_path,
}


@FUZZ
@given(data=st.data())
def test_journal_readers_never_crash(
    template: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    draw = data.draw
    which = draw(st.sampled_from(["verify", "report", "export", "qc", "anchor", "replay"]))
    journal = draw(journal_arg)
    if which == "verify":
        argv = ["verify", journal, *options(draw, signature_options)]
    elif which == "report":
        argv = ["report", journal, *options(draw, {"-o": abusive_path, **signature_options})]
    elif which == "export":
        formats = st.one_of(st.sampled_from(["json", "csv", "trends-csv"]), abusive_text)
        argv = ["export", journal, *options(draw, {"--format": formats, "-o": abusive_path})]
    elif which == "qc":
        tests = st.sampled_from(["cd3", "car", "viability", "endotoxin", "vcn", "x", "[/]", ""])
        result = st.one_of(st.tuples(tests, abusive_number).map("=".join), abusive_text)
        argv = ["qc", journal]
        for value in draw(st.lists(result, min_size=1, max_size=3)):
            argv += ["--result", value]
        argv += ["--operator", draw(abusive_text), "--reason", draw(abusive_text)]
        argv += options(draw, {"--lab-ref": abusive_text, "--site-key": abusive_path})
    elif which == "anchor":
        argv = ["site", "anchor", journal]
    else:
        argv = ["replay", journal, *options(draw, {"--recipe": abusive_path})]
    check(template, tmp_path_factory, argv)


@FUZZ
@given(data=st.data())
def test_commands_to_a_batch_never_crash(
    template: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    draw = data.draw
    batch = draw(st.one_of(st.sampled_from(PATHS), abusive_text))
    people = ["--operator", draw(abusive_text), "--reason", draw(abusive_text)]
    which = draw(st.sampled_from(["command", "identity", "lot"]))
    if which == "command":
        actions = ["pause", "resume", "hold", "restart", "stop", "abort", "start", "reset"]
        action = draw(st.one_of(st.sampled_from(actions), abusive_text))
        argv = ["command", batch, action, *people, *options(draw, {"--level": abusive_text})]
    elif which == "identity":
        ids = ["--patient-id", draw(abusive_text), "--bag-id", draw(abusive_text)]
        argv = ["confirm-identity", batch, *ids, *people]
    else:
        material = draw(st.one_of(st.sampled_from(["vector", "il2"]), abusive_text))
        label = st.one_of(st.just("(01)09506000134352(17)301231(10)LV-1"), abusive_text)
        argv = ["scan-lot", batch, "--material", material, *people]
        argv += options(draw, {"--gs1": label, "--lot": abusive_text, "--expiry": abusive_text})
    check(template, tmp_path_factory, argv)


@FUZZ
@given(data=st.data())
def test_recipes_benches_and_keys_never_crash(
    template: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    draw = data.draw
    which = draw(st.sampled_from(["validate", "bench", "keygen", "add-user", "top"]))
    if which == "validate":
        param = st.one_of(
            st.tuples(st.sampled_from(["vector", "x", "", "[/]"]), abusive_text).map("=".join),
            abusive_text,
        )
        argv = ["validate", draw(abusive_path)]
        argv += options(draw, {"--bench": abusive_path, "--param": param})
    elif which == "bench":
        argv = ["bench", "check", *options(draw, {"--bench": abusive_path})]
    elif which == "keygen":
        argv = ["site", "keygen", draw(abusive_text)]
        argv += options(draw, {"--dir": abusive_path, "--force": None})
    elif which == "add-user":
        argv = ["control-site", "add-user", draw(abusive_path), draw(abusive_text)]
        argv += ["--password-file", draw(st.one_of(abusive_path, st.just("pw.txt")))]
    else:  # whatever a user types after poc-twin
        argv = draw(st.lists(st.one_of(abusive_text, st.sampled_from(PATHS)), max_size=4))
    check(template, tmp_path_factory, argv)


def refusal(draw: st.DrawFn, choices: dict[str, st.SearchStrategy[list[str]]]) -> list[str]:
    """One option (or argument) whose value must be refused before anything starts."""
    return draw(st.sampled_from(sorted(choices)).flatmap(lambda key: choices[key]))


def opt(name: str, values: list[str] | st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    strategy = st.sampled_from(values) if isinstance(values, list) else values
    return strategy.map(lambda value: [name, value])


UNSAFE_IDS = MARKUP + LONG + CONTROL + ["", " ", "..", ".hidden", "a/b", "/tmp/x", "../../x", "é"]
BAD_PACE = ["0", "-0", "-1", "0.5", "1e-300", "nan", "inf", "1e999", "86401", "x", ""]
BAD_PORTS = ["-1", "65536", "99999999999", "nan", "x", "", "1e3"]
BAD_BROKERS = [
    "[/]",
    "",
    "http://127.0.0.1",
    "mqtt://",
    "mqtt://127.0.0.1:abc",
    "mqtt://127.0.0.1:99999",
    "mqtt://[::1",
    "mqtt://u:p@127.0.0.1:1/?unit=[/]",
]


@FUZZ
@given(data=st.data())
def test_run_is_refused_before_it_starts(
    template: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    draw = data.draw
    recipe = draw(st.sampled_from(["smoke.yaml", *BAD_INPUT_FILES]))
    argv = ["run", recipe]
    argv += options(
        draw,
        {
            "--bench": st.sampled_from(["sim.yaml", *BAD_INPUT_FILES]),
            "--seed": abusive_number,
            "--operator": abusive_text,
            "--broker": st.sampled_from([*BAD_BROKERS, "mqtt://u:p@127.0.0.1:1"]),
            "--site": abusive_text,
            "--site-key": abusive_path,
            "--patient-id": abusive_text,
            "--bag-id": abusive_text,
            "--param": abusive_text,
            "-q": None,
        },
    )
    argv += refusal(
        draw,
        {
            "batch-id": opt("--batch-id", UNSAFE_IDS),
            "journal": opt("--journal", ["adir", "notes.txt", "foreign.sqlite", "/dev/null",
                                         "journal.sqlite", ".", "a" * 300, "notes.txt/x"]),
            "pace": opt("--pace", BAD_PACE),
            "seed": opt("--seed", ["nan", "1e999", "x", "", "1.5", "[/]"]),
            "param": opt("--param", ["x", "=x", " =1", ""]),
        },
    )  # fmt: skip
    check(template, tmp_path_factory, argv, refused=True)


@FUZZ
@given(data=st.data())
def test_long_running_commands_are_refused_before_they_start(
    template: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """resume, twin serve and the control site's servers: only with a value to refuse."""
    draw = data.draw
    which = draw(st.sampled_from(["resume", "twin", "serve", "broker", "fleet"]))
    if which == "resume":  # every journal here has ended, or is not one
        argv = ["resume", draw(st.sampled_from(BAD_INPUT_FILES))]
        argv += options(
            draw,
            {
                "--restart": None,
                "--operator": abusive_text,
                "--reason": abusive_text,
                "--site-key": abusive_path,
                "-q": None,
                "--pace": abusive_number,
            },
        )
        check(template, tmp_path_factory, argv)
        return
    if which == "twin":
        argv = ["twin", "serve"]
        argv += options(
            draw,
            {
                "--scenario": abusive_path,
                "--seed": abusive_number,
                "--host": st.sampled_from(["127.0.0.1", "::1", "[/]", "", "a" * 300]),
            },
        )
        argv += refusal(
            draw,
            {
                "bench": opt("--bench", BAD_INPUT_FILES),
                "port": opt("--modbus-port", BAD_PORTS),
            },
        )
    elif which == "serve":
        argv = ["control-site", "serve"]
        argv += options(
            draw,
            {
                "--broker": st.sampled_from([*BAD_BROKERS, "mqtt://u:p@127.0.0.1:1"]),
                "--db": abusive_path,
                "--users": abusive_path,
                "--site-keys": abusive_path,
            },
        )
        bad_http = [":x", "127.0.0.1:99999", "[/]:80", "a b:1", "host:", "1.2.3.4:-1", "é:80",
                    "x" * 300 + ":1", "127.0.0.1:８０"]  # fmt: skip
        argv += refusal(
            draw,
            {
                "http": opt("--http", bad_http),
                "refresh": opt("--refresh-s", ["0", "-1", "nan", "inf", "1e999", "x"]),
                "broker": opt("--broker", BAD_BROKERS),
            },
        )
    elif which == "broker":
        argv = ["control-site", "broker", draw(st.sampled_from(["adir", "newdir"]))]
        argv += options(
            draw,
            {"--hostname": abusive_text, "--tls-port": abusive_number, "--site": abusive_text},
        )
        argv += refusal(
            draw,
            {
                "site": opt("--site", UNSAFE_IDS),
                "control": opt("--control-user", UNSAFE_IDS),
                "bind": opt("--bind", ["[/]", "", "a b", "127.0.0.1\nplugin x", "x" * 300]),
                "port": opt("--port", [*BAD_PORTS, "0"]),
            },
        )
        if "--site" not in argv[3:-2]:
            argv += ["--site", draw(st.sampled_from(UNSAFE_IDS))]
    else:
        argv = ["control-site", "simulate-fleet"]
        argv.append(draw(st.sampled_from(["adir", "creds-bad", "creds-nosim", *BAD_INPUT_FILES])))
        argv += ["--journal", draw(st.sampled_from(["journal.sqlite", *BAD_INPUT_FILES]))]
        argv += options(
            draw,
            {
                "--sites": abusive_number,
                "--rate": abusive_number,
                "--processes": abusive_number,
                "--keys": abusive_path,
                "--host": abusive_text,
                "--port": abusive_number,
                "--out-dir": abusive_path,
            },
        )
    check(template, tmp_path_factory, argv, refused=True)


# --- findings: regression tests ----------------------------------------------------------

Case = tuple[str, list[str], int]

#: What fuzzing found (each a traceback, or a refusal after something was written or with
#: the wrong code), now refused or answered in one line. (id, argv, expected exit).
FINDINGS: list[Case] = [
    ("verify-long-name", ["verify", "a" * 5000], 1),
    ("report-long-name", ["report", "x" * 300], 1),
    ("replay-long-name", ["replay", "x" * 300], 1),
    ("resume-long-name", ["resume", "x" * 300, "--operator", "a", "--reason", "b"], 2),
    ("command-long-name", ["command", "x" * 300, "hold", "--operator", "a", "--reason", "b"], 2),
    ("run-journal-long-name", ["run", "smoke.yaml", "--journal", "é" * 200 + "/x", "-q"], 2),
    ("run-broker-port-text", ["run", "smoke.yaml", "--journal", "n.sqlite", "--broker",
                              "mqtt://127.0.0.1:abc"], 2),
    ("run-broker-port-range", ["run", "smoke.yaml", "--journal", "n.sqlite", "--broker",
                               "mqtt://127.0.0.1:99999"], 2),
    ("run-broker-bad-ipv6", ["run", "smoke.yaml", "--journal", "n.sqlite", "--broker",
                             "mqtt://[::1"], 2),
    ("report-output-directory", ["report", "journal.sqlite", "-o", "adir"], 2),
    ("report-output-long-name", ["report", "journal.sqlite", "-o", "x" * 300], 2),
    ("export-output-directory", ["export", "journal.sqlite", "-o", "."], 2),
    ("export-output-long-name", ["export", "journal.sqlite", "-o", "é" * 200], 2),
    ("verify-binary-anchors", ["verify", "journal.sqlite", "--anchor", "foreign.sqlite"], 1),
    ("report-binary-anchors", ["report", "journal.sqlite", "--anchor", "foreign.sqlite"], 1),
    ("verify-markup-in-path", ["verify", "[/]x.sqlite"], 0),
    ("report-markup-in-path", ["report", "[/]x.sqlite", "-o", "[/]x.html"], 0),
    ("keygen-long-name", ["site", "keygen", "a" * 300, "--dir", "adir"], 2),
    ("keygen-dir-is-a-file", ["site", "keygen", "lyon", "--dir", "notes.txt"], 2),
    ("keygen-markup-dir", ["site", "keygen", "lyon", "--dir", "[/]"], 0),
    ("keygen-unsafe-site", ["site", "keygen", "a\nb", "--dir", "adir"], 2),
    ("add-user-directory", ["control-site", "add-user", "adir", "kim",
                            "--password-file", "pw.txt"], 2),
    ("add-user-dev-null", ["control-site", "add-user", "/dev/null", "kim",
                           "--password-file", "pw.txt"], 2),
    ("add-user-line-injection", ["control-site", "add-user", "users", "kim\nroot:scrypt:00:00",
                                 "--password-file", "pw.txt"], 2),
    ("add-user-empty-password", ["control-site", "add-user", "users", "kim",
                                 "--password-file", "empty-pw.txt"], 2),
    ("add-user-markup-path", ["control-site", "add-user", "[/]", "kim",
                              "--password-file", "pw.txt"], 0),
    ("serve-http-port-text", ["control-site", "serve", "--broker", "mqtt://u:p@127.0.0.1:1",
                              "--http", "localhost:abc"], 2),
    ("serve-http-port-range", ["control-site", "serve", "--broker", "mqtt://u:p@127.0.0.1:1",
                               "--http", "127.0.0.1:99999"], 2),
    ("serve-refresh-nan", ["control-site", "serve", "--broker", "mqtt://u:p@127.0.0.1:1",
                           "--refresh-s", "nan"], 2),
    ("serve-bad-broker", ["control-site", "serve", "--broker", "[/]"], 2),
    ("serve-db-markup", ["control-site", "serve", "--broker", "[/]", "--db", "[/]"], 2),
    ("broker-dir-is-a-file", ["control-site", "broker", "notes.txt", "--site", "a"], 2),
    ("broker-acl-injection", ["control-site", "broker", "adir", "--site", "a",
                              "--control-user", "x\ntopic readwrite #"], 2),
    ("broker-config-injection", ["control-site", "broker", "adir", "--site", "a",
                                 "--bind", "127.0.0.1\nplugin /tmp/x.so"], 2),
    ("broker-port-range", ["control-site", "broker", "adir", "--site", "a", "--port", "0"], 2),
    ("fleet-no-credentials", ["control-site", "simulate-fleet", "adir", "--journal",
                              "journal.sqlite"], 2),
    ("fleet-bad-credentials", ["control-site", "simulate-fleet", "creds-bad", "--journal",
                               "journal.sqlite"], 2),
    ("fleet-rate-nan", ["control-site", "simulate-fleet", "creds-nosim", "--journal",
                        "journal.sqlite", "--rate", "nan"], 2),
    ("fleet-no-sites", ["control-site", "simulate-fleet", "creds-nosim", "--journal",
                        "journal.sqlite", "--sites", "0"], 2),
]  # fmt: skip


@pytest.mark.parametrize(("name", "argv", "code"), FINDINGS, ids=[f[0] for f in FINDINGS])
def test_finding_is_answered_in_one_line(
    template: Path, tmp_path_factory: pytest.TempPathFactory, name: str, argv: list[str], code: int
) -> None:
    before_outside = outside()
    with workspace(template, tmp_path_factory) as root:
        before = listing(root)
        got, output = invoke(root, argv)
        assert got == code, output
        if code == 2:  # refused: nothing written, one line
            assert listing(root) == before, output
            assert len(output.strip().splitlines()) <= 6, output  # usage errors are boxed
    assert outside() == before_outside
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# --- real processes ----------------------------------------------------------------------

PROCESS_CASES: list[tuple[list[str | bytes], set[int]]] = [
    (["verify", b"\xff\xfe.sqlite"], {1}),  # not UTF-8: argv arrives with surrogates
    (["report", "journal.sqlite", "-o", b"\xff.html"], {0}),
    (["site", "keygen", b"site\xff", "--dir", "adir"], {2}),
    (["command", "x" * 5000, "hold", "--operator", "a", "--reason", "b"], {2}),
    (["control-site", "serve", "--broker", "mqtt://u:p@127.0.0.1:1", "--http", ":x"], {2}),
    (["run", "smoke.yaml", "--batch-id", "[/]" + "x" * 300, "-q"], {2}),
    (["twin", "serve", "--bench", "notes.txt"], {2}),
    (["verify", "journal.sqlite", "--anchor", "/dev/null"], {0}),
]


@pytest.mark.parametrize(("argv", "codes"), PROCESS_CASES, ids=lambda v: repr(v)[:40])
def test_real_processes_never_print_a_traceback(
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    argv: list[str | bytes],
    codes: set[int],
) -> None:
    with workspace(template, tmp_path_factory) as root:
        before = listing(root)
        env = {**os.environ, "HOME": str(root / "home"), "PYTHONIOENCODING": "utf-8"}
        for key in ("POC_TWIN_SITE_KEY", "POC_TWIN_BROKER", "POC_TWIN_SITE"):
            env.pop(key, None)
        done = subprocess.run(
            [POC_TWIN.encode(), *[a.encode() if isinstance(a, str) else a for a in argv]],
            capture_output=True,
            timeout=60,
            env=env,
        )
        said = (done.stdout + done.stderr).decode("utf-8", "replace")
        assert "Traceback" not in said, said
        assert done.returncode in codes, (done.returncode, said)
        if 2 in codes:
            assert listing(root) == before
