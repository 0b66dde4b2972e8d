"""YAML with line numbers kept, so every problem in a recipe or bench names FILE:LINE:COL.

Recipes and bench files are read with ruamel.yaml's round-trip loader, which
remembers where each key and value sits. Validation errors (pydantic) carry a
path of keys and indices; :class:`SourceMap` turns such a path back into a
position in the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import ScalarNode

from twin.errors import InvalidInput, Problem

__all__ = [
    "EMPTY_VALUE",
    "MAX_BYTES",
    "MAX_DEPTH",
    "SourceMap",
    "load_yaml",
    "problems_from_validation",
    "recorded_text",
    "validate_document",
    "with_empty",
]

Loc = Sequence[int | str]
M = TypeVar("M", bound=BaseModel)


class SourceMap:
    """Positions of the keys and values of one loaded YAML document."""

    def __init__(self, file: str, root: Any) -> None:
        self.file = file
        self.root = root
        #: Each key written and left empty (``key:``, ``key: null``) by its path, with its
        #: Problem: reported with the schema's problems by :func:`validate_document`.
        self.empty_at: dict[tuple[int | str, ...], Problem] = {}

    @property
    def empty(self) -> list[Problem]:
        return list(self.empty_at.values())

    def path(self, loc: Loc) -> tuple[int | str, ...] | None:
        """``loc`` as a path in the document (a pydantic union tag left out), or None when
        its last part is not there (a missing key)."""
        node = self.root
        path: list[int | str] = []
        for part in loc:
            in_map = isinstance(node, CommentedMap) and part in node
            in_seq = isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node)
            if in_map or in_seq:
                node = node[part]
                path.append(part)
            elif not (isinstance(node, CommentedMap) and isinstance(part, str)):
                return None
            # else a union tag in pydantic's path (or a missing key: below)
        return tuple(path) if loc and path and path[-1] == loc[-1] else None

    def position(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the value at ``loc`` (or of its key), as near as the file says."""
        node = self.root
        pos = (1, 1)
        for i, part in enumerate(loc):
            last = i == len(loc) - 1
            if isinstance(node, CommentedMap) and part in node:
                line, col = node.lc.key(part) if (key and last) else node.lc.value(part)
                if node[part] is None and line > node.lc.key(part)[0]:
                    # `key:` left empty: the parser placed its value at the next token,
                    # lines below; the key is where the person wrote nothing.
                    line, col = node.lc.key(part)
                pos = (line + 1, col + 1)
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line, col = node.lc.item(part)
                pos = (line + 1, col + 1)
                node = node[part]
            elif isinstance(node, CommentedMap) and isinstance(part, str):
                # A union tag in pydantic's path, or a missing key: stay on the mapping.
                continue
            else:
                break
        return pos

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> Problem:
        line, col = self.position(loc, key=key)
        return Problem(self.file, line, col, message)


