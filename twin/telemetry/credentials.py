"""Broker credentials from the environment or a file, never from a command line.

A password on a command line is readable by every user of the machine (``ps``,
``/proc/PID/cmdline``, shell history); a process's environment and a file of
mode 0600 are readable only by their owner. So the broker URL may come whole
from ``POC_TWIN_BROKER``, or name only the user, its password then read from
the file named by ``POC_TWIN_BROKER_PASSWORD_FILE``. A password that is in the
URL anyway still works (nothing breaks), but no error message repeats it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from twin.telemetry.topics import BrokerURL, TelemetryError

__all__ = [
    "BROKER_ENV",
    "PASSWORD_FILE_ENV",
    "password_in_url",
    "read_password_file",
    "redact",
    "resolve_broker",
]

#: The whole broker URL (with or without its password).
BROKER_ENV = "POC_TWIN_BROKER"
#: A file (mode 0600) whose first line is the broker password of the URL's user.
PASSWORD_FILE_ENV = "POC_TWIN_BROKER_PASSWORD_FILE"


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:  # a malformed port or host: the parser says so later
        return None


def password_in_url(url: str) -> bool:
    """Whether ``url`` carries a password (so it must not travel on a command line)."""
    return bool(_url_password(url))


def redact(url: str, text: str) -> str:
    """``text`` with the URL's password (raw and percent-decoded) replaced by ``***``."""
    password = _url_password(url)
    if not password:
        return text
    for secret in {password, unquote(password)}:
        text = text.replace(secret, "***")
    return text


def read_password_file(path: Path) -> str:
    """The first line of a regular file only its owner can read; else TelemetryError."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise TelemetryError(f"{PASSWORD_FILE_ENV} {path} is not a regular file")
        if info.st_mode & 0o077:
            raise TelemetryError(
                f"{PASSWORD_FILE_ENV} {path} can be read by others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 {path}"
            )
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TelemetryError(f"{PASSWORD_FILE_ENV} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TelemetryError(f"{PASSWORD_FILE_ENV} {path}: not UTF-8 text") from None
    if not lines or not lines[0]:
        raise TelemetryError(f"{PASSWORD_FILE_ENV} {path}: the first line is empty")
    return lines[0]


def resolve_broker(url: str, environ: Mapping[str, str] | None = None) -> BrokerURL:
    """The broker URL with its password from the URL or from ``POC_TWIN_BROKER_PASSWORD_FILE``.

    Both at once is refused: which one wins would be a guess. Errors never
    contain the password (the URL parser's messages quote the URL).
    """
    env = os.environ if environ is None else environ
    try:
        broker = BrokerURL.parse(url)
    except TelemetryError as exc:
        raise TelemetryError(redact(url, str(exc))) from None
    except ValueError as exc:  # urllib: a port that is not a number or out of range, bad IPv6
        raise TelemetryError(f"--broker: {redact(url, str(exc))}; nothing started") from None
    file = env.get(PASSWORD_FILE_ENV)
    if not file:
        return broker
    if broker.password is not None:
        raise TelemetryError(
            f"the broker URL has a password and {PASSWORD_FILE_ENV} is set: give only one"
        )
    if broker.username is None:
        raise TelemetryError(f"{PASSWORD_FILE_ENV} is set but the broker URL names no user")
    return replace(broker, password=read_password_file(Path(file)))
