"""Signing on the command line: the site's users file and a password that never sits in argv.

A password comes from ``--password-file`` (a file only its owner can read), else a
prompt on the terminal, else one line on standard input (for a script that pipes
it from a secret store). Each command line is its own signing session, so every
signed act asks for the user id and the password (21 CFR 11.200(a)(1)).
"""

from __future__ import annotations

import getpass
import stat
import sys
import unicodedata
from pathlib import Path
from typing import Annotated

import typer

from twin.access.roles import Act
from twin.access.users import (
    ENV_USERS,
    AccessRefused,
    Signer,
    UserStore,
    UserStoreError,
    users_path,
)
from twin.cli.common import EXIT_INVALID, EXIT_REFUSED, _fail
from twin.names import UnsafeName, check_safe_name

__all__ = [
    "ENV_OPERATOR",
    "ENV_PASSWORD_FILE",
    "PasswordFileOpt",
    "RunPasswordFileOpt",
    "UsersOpt",
    "open_users",
    "read_password",
    "sign_for",
]

UsersOpt = Annotated[
    Path | None,
    typer.Option(
        "--users",
        envvar=ENV_USERS,
        help="The site's users file (default site/users.sqlite): who may sign what",
    ),
]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="A file (mode 0600) whose first line is the password; else prompted, or one "
        "line on standard input. Never on the command line.",
    ),
]


#: Environment variables ``run`` reads for the person starting a batch (a station or a CI
#: job that starts batches as its engineer keeps the password in a 0600 file, never argv).
ENV_OPERATOR = "POC_TWIN_OPERATOR"
ENV_PASSWORD_FILE = "POC_TWIN_PASSWORD_FILE"
RunPasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        envvar=ENV_PASSWORD_FILE,
        help="Password file (mode 0600) of the --operator who signs a run on a development "
        "bench; else prompted, or one line on standard input. Never on the command line.",
    ),
]


#: Longest password read: far beyond any passphrase, far below what a request may carry.
MAX_PASSWORD = 1024


def read_password(user: str, password_file: Path | None, what: str = "password") -> str:
    """The signer's password: from the file, the terminal, or a line of standard input.

    ``user`` must first be a name some site user could have (exit 2 if not: nothing is
    asked, counted or journalled for an id no one can hold)."""
    try:
        check_safe_name(user, "user id")
    except UnsafeName as exc:
        raise _fail(f"{exc}; nothing was signed or counted", EXIT_INVALID) from None
    if password_file is not None:
        try:
            info = password_file.stat()
            if not stat.S_ISREG(info.st_mode):
                raise _fail(f"--password-file {password_file} is not a regular file", EXIT_INVALID)
            if info.st_mode & 0o077:
                raise _fail(
                    f"--password-file {password_file} can be read by others "
                    f"(mode {stat.S_IMODE(info.st_mode):o}): chmod 600 it",
                    EXIT_INVALID,
                )
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise _fail(f"--password-file {password_file}: {why}", EXIT_INVALID) from None
        password = lines[0] if lines else ""
        source = f"--password-file {password_file}"
    elif sys.stdin is not None and sys.stdin.isatty():
        password, source = getpass.getpass(f"{what} for {user}: "), "the prompt"
    else:
        line = sys.stdin.readline() if sys.stdin is not None else ""
        password, source = line.rstrip("\r\n"), "standard input"
    if len(password) > MAX_PASSWORD:  # a file of something else: never sent to the batch
        raise _fail(
            f"the {what} for {user} from {source} is longer than {MAX_PASSWORD} characters, "
            "which no password is (the wrong file?); nothing was signed or counted",
            EXIT_INVALID,
        )
    if not password:  # never a password (8 characters at least): no one signs with it
        raise _fail(
            f"no {what} for {user} from {source}; nothing was signed or counted", EXIT_INVALID
        )
    unfit = next((c for c in password if unicodedata.category(c) in ("Cc", "Cf")), None)
    if unfit is not None:  # a BOM an editor wrote, a NUL (HMAC pads with NULs: 'pw\0' is 'pw')
        raise _fail(
            f"the {what} for {user} from {source} holds a control or invisible character "
            f"(U+{ord(unfit):04X}), which no password has (a file saved with a BOM?); "
            "nothing was signed or counted",
            EXIT_INVALID,
        )
    return password


def open_users(option: Path | None, *, create: bool = False) -> UserStore:
    """The site's users file, or exit 4 saying how to set it up."""
    try:
        return UserStore.open(users_path(option), create=create)
    except UserStoreError as exc:
        raise _fail(str(exc), EXIT_REFUSED) from None


def sign_for(
    users: UserStore, user: str, password_file: Path | None, act: Act, *, what: str = "password"
) -> Signer:
    """``user``'s signature for ``act`` (password read here); AccessRefused propagates."""
    password = read_password(user, password_file, what)
    return users.sign(user, password, act)


def refused(exc: AccessRefused | UserStoreError) -> typer.Exit:
    """Exit 4 with the refusal."""
    return _fail(str(exc), EXIT_REFUSED)


def users_for_batch(option: Path | None) -> UserStore | None:
    """The users who sign commands to a batch being started: the file named (exit 2 if it
    cannot be used, nothing started), else site/users.sqlite where it exists, else None."""
    path = users_path(option)
    if option is None and not path.exists():
        return None
    try:
        return UserStore.open(path)
    except UserStoreError as exc:
        raise _fail(f"--users: {exc}; nothing started", EXIT_INVALID) from None
