"""The `poc-twin` app, its sub-command groups, consoles, exit codes and shared helpers."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from twin.bench import LoadedBench, load_bench
from twin.errors import InvalidInput
from twin.recipe import LoadedRecipe, load_recipe

app = typer.Typer(
    name="poc-twin",
    help="Run, verify and supervise point-of-care cell-therapy batches on a real or twin bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Commission and inspect benches.", no_args_is_help=True)
twin_app = typer.Typer(help="The digital twin's devices.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(twin_app, name="twin")


@app.callback()
def _printable_output() -> None:
    # A path that is not UTF-8 reaches argv as surrogates (PEP 383); echoing it back, or an
    # odd character from a journal, must never end the command in a UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # one problem, one line: editors parse them

EXIT_OK, EXIT_FAIL, EXIT_INVALID, EXIT_ENDED, EXIT_REFUSED, EXIT_NO_ANSWER = 0, 1, 2, 3, 4, 5
DEFAULT_BENCH = Path("benches/sim.yaml")
_REPO_BENCH = Path(__file__).resolve().parents[2] / "benches" / "sim.yaml"

ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", help="Recipe parameter for this batch, NAME=VALUE (repeatable)"),
]
BenchOpt = Annotated[
    Path | None, typer.Option("--bench", help="Bench file (default: benches/sim.yaml)")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks")]


def _pace(value: float | None) -> float | None:
    """1 (a person's real time) to 86400: slower than the wall, a waiting batch's clock all
    but stops (at 1e-300 no reading in minutes), and nothing is gained by it. None: not
    given (1 on the twin; a bench on the wall's clock takes no pace)."""
    if value is not None and not (1 <= value <= 86400):  # also refuses NaN and inf
        raise typer.BadParameter("from 1 (real time) to 86400 batch seconds per wall second")
    return value


def pace_for(bench: Any, pace: float | None) -> float:
    """The pace a batch on ``bench`` runs at: a given ``--pace`` only on a virtual clock
    (exit 2 on a bench whose clock is the wall's: real equipment keeps real time)."""
    if pace is None:
        return 1.0
    if not bench.virtual_clock:
        raise _fail(
            f"--pace {pace:g}: bench {bench.model.bench} runs on the wall's clock (real "
            "equipment keeps real time); --pace is for the twin; nothing started",
            EXIT_INVALID,
        )
    return pace


PaceOpt = Annotated[
    float | None,
    typer.Option(
        "--pace",
        callback=_pace,
        help="On the twin, batch seconds per wall second while the batch waits on a person "
        "(held, paused, a scan): 1 = real time (the least); e.g. 60 for a demo",
    ),
]


def _fail(message: str, code: int, debug: bool = False) -> typer.Exit:
    if debug:
        raise
    # The message may quote what a user typed ("[/]x"): printed as text, never as markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _existing_folder(target: Path) -> Path:
    """The nearest existing folder-or-file above ``target``: what its folder, once made,
    would be made under (a file there means ``target`` cannot be written at all)."""
    folder = target.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _output_file(target: Path, option: str) -> Path:
    """``target`` if a command may write its output there: never a directory, nor a path
    under a file (exit 2; the write said 'File exists', exit 1)."""
    try:
        is_dir = target.is_dir()
        folder = _existing_folder(target)
        under_a_file = not folder.is_dir()
    except OSError as exc:  # a name too long for the file system
        raise _fail(f"{option} {target}: {exc.strerror}; nothing written", EXIT_INVALID) from None
    if is_dir:
        raise _fail(f"{option} {target} is a directory: name a file; nothing written", EXIT_INVALID)
    if under_a_file:
        raise _fail(
            f"{option} {target}: {folder} is a file, not a folder; nothing written", EXIT_INVALID
        )
    return target


#: The first bytes of every SQLite database: a journal, a users file, a results store.
_SQLITE_HEADER = b"SQLite format 3\x00"


def _text_output(target: Path, option: str, *, given: bool = True) -> Path:
    """``target`` if a command may write a report or an export there: as
    :func:`_output_file` (where the user ``given`` it), and never over an SQLite database (a
    journal, this batch's own or another's, a users file): exit 2, nothing written."""
    if given:
        _output_file(target, option)
    try:
        head = b""
        if target.is_file():  # never opened if a FIFO or a device: it could block
            with target.open("rb") as existing:
                head = existing.read(len(_SQLITE_HEADER))
    except OSError:
        return target  # unreadable: the write itself says why
    if head == _SQLITE_HEADER:
        raise _fail(
            f"{option} {target} is an SQLite database (a journal?), not a report or an "
            "export: name another file; nothing written",
            EXIT_INVALID,
        )
    return target


def _bench_path(bench: Path | None) -> Path:
    if bench is not None:
        return bench
    return DEFAULT_BENCH if DEFAULT_BENCH.exists() else _REPO_BENCH


def _params(values: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"'{item}': write --param NAME=VALUE (e.g. vector=6mL)")
        name, value = name.strip(), value.strip()
        if params.get(name, value) != value:  # which one is meant is not for the order to say
            raise typer.BadParameter(
                f"{name} given twice ({params[name]}, {value}): give each parameter once"
            )
        params[name] = value
    return params


def _load(
    recipe: Path, bench: Path | None, params: dict[str, str] | None = None
) -> tuple[LoadedRecipe, LoadedBench]:
    problems = []
    loaded_recipe = loaded_bench = None
    try:
        loaded_recipe = load_recipe(recipe, params)
    except InvalidInput as exc:
        problems += exc.problems
    try:
        loaded_bench = load_bench(_bench_path(bench))
    except InvalidInput as exc:
        problems += exc.problems
    if loaded_recipe is not None and loaded_bench is not None:
        from twin.recipe.limits import check_against_bench

        problems += check_against_bench(loaded_recipe, loaded_bench)
    if problems:
        raise InvalidInput(problems)
    assert loaded_recipe is not None and loaded_bench is not None
    return loaded_recipe, loaded_bench


def _print_problems(exc: InvalidInput) -> None:
    for problem in exc.problems:
        err.print(str(problem), highlight=False, markup=False)


def said(text: str, option: str = "--reason") -> str:
    """A person's reason or comment as the record takes it, else exit 2 before anyone signs
    (blank, control or invisible characters, too long: :mod:`twin.words`)."""
    from twin.words import UnfitText, check_reason

    try:
        return check_reason(text, option)
    except UnfitText as exc:
        raise _fail(f"{exc}; nothing was signed or written", EXIT_INVALID) from None
