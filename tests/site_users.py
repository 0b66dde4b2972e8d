"""A site's users for tests: one of each role, with password files as a script would keep them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from twin.access.roles import Role
from twin.access.users import UserStore

#: user id -> (printed name, role, password)
PEOPLE = {
    "root": ("Site Admin", Role.ADMIN, "root-pass-0001"),
    "kim": ("Kim Lee", Role.OPERATOR, "kim-pass-0001"),
    "sam": ("Sam Roe", Role.SUPERVISOR, "sam-pass-0001"),
    "quinn": ("Quinn Ash", Role.QA, "quinn-pass-0001"),
    "eve": ("Eve Eng", Role.ENGINEER, "eve-pass-0001"),
}


@dataclass(frozen=True)
class Site:
    users: Path
    directory: Path

    def password_file(self, user: str, password: str | None = None) -> Path:
        """A 0600 file holding ``user``'s password (or ``password``, e.g. a wrong one)."""
        text = password if password is not None else PEOPLE[user][2]
        path = self.directory / f"{user}-{abs(hash(text)) % 10**8}.pw"
        path.write_text(text + "\n")
        os.chmod(path, 0o600)
        return path

    def signed(self, user: str) -> list[str]:
        """Command-line options that sign as ``user``."""
        return ["--operator", user, "--password-file", str(self.password_file(user))]


def make_site(directory: Path) -> Site:
    directory.mkdir(parents=True, exist_ok=True)
    store = UserStore.open(directory / "users.sqlite", create=True)
    admin = None
    for user, (name, role, password) in PEOPLE.items():
        store.add(user, name, [role], password, by=admin)
        if role is Role.ADMIN:
            from twin.access.roles import Act

            admin = store.sign(user, password, Act.MANAGE_USERS)
    store.close()
    return Site(directory / "users.sqlite", directory)
