"""Signed acts on ended batches (alarm acknowledgement, QA's review and approval) and the
site's users (`poc-twin site user ...`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from twin.access.roles import Act, Role
from twin.access.users import AccessRefused, Signer, UserStore, UserStoreError
from twin.cli.common import EXIT_FAIL, EXIT_INVALID, EXIT_REFUSED, _fail, app, out, said
from twin.cli.esign import PasswordFileOpt, UsersOpt, open_users, read_password, refused
from twin.errors import PocTwinError

__all__ = ["acknowledge_ended", "user_app"]

user_app = typer.Typer(help="The site's users and their roles.", no_args_is_help=True)


def _comment(text: str) -> str:
    """A signed entry's comment: what was seen or decided, never empty (exit 2)."""
    if not text.strip():
        raise _fail("--comment must say what was seen or decided; nothing written", EXIT_INVALID)
    return said(text, "--comment")


def _sign_entry(
    journal: Path, user: str, password_file: Path | None, users: Path | None, act: Act
) -> Signer:
    """``user``'s signature for an entry into an ended batch's journal; a refusal is
    journalled there and exits 4."""
    from twin.access.entries import batch_is_running, journal_refusal_in

    if batch_is_running(journal):
        raise _fail(
            f"{journal}: a batch process is still writing this journal; sign entries into it "
            "after the batch has ended (alarms: poc-twin ack, through the running batch)",
            EXIT_FAIL,
        )
    store = open_users(users)
    try:
        return store.sign(user, read_password(user, password_file), act)
    except AccessRefused as exc:
        journal_refusal_in(journal, exc)
        raise refused(exc) from None
    except UserStoreError as exc:  # the users file locked by another process
        raise refused(exc) from None
    finally:
        store.close()


def acknowledge_ended(
    journal: Path,
    alarm: int,
    user: str,
    comment: str,
    password_file: Path | None,
    users: Path | None,
) -> None:
    """Acknowledge an alarm of an ended batch: appended to its journal, signed."""
    from twin.access.entries import EntryRefused, alarm_to_acknowledge, write_alarm_ack

    try:
        _comment(comment)
        raised, act = alarm_to_acknowledge(journal, alarm)
    except EntryRefused as exc:
        raise _fail(str(exc), EXIT_REFUSED if exc.refused else EXIT_INVALID) from None
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_INVALID) from None
    person = _sign_entry(journal, user, password_file, users, act)
    try:
        write_alarm_ack(journal, raised, person, comment)
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    out.print(f"alarm {alarm} acknowledged by {person.name}", markup=False)


@app.command("review")
def review(
    journal: Annotated[Path, typer.Argument(help="Journal file of the ended batch")],
    operator: Annotated[str, typer.Option(help="Your site user id (QA)")],
    comment: Annotated[str, typer.Option(help="What you reviewed, or why you approve")],
    approve: Annotated[
        bool, typer.Option("--approve", help="Approve the record (else: reviewed)")
    ] = False,
    password_file: PasswordFileOpt = None,
    users: UsersOpt = None,
) -> None:
    """QA's signed review, or approval, of an ended batch's record."""
    from twin.access.entries import EntryRefused, record_to_sign, write_record_signature

    try:
        intact = record_to_sign(journal)
    except EntryRefused as exc:  # not ended: a state refusal; a broken chain: a failure
        raise _fail(str(exc), EXIT_REFUSED if exc.refused else EXIT_FAIL) from None
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_INVALID) from None
    _comment(comment)
    person = _sign_entry(
        journal, operator, password_file, users, Act.APPROVE if approve else Act.REVIEW
    )
    try:
        write_record_signature(journal, intact, person, comment)
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    out.print(f"record {person.meaning} by {person.name} ({person.user})", markup=False)


# -- site users ---------------------------------------------------------------------

AdminOpt = Annotated[
    str | None, typer.Option("--admin", help="The administrator who signs this change")
]


AdminPasswordOpt = Annotated[Path | None, typer.Option(help="The admin's password file")]


def _admin(store_users: Path | None, admin: str | None, password_file: Path | None) -> Signer:
    store = open_users(store_users)
    try:
        if admin is None:
            raise _fail("managing users needs --admin ID (an administrator signs)", EXIT_REFUSED)
        return store.sign(
            admin, read_password(admin, password_file, "admin password"), Act.MANAGE_USERS
        )
    except (AccessRefused, UserStoreError) as exc:
        raise refused(exc) from None
    finally:
        store.close()


def _roles(values: list[str]) -> list[Role]:
    try:
        return [Role(v) for v in values]
    except ValueError:
        valid = ", ".join(r.value for r in Role)
        raise _fail(f"--role must be one of: {valid}", EXIT_INVALID) from None


