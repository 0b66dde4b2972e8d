"""Identifiers that become file names, socket names or MQTT topic levels: safe names only.

A batch id names its journal (``runs/<batch-id>.sqlite``) and a recipe id is the default
batch id's prefix, so either could otherwise point a journal anywhere on the machine
(``../../../tmp/x``, ``/etc/x``) or carry rich markup into every message that names it.
A safe name is 1-100 characters of ASCII letters, digits, ``.``, ``_`` and ``-``, starting
with a letter or digit (no hidden files, no ``..``, no separators, no wildcards).
"""

from __future__ import annotations

import re

__all__ = ["SAFE_NAME", "SAFE_NAME_RULE", "UnsafeName", "check_safe_name"]

#: The pattern, for pydantic fields and for the command line alike.
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
SAFE_NAME_RULE = "1-100 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
_SAFE = re.compile(SAFE_NAME)


class UnsafeName(ValueError):
    """An identifier that could reach a path, or that a person could not type back."""


def check_safe_name(value: str, what: str) -> str:
    """``value`` if it is a safe name; else UnsafeName saying what and the rule."""
    if not _SAFE.fullmatch(value) or ".." in value:
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise UnsafeName(f"{what} {shown!r} is not a safe name: {SAFE_NAME_RULE}")
    return value
