"""The site's users: ids, printed names, roles, scrypt password hashes, lockout, audit trail.

One SQLite file per site (``POC_TWIN_USERS``, default ``site/users.sqlite``), shared
by every batch process and command line of the site. What 21 CFR 11 asks of it:

- ids are unique and never reused: a disabled user keeps id, name and history (11.100(a));
- passwords are stored as scrypt hashes with their own salt, never as text (11.300);
- a signature needs the id and the password (11.200(a)); after ``LOCK_AFTER`` wrong
  passwords in a row the account locks until an administrator unlocks it (11.300(d));
- users are managed only under an administrator's signature, the first administrator
  excepted, and every change and every refused sign-in lands in the ``audit`` table.

An administrator manages users and nothing else: the admin role is never combined
with a batch role (segregation of duties).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from twin.access.roles import MEANING, Act, Role, may, roles_for
from twin.clock import wall_now
from twin.errors import PocTwinError
from twin.names import UnsafeName, check_safe_name

__all__ = [
    "DEFAULT_USERS",
    "ENV_USERS",
    "LOCK_AFTER",
    "MIN_PASSWORD",
    "AccessRefused",
    "Signer",
    "User",
    "UserStore",
    "UserStoreError",
    "users_path",
]

ENV_USERS = "POC_TWIN_USERS"
DEFAULT_USERS = Path("site/users.sqlite")
#: Wrong passwords in a row that lock an account.
LOCK_AFTER = 5
MIN_PASSWORD = 8
#: How long a command waits for another process's hold on the users file (SQLite's lock)
#: before it says the file cannot be used now.
BUSY_TIMEOUT_S = 10.0
#: The same wait for a running batch, which checks a signed command on its own loop: its
#: control modules and the twin's devices stand still meanwhile, so it waits only briefly
#: (a real write by another process holds the file for milliseconds) and then refuses.
BATCH_BUSY_TIMEOUT_S = 0.25
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, roles TEXT NOT NULL, hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
    locked INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL, changed TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, utc TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL
);
"""


#: Ids the journal uses for acts no site user signs ("engine requests hold"): a user of that
#: name would read, in every record, as the batch itself.
RESERVED_IDS = frozenset({"engine", "batch", "procedure", "ctrl-c"})


class UserStoreError(PocTwinError):
    """The users file cannot be used (missing, not a users file), or a change is invalid."""