def _new_password(user: str, password_file: Path | None) -> str:
    return read_password(user, password_file, "new password")


@user_app.command("add")
def user_add(
    user_id: Annotated[str, typer.Argument(help="The user id (unique, never reused)")],
    name: Annotated[str, typer.Option(help="Printed name, as it appears on signatures")],
    role: Annotated[
        list[str], typer.Option("--role", help="operator, supervisor, qa, engineer, admin")
    ],
    admin: AdminOpt = None,
    admin_password_file: AdminPasswordOpt = None,
    password_file: Annotated[
        Path | None, typer.Option(help="The new user's first password (file, mode 0600)")
    ] = None,
    users: UsersOpt = None,
) -> None:
    """Add a user; the first user of a site is its administrator (no --admin needed)."""
    roles = _roles(role)
    store = open_users(users, create=True)
    try:
        by = None if store.is_empty() else _admin(users, admin, admin_password_file)
        user = store.add(user_id, name, roles, _new_password(user_id, password_file), by=by)
    except UserStoreError as exc:
        raise _fail(f"{exc}; nothing changed", EXIT_INVALID) from None
    finally:
        store.close()
    out.print(f"{user.id} ({user.name}): {', '.join(sorted(user.roles))}", markup=False)


def _admin_change(
    users: Path | None,
    admin: str | None,
    admin_password_file: Path | None,
    change: Callable[[UserStore, Signer], None],
    done: str,
) -> None:
    """One user change signed by an administrator; exit 2 if the change is invalid."""
    by = _admin(users, admin, admin_password_file)
    store = open_users(users)
    try:
        change(store, by)
    except UserStoreError as exc:
        raise _fail(f"{exc}; nothing changed", EXIT_INVALID) from None
    finally:
        store.close()
    out.print(done, markup=False)


@user_app.command("disable")
def user_disable(
    user_id: Annotated[str, typer.Argument(help="The user id")],
    admin: AdminOpt = None,
    admin_password_file: AdminPasswordOpt = None,
    users: UsersOpt = None,
) -> None:
    """Disable a user: they sign nothing any more; their id, name and history stay."""
    _admin_change(
        users,
        admin,
        admin_password_file,
        lambda store, by: store.disable(user_id, by=by),
        f"{user_id} disabled",
    )


@user_app.command("unlock")
def user_unlock(
    user_id: Annotated[str, typer.Argument(help="The user id")],
    admin: AdminOpt = None,
    admin_password_file: AdminPasswordOpt = None,
    users: UsersOpt = None,
) -> None:
    """Unlock an account locked by wrong passwords."""
    _admin_change(
        users,
        admin,
        admin_password_file,
        lambda store, by: store.unlock(user_id, by=by),
        f"{user_id} unlocked",
    )


@user_app.command("passwd")
def user_passwd(
    user_id: Annotated[str, typer.Argument(help="The user id")],
    admin: AdminOpt = None,
    admin_password_file: AdminPasswordOpt = None,
    old_password_file: Annotated[
        Path | None, typer.Option(help="Your current password (file), when you change your own")
    ] = None,
    password_file: Annotated[Path | None, typer.Option(help="The new password (file)")] = None,
    users: UsersOpt = None,
) -> None:
    """Change a password: your own (with the current one) or, as administrator, anyone's."""
    if admin is not None:
        by = _admin(users, admin, admin_password_file)
    else:
        store = open_users(users)
        try:  # the user signs with the old password; any act they may do proves it is them
            by = store.sign_in(
                user_id, read_password(user_id, old_password_file, "current password")
            )
        except (AccessRefused, UserStoreError) as exc:
            raise refused(exc) from None
        finally:
            store.close()
    store = open_users(users)
    try:
        store.set_password(user_id, _new_password(user_id, password_file), by=by)
    except UserStoreError as exc:
        raise _fail(f"{exc}; nothing changed", EXIT_INVALID) from None
    finally:
        store.close()
    out.print(f"password of {user_id} changed", markup=False)


@user_app.command("list")
def user_list(users: UsersOpt = None) -> None:
    """The site's users: id, printed name, roles, and whether disabled or locked."""
    store = open_users(users)
    try:
        listed = store.users()
    except UserStoreError as exc:
        raise refused(exc) from None
    finally:
        store.close()
    for u in listed:
        flags = " ".join(f for f, on in (("disabled", u.disabled), ("locked", u.locked)) if on)
        out.print(
            f"{u.id:20} {u.name:30} {','.join(sorted(u.roles)):22} {flags}".rstrip(),
            markup=False,
            highlight=False,
        )
