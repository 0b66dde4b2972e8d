"""`poc-twin site user ...` as an administrator sets a site up, from an empty users file."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from twin.cli import app

cli = CliRunner()


def secret(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.pw"
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)


def test_an_administrator_sets_up_and_runs_the_sites_users(tmp_path: Path) -> None:
    users = ["--users", str(tmp_path / "site" / "users.sqlite")]
    admin_pw = secret(tmp_path, "admin", "admin-secret-1")
    as_admin = ["--admin", "root", "--admin-password-file", admin_pw]
    first = cli.invoke(
        app, ["site", "user", "add", "kim", "--name", "Kim", "--role", "operator", *users],
        input="kim-secret-01\n",
    )  # fmt: skip
    assert first.exit_code == 2 and "must be its administrator" in first.output
    root = cli.invoke(
        app,
        ["site", "user", "add", "root", "--name", "Ada Admin", "--role", "admin", *users,
         "--password-file", admin_pw],
    )  # fmt: skip
    assert root.exit_code == 0, root.output
    assert oct((tmp_path / "site" / "users.sqlite").stat().st_mode & 0o777) == "0o600"
    unsigned = cli.invoke(
        app, ["site", "user", "add", "kim", "--name", "Kim", "--role", "operator", *users],
        input="kim-secret-01\n",
    )  # fmt: skip
    assert unsigned.exit_code == 4 and "needs --admin" in unsigned.output
    kim = cli.invoke(
        app,
        ["site", "user", "add", "kim", "--name", "Kim Lee", "--role", "operator", *users,
         *as_admin, "--password-file", secret(tmp_path, "kim", "kim-secret-01")],
    )  # fmt: skip
    assert kim.exit_code == 0, kim.output
    listed = cli.invoke(app, ["site", "user", "list", *users])
    assert [line.split()[0] for line in listed.output.splitlines()] == ["kim", "root"]
    own = cli.invoke(
        app,
        ["site", "user", "passwd", "kim", *users,
         "--old-password-file", secret(tmp_path, "old", "kim-secret-01"),
         "--password-file", secret(tmp_path, "new", "kim-secret-02")],
    )  # fmt: skip
    assert own.exit_code == 0, own.output
    wrong_old = cli.invoke(
        app,
        ["site", "user", "passwd", "kim", *users,
         "--old-password-file", secret(tmp_path, "old", "kim-secret-01"),
         "--password-file", secret(tmp_path, "new", "kim-secret-03")],
    )  # fmt: skip
    assert wrong_old.exit_code == 4
    by_operator = cli.invoke(
        app,
        ["site", "user", "disable", "root", *users, "--admin", "kim",
         "--admin-password-file", secret(tmp_path, "k", "kim-secret-02")],
    )  # fmt: skip
    assert by_operator.exit_code == 4 and "may not manage-users" in by_operator.output
    disabled = cli.invoke(app, ["site", "user", "disable", "kim", *users, *as_admin])
    assert disabled.exit_code == 0, disabled.output
    listed = cli.invoke(app, ["site", "user", "list", *users])
    assert "disabled" in next(line for line in listed.output.splitlines() if line.startswith("kim"))
