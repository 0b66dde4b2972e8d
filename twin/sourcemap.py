"""YAML with line numbers kept, so every problem in a recipe or bench names FILE:LINE:COL.

Recipes and bench files are read with ruamel.yaml's round-trip loader, which
remembers where each key and value sits. Validation errors (pydantic) carry a
path of keys and indices; :class:`SourceMap` turns such a path back into a
position in the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from twin.errors import InvalidInput, Problem

__all__ = ["SourceMap", "load_yaml", "problems_from_validation", "validate_document"]

Loc = Sequence[int | str]
M = TypeVar("M", bound=BaseModel)


class SourceMap:
    """Positions of the keys and values of one loaded YAML document."""

    def __init__(self, file: str, root: Any) -> None:
        self.file = file
        self.root = root

    def position(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the value at ``loc`` (or of its key), as near as the file says."""
        node = self.root
        pos = (1, 1)
        for i, part in enumerate(loc):
            last = i == len(loc) - 1
            if isinstance(node, CommentedMap) and part in node:
                line, col = node.lc.key(part) if (key and last) else node.lc.value(part)
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


def load_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Read a YAML file keeping positions; a syntax error becomes one Problem with its line."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput([Problem(file, 1, 1, f"cannot read file: {exc.strerror}")]) from None
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        raise InvalidInput([Problem(file, line, col, f"YAML syntax: {what}")]) from None
    if not isinstance(data, CommentedMap):
        raise InvalidInput([Problem(file, 1, 1, "expected a mapping at the top of the file")])
    return data, SourceMap(file, data)


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
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
        where = str(loc[-1]) if loc else "(top)"
        kind = err["type"]
        if kind == "extra_forbidden":
            name = str(loc[-1])
            close = difflib.get_close_matches(name, sorted(vocabulary), n=1, cutoff=0.6)
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
    """Validate a loaded document; all problems at once as InvalidInput."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(problems_from_validation(exc, source, models)) from None