#: Said of a key written and left empty, after its name.
EMPTY_VALUE = "written but empty: declare a value, or leave the key out for the default"
#: Larger recipe, bench or scenario files are refused unread (the shipped ones are < 10 KiB).
MAX_BYTES = 1024 * 1024
#: Deeper nesting is refused before it is built (a recipe is about 8 levels deep).
MAX_DEPTH = 64
#: Integers with more digits are refused (no physical quantity here needs them, and
#: converting them to float overflows).
MAX_DIGITS = 30
#: Characters no recipe needs: C0 controls but tab and line ends, DEL, a byte-order mark
#: inside the text (NUL bytes among them: a binary file renamed .yaml).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufeff]")
#: Characters that act on a terminal or reorder text as it is shown: C1 controls (U+009B
#: starts an escape sequence as ESC [ does) and the bidirectional controls a "Trojan
#: Source" file uses to show a reviewer other text than the parser reads (CVE-2021-42574).
#: Refused in the file's text (a comment included) and, as :data:`_IN_VALUE`, in every
#: value and key as the parser decodes it (``"\e[2J"``, ``"\u202e"``, ``"\x9b"``).
_FORMAT = re.compile("[\x80-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: What no decoded value may hold: the above, and C0 controls but tab and line ends.
_IN_VALUE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _decode(file: str, raw: bytes) -> str:
    """The file as UTF-8 text, or a Problem at the first byte that is not."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (
        len(raw) >= 2 and raw.count(0) * 3 >= len(raw)
    ):
        raise InvalidInput(
            [Problem(file, 1, 1, "UTF-16 or binary, not UTF-8 text: save it as UTF-8")]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidInput(
            [Problem(file, line, col, f"not UTF-8 text (byte {exc.start}): save it as UTF-8")]
        ) from None
    text = text.removeprefix("\ufeff")
    bad = _CONTROL.search(text)
    if bad is None and not _RECORDED.get():  # a recorded text is read as it ran
        bad = _FORMAT.search(text)
    if bad is not None:
        i = bad.start()
        line = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        raise InvalidInput(
            [Problem(file, line, col, f"control character U+{ord(text[i]):04X} in the text")]
        )
    return text


#: What a plain key resolves to, said in words (a key must be text: a name).
_KEY_KINDS = {
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}
#: Set while a journal's recorded text is read again (replay, resume, its batch record).
_RECORDED: contextvars.ContextVar[bool] = contextvars.ContextVar("recorded", default=False)


@contextlib.contextmanager
def recorded_text() -> Iterator[None]:
    """Read recorded recipe and bench texts as the version that ran them did: a key left
    empty was taken as not written, and a merge key (``<<``) merged, until 2026-12-07; a
    journal recorded with one must still replay, resume and report as it ran. Every file
    given anew is held to the rules."""
    token = _RECORDED.set(True)
    try:
        yield
    finally:
        _RECORDED.reset(token)


_MERGE = "tag:yaml.org,2002:merge"
_MERGE_REFUSED = "YAML merge keys (<<) are not allowed: write the keys out"


def _key_problem(event: Any, resolver: Any) -> str | None:
    """What is wrong with this mapping key, or None for a name (text). Merge keys (``<<``)
    and anything but text (a list, a mapping, a number, null, a tag) are refused: every
    key poc-twin reads is a name, and a merge would bring keys in that no line holds."""
    kind = type(event).__name__
    if kind in ("MappingStartEvent", "SequenceStartEvent"):
        what = "mapping" if kind == "MappingStartEvent" else "list"
        return f"a {what} as a key is not allowed: a key is a name"
    if kind != "ScalarEvent":
        return None
    tag = str(event.tag) if event.tag is not None else None
    plain = event.style is None and event.implicit[0]
    if tag == _MERGE or (tag is None and plain and event.value == "<<"):
        return _MERGE_REFUSED
    if tag is not None:
        return f"a tag ({tag}) on a key is not allowed: a key is a name"
    if not plain:
        return None  # quoted: text
    resolved = str(resolver.resolve(ScalarNode, event.value, event.implicit))
    what = _KEY_KINDS.get(resolved) if resolved != "tag:yaml.org,2002:str" else None
    if what is None:
        return None
    if event.value == "":
        return "empty key: a key is a name"
    return f"key '{event.value}' reads as {what}, not a name (quote it if it is meant as text)"


def _check_events(file: str, text: str) -> None:
    """Refuse aliases (a 'billion laughs' file expands without end), merge keys and keys
    that are not text, too deep nesting and overlong integers before any object is built:
    each as one Problem with its line."""
    yaml = YAML(typ="rt")
    resolver = yaml.resolver
    #: Per open collection: whether it is a mapping, and how many nodes it holds so far
    #: (in a mapping, the even ones are keys).
    open_: list[list[Any]] = []
    for event in yaml.parse(text):
        mark = event.start_mark
        where = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        kind = type(event).__name__
        if kind == "AliasEvent":
            raise InvalidInput(
                [Problem(file, *where, "YAML aliases (*name) are not allowed: write it out")]
            )
        if kind in ("ScalarEvent", "MappingStartEvent", "SequenceStartEvent") and open_:
            is_mapping, count = open_[-1]
            open_[-1][1] += 1
            if is_mapping and count % 2 == 0:
                problem = _key_problem(event, resolver)
                # (a recorded text is read as it ran: a merge was taken until 2026-12-07)
                if problem is not None and not (problem is _MERGE_REFUSED and _RECORDED.get()):
                    raise InvalidInput([Problem(file, *where, problem)])
        if kind in ("MappingStartEvent", "SequenceStartEvent"):
            open_.append([kind == "MappingStartEvent", 0])
            if len(open_) > MAX_DEPTH:
                raise InvalidInput(
                    [Problem(file, *where, f"nested more than {MAX_DEPTH} levels deep")]
                )
        elif kind in ("MappingEndEvent", "SequenceEndEvent"):
            open_.pop()
        if kind == "ScalarEvent" and not _RECORDED.get():
            bad = _IN_VALUE.search(event.value)
            if bad is not None:  # written as an escape: the text itself passed _decode
                code = ord(event.value[bad.start()])
                raise InvalidInput(
                    [Problem(file, *where, f"control character U+{code:04X} in a value")]
                )
        if kind == "ScalarEvent" and event.style is None:
            digits = event.value.lstrip("+-").replace("_", "")
            if digits.isdigit() and len(digits) > MAX_DIGITS:
                raise InvalidInput(
                    [Problem(file, *where, f"a number of {len(digits)} digits is out of range")]
                )


def _check_keys(file: str, node: Any) -> None:
    """Every key of the loaded document is text, else one Problem at the key: a net under
    :func:`_check_events`, so that no later check sorts or looks up a key that is not a
    name whatever the parser makes of one."""
    if isinstance(node, CommentedMap):
        for key, value in node.items():
            if not isinstance(key, str):
                pos = node.lc.key(key) if key in node.lc.data else None
                line, col = (pos[0] + 1, pos[1] + 1) if pos else (1, 1)
                raise InvalidInput(
                    [Problem(file, line, col, f"key {key!r} is not text: a key is a name")]
                )
            _check_keys(file, value)
    elif isinstance(node, CommentedSeq):
        for item in node:
            _check_keys(file, item)


def _find_empty(source: SourceMap, node: Any, path: tuple[int | str, ...]) -> None:
    """Note every key written and left empty (``key:``, ``key: null``, ``key: ~``) at its
    key: a key written declares something, and one left empty was taken as not written (a
    default, often no check at all: an empty ``min_viability_pct:`` dropped an acceptance
    check). Every optional key has its default by leaving it out."""
    if isinstance(node, CommentedMap):
        for key, value in node.items():
            if value is None:
                pos = node.lc.key(key) if key in node.lc.data else None
                line, col = (pos[0] + 1, pos[1] + 1) if pos else (1, 1)
                problem = Problem(source.file, line, col, f"{key}: {EMPTY_VALUE}")
                source.empty_at[(*path, key)] = problem
            else:
                _find_empty(source, value, (*path, key))
    elif isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            _find_empty(source, item, (*path, i))


def load_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Read a YAML file keeping positions; any malformed file becomes one Problem with its
    line: unreadable, too large, not UTF-8, control characters, aliases, merge keys, keys
    that are not text, too deep, a syntax error. Never a traceback, a hang or unbounded
    memory. Keys written and left empty are listed in the map (``SourceMap.empty``), to be
    reported with the schema's problems."""
    file = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InvalidInput([Problem(file, 1, 1, f"cannot read file: {reason}")]) from None
    if len(raw) > MAX_BYTES:
        raise InvalidInput([Problem(file, 1, 1, f"larger than {MAX_BYTES // 1024} KiB")])
    text = _decode(file, raw)
    try:
        _check_events(file, text)
        data = YAML(typ="rt").load(text)
        _check_keys(file, data)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        raise InvalidInput([Problem(file, line, col, f"YAML syntax: {what}")]) from None
    except (RecursionError, ValueError, OverflowError) as exc:
        raise InvalidInput([Problem(file, 1, 1, f"cannot be read as YAML: {exc}")]) from None
    if not isinstance(data, CommentedMap):
        raise InvalidInput([Problem(file, 1, 1, "expected a mapping at the top of the file")])
    source = SourceMap(file, data)
    if not _RECORDED.get():
        _find_empty(source, data, ())
    return data, source


def _vocabulary(models: Iterable[type[BaseModel]]) -> set[str]:
    words: set[str] = set()
    for model in models:
        for name, field in model.model_fields.items():
            words.add(field.alias or name)
    return words


def problems_from_validation(
    exc: ValidationError, source: SourceMap, models: Iterable[type[BaseModel]] = ()
) -> list[Problem]:
    """One Problem per pydantic error, placed on its line, with a did-you-mean for typos."""
    vocabulary = _vocabulary(models)
    problems: list[Problem] = []
    errors = exc.errors(include_url=False)
    missing: dict[tuple[Any, ...], list[str]] = {}  # keys missing beside each mapping's typos
    for err in errors:
        loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
        if err["type"] == "missing" and loc:
            missing.setdefault(tuple(loc[:-1]), []).append(str(loc[-1]))
    for err in errors:
        loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
        where = str(loc[-1]) if loc else "(top)"
        kind = err["type"]
        if kind != "extra_forbidden" and source.empty_at and source.path(loc) in source.empty_at:
            continue  # the value left empty is not a mapping, not text...: said once, as empty
        if kind == "extra_forbidden":
            name = str(loc[-1])
            beside = missing.get(tuple(loc[:-1]), [])  # 'rmp' where 'rpm' is missing: that one
            close = difflib.get_close_matches(name, beside, n=1, cutoff=0.6)
            close = close or difflib.get_close_matches(name, sorted(vocabulary), n=1, cutoff=0.6)
            if close and close[0] == name:  # a key of another kind of mapping, not a typo
                hint = " (a key of another kind of phase or item, not of this one)"
            else:
                hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(source.problem(loc, f"unknown key '{name}'{hint}", key=True))
        elif kind == "missing":
            problems.append(source.problem(loc[:-1], f"missing required key '{loc[-1]}'"))
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            tag = ctx.get("tag", "?")
            known = ctx.get("expected_tags", "")
            close = difflib.get_close_matches(str(tag), [t.strip(" '") for t in known.split(",")])
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {known}"
            problems.append(source.problem(loc, f"unknown phase type '{tag}'{hint}"))
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(source.problem(loc, f"{where}: {message}"))
    return sorted(set(problems), key=lambda p: (p.line, p.col, p.message))


def validate_document(
    model: type[M], data: Any, source: SourceMap, models: Iterable[type[BaseModel]] = ()
) -> M:
    """Validate a loaded document; all problems at once as InvalidInput, keys written and
    left empty among them."""
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(
            with_empty(source, problems_from_validation(exc, source, models))
        ) from None
    if source.empty:
        raise InvalidInput(source.empty)
    return validated


def with_empty(source: SourceMap, problems: Iterable[Problem]) -> list[Problem]:
    """``problems`` and the keys written and left empty, sorted; an unknown key left empty
    is named as unknown only."""
    every = set(problems)
    unknown = {(p.line, p.col) for p in every if p.message.startswith("unknown key")}
    every |= {p for p in source.empty if (p.line, p.col) not in unknown}
    return sorted(every, key=lambda p: (p.line, p.col, p.message))