def _unusable(path: Path, exc: sqlite3.Error) -> UserStoreError:
    """The users file could not be read or written just now (another process holds it
    locked, a read-only file system, a disk error): nothing was signed, counted or changed."""
    return UserStoreError(
        f"{path}: the site's users file cannot be used now ({exc}; another process may hold "
        "it: try again); nothing was signed or changed"
    )


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _usable(method: _Method) -> _Method:
    """``method`` of a :class:`UserStore`, its SQLite errors as :class:`UserStoreError`."""

    @functools.wraps(method)
    def wrapper(self: UserStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from None

    return wrapper  # type: ignore[return-value]


#: Every refusal of an id and password: unknown id, wrong password, locked or disabled
#: account, whatever password was given: the same words (docs/access.md).
UNSIGNED = (
    f"unknown user or wrong password (after {LOCK_AFTER} wrong passwords in a row an "
    "account is locked until an administrator unlocks it)"
)


class AccessRefused(PocTwinError):
    """A signature or an act refused: names the user, the act and why (never the password)."""

    def __init__(self, user: str, act: str, reason: str) -> None:
        self.user, self.act, self.reason = user, act, reason
        super().__init__(f"{act} refused for '{user}': {reason}")


@dataclass(frozen=True)
class User:
    id: str
    name: str
    roles: frozenset[Role]
    disabled: bool
    locked: bool
    failures: int


@dataclass(frozen=True)
class Signer:
    """A person who has just signed for one act: what the journal records with it.

    Only :meth:`UserStore.sign` makes these, after checking the password and the role.
    """

    user: str
    name: str
    act: str
    meaning: str
    utc: str


def users_path(option: Path | None = None) -> Path:
    """The site's users file: the option, else ``POC_TWIN_USERS``, else site/users.sqlite."""
    if option is not None:
        return option
    env = os.environ.get(ENV_USERS)
    return Path(env) if env else DEFAULT_USERS


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    b64 = base64.b64encode
    return f"scrypt${b64(salt).decode()}${b64(_hash(password, salt)).decode()}"


def _password_matches(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
        ok = scheme == "scrypt"
        return ok and hmac.compare_digest(
            _hash(password, base64.b64decode(salt)), base64.b64decode(digest)
        )
    except ValueError:
        return False


def _now() -> str:
    return wall_now().isoformat(timespec="seconds")


def _roles(text: str) -> frozenset[Role]:
    return frozenset(Role(r) for r in text.split(",") if r)


#: The tables of a users file (``sqlite_sequence`` is SQLite's own, for the audit's seq).
_TABLES = frozenset({"users", "audit", "sqlite_sequence"})


def _check_tables(path: Path, db: sqlite3.Connection, create: bool) -> None:
    """A users file's tables, or none yet where one is being created: never a journal, a
    control-site store or any other database, which the schema would be written into."""
    query = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
    tables = {name for (name,) in db.execute(query)}
    if "users" in tables and tables <= _TABLES:
        return
    if not tables and create:
        return
    if not tables:
        raise UserStoreError(f"{path}: an empty file, not a users file; nothing changed")
    raise UserStoreError(
        f"{path}: an SQLite database but not a users file (tables: "
        f"{', '.join(sorted(tables))}); nothing changed"
    )


class UserStore:
    """The users file of one site."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> UserStore:
        """Open the site's users file; ``create`` makes a new one (only ``site user add``)."""
        path = Path(path)
        try:
            if path.is_dir():
                raise UserStoreError(f"{path} is a directory, not a users file")
            if not path.exists():
                if not create:
                    raise UserStoreError(
                        f"{path}: this site has no users yet; add the first administrator "
                        "with: poc-twin site user add ID --name NAME --role admin"
                    )
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.is_file():  # a device (/dev/null): SQLite would write beside it
                raise UserStoreError(f"{path} is not a regular file, not a users file")
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                _check_tables(path, db, create)
                db.executescript(_SCHEMA)
            except BaseException:
                db.close()
                raise
            if create:
                path.chmod(0o600)
        except sqlite3.OperationalError as exc:  # locked by another process, read-only
            raise _unusable(path, exc) from None
        except sqlite3.DatabaseError as exc:
            raise UserStoreError(f"{path}: not a users file ({exc})") from None
        except OSError as exc:
            raise UserStoreError(f"{path}: {exc.strerror}") from None
        return cls(path, db)

    def close(self) -> None:
        self._db.close()

    def wait_for_lock_at_most(self, seconds: float) -> None:
        """From now on, wait at most ``seconds`` for another process's lock on the file
        (then :class:`UserStoreError`, nothing signed)."""
        self._db.execute(f"PRAGMA busy_timeout = {max(0, round(seconds * 1000))}")

    # -- reading ---------------------------------------------------------------------

    @_usable
    def get(self, user_id: str) -> User | None:
        row = self._db.execute(
            "SELECT id, name, roles, disabled, locked, failures FROM users WHERE id = ?",
            (user_id,),
        ).fetchone()
        if row is None:
            return None
        return User(row[0], row[1], _roles(row[2]), bool(row[3]), bool(row[4]), row[5])

    @_usable
    def users(self) -> list[User]:
        ids = [r[0] for r in self._db.execute("SELECT id FROM users ORDER BY id")]
        return [u for u in (self.get(i) for i in ids) if u is not None]

    @_usable
    def audit(self) -> list[tuple[int, str, str, str, str, str]]:
        """Every change and refused sign-in, oldest first."""
        return list(self._db.execute("SELECT * FROM audit ORDER BY seq"))

    # -- signing ---------------------------------------------------------------------

    @_usable
    def sign(self, user_id: str, password: str, act: Act) -> Signer:
        """Check id, password and role for one act; AccessRefused (audited) otherwise."""

        def role_refusal(roles: frozenset[Role]) -> str | None:
            if may(roles, act):
                return None
            allowed = ", ".join(roles_for(act)) or "no role"
            return f"role {', '.join(sorted(roles))} may not {act.value} (allowed: {allowed})"

        name = self._authenticate(user_id, password, act.value, role_refusal)
        return Signer(user_id, name, act.value, MEANING[act], _now())

    @_usable
    def sign_in(self, user_id: str, password: str) -> Signer:
        """Id and password only (a user changing their own password); AccessRefused else."""
        name = self._authenticate(user_id, password, "sign-in", lambda roles: None)
        return Signer(user_id, name, "sign-in", "performed", _now())

    def _authenticate(
        self,
        user_id: str,
        password: str,
        act: str,
        role_refusal: Callable[[frozenset[Role]], str | None],
    ) -> str:
        """The user's printed name, or AccessRefused (audited; a wrong password counted)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(
                "SELECT name, roles, hash, disabled, locked, failures FROM users WHERE id = ?",
                (user_id,),
            ).fetchone()
            if user_id.lower() in RESERVED_IDS:  # one made before they were reserved: the
                row = None  # record would read their acts as the batch's own; no one signs
            refusal = self._refusal(user_id, password, row)
            reason = refusal[0] if refusal is not None else None
            if refusal is None:
                self._db.execute("UPDATE users SET failures = 0 WHERE id = ?", (user_id,))
                reason = role_refusal(_roles(row[1]))
            if reason is not None:
                audited = refusal[1] if refusal is not None else reason
                self._log(user_id, "refused", user_id, f"{act}: {audited}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        if reason is not None:
            raise AccessRefused(user_id, act, reason)
        return str(row[0])

    def _refusal(self, user_id: str, password: str, row: tuple | None) -> tuple[str, str] | None:
        """Why the id and password do not sign, as shown and as audited (a wrong password
        counted), or None.

        Every refusal shows the same words and takes as long: an unknown id, a wrong
        password, a locked or a disabled account, whatever password was given. So nobody
        learns which ids exist or are locked, nor, once an account is locked, whether a
        guess was right. The audit (the administrator's view) says which it was.
        """
        if row is None:
            _hash(password, b"0" * 16)  # as slow as a real check: no probing for ids
            return UNSIGNED, "unknown user"
        _, _, stored, disabled, locked, failures = row
        matches = _password_matches(password, stored)  # checked in every case: same time
        if disabled:
            return UNSIGNED, "the account is disabled"
        if locked:
            return UNSIGNED, f"the account is locked ({'right' if matches else 'wrong'} password)"
        if matches:
            return None
        failures += 1
        lock = failures >= LOCK_AFTER
        self._db.execute(
            "UPDATE users SET failures = ?, locked = ? WHERE id = ?",
            (failures, int(lock), user_id),
        )
        if lock:
            self._log(user_id, "locked", user_id, f"{failures} wrong passwords in a row")
        return UNSIGNED, "wrong password"

    # -- managing --------------------------------------------------------------------

    @_usable
    def is_empty(self) -> bool:
        return self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0

    @_usable
    def add(
        self,
        user_id: str,
        name: str,
        roles: Iterable[Role],
        password: str,
        *,
        by: Signer | None,
    ) -> User:
        """A new user. ``by`` is an administrator's signature, or None for the first admin."""
        roles = frozenset(roles)
        try:
            check_safe_name(user_id, "user id")
        except UnsafeName as exc:
            raise UserStoreError(str(exc)) from None
        if user_id.lower() in RESERVED_IDS:
            raise UserStoreError(
                f"user id '{user_id}' names the batch's own acts in the record "
                f"({', '.join(sorted(RESERVED_IDS))}): choose another"
            )
        name = " ".join(name.split())
        if not name or len(name) > 100 or not name.isprintable():
            raise UserStoreError("the printed name must be 1-100 printable characters")
        if not roles:
            raise UserStoreError("a user needs at least one role")
        if Role.ADMIN in roles and len(roles) > 1:
            raise UserStoreError("an administrator takes no batch role (segregation of duties)")
        self._check_password(user_id, password)
        actor = self._actor(by)
        if actor is None and Role.ADMIN not in roles:
            raise UserStoreError(
                "the first user of a site must be its administrator (--role admin)"
            )
        if self.get(user_id) is not None:
            raise UserStoreError(f"user id '{user_id}' exists (ids are never reused)")
        now = _now()
        self._db.execute(
            "INSERT INTO users (id, name, roles, hash, created, changed) VALUES (?,?,?,?,?,?)",
            (user_id, name, ",".join(sorted(roles)), hash_password(password), now, now),
        )
        self._log(actor or user_id, "add", user_id, f"{name}; roles {', '.join(sorted(roles))}")
        user = self.get(user_id)
        assert user is not None
        return user

    @_usable
    def disable(self, user_id: str, *, by: Signer) -> None:
        """The user signs nothing any more; id, name and history stay."""
        self._change(
            user_id, by, "disable", "UPDATE users SET disabled = 1, changed = ? WHERE id = ?"
        )

    @_usable
    def unlock(self, user_id: str, *, by: Signer) -> None:
        self._change(
            user_id,
            by,
            "unlock",
            "UPDATE users SET locked = 0, failures = 0, changed = ? WHERE id = ?",
        )

    @_usable
    def set_password(self, user_id: str, password: str, *, by: Signer) -> None:
        """A new password, set by the user (signing with the old one) or an administrator."""
        if by.user != user_id and by.act != Act.MANAGE_USERS.value:
            raise UserStoreError("only the user or an administrator sets a password")
        self._check_password(user_id, password)
        self._require(user_id)
        self._db.execute(
            "UPDATE users SET hash = ?, failures = 0, locked = 0, changed = ? WHERE id = ?",
            (hash_password(password), _now(), user_id),
        )
        self._log(by.user, "passwd", user_id, "password changed")

    def _change(self, user_id: str, by: Signer, action: str, sql: str) -> None:
        actor = self._actor(by)
        self._require(user_id)
        if action == "disable" and user_id == actor:
            raise UserStoreError("an administrator does not disable their own account")
        self._db.execute(sql, (_now(), user_id))
        self._log(actor or "", action, user_id, "")

    def _require(self, user_id: str) -> None:
        if self.get(user_id) is None:
            raise UserStoreError(f"no user '{user_id}' at this site")

    def _actor(self, by: Signer | None) -> str | None:
        """The administrator acting; None only while the site has no users."""
        if by is None:
            if not self.is_empty():
                raise UserStoreError("managing users needs an administrator's signature (--admin)")
            return None
        if by.act != Act.MANAGE_USERS.value:
            raise UserStoreError(f"{by.user} signed for {by.act}, not for managing users")
        return by.user

    @staticmethod
    def _check_password(user_id: str, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise UserStoreError(f"a password has at least {MIN_PASSWORD} characters")
        if password.strip().lower() == user_id.lower():
            raise UserStoreError("the password may not be the user id")

    def _log(self, actor: str, action: str, subject: str, detail: str) -> None:
        self._db.execute(
            "INSERT INTO audit (utc, actor, action, subject, detail) VALUES (?,?,?,?,?)",
            (_now(), actor, action, subject, detail),
        )
