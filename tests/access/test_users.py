"""The site's users: the role table decides every act, passwords lock, nothing is reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.access.roles import ACTS_OF, Act, Role, may
from twin.access.users import LOCK_AFTER, AccessRefused, UserStore, UserStoreError

PASSWORD = "correct-horse-1"

#: What each role may do, written out as the site's SOPs say it (not derived from ACTS_OF).
AT_THE_BAG = {"hold", "restart", "pause", "resume", "confirm-identity", "scan-lot", "acknowledge"}
EXPECTED = {
    Role.OPERATOR: AT_THE_BAG,
    Role.SUPERVISOR: AT_THE_BAG | {"stop", "abort", "resume-interrupted", "acknowledge-critical"},
    Role.QA: {"qc-result", "review", "approve"},
    Role.ENGINEER: {"run-development"},
    Role.ADMIN: {"manage-users"},
}


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    s = UserStore.open(tmp_path / "users.sqlite", create=True)
    s.add("root", "Site Admin", [Role.ADMIN], "root-pass-0001", by=None)
    admin = s.sign("root", "root-pass-0001", Act.MANAGE_USERS)
    for role in Role:
        if role is not Role.ADMIN:
            s.add(role.value, f"A {role.value}", [role], PASSWORD, by=admin)
    s.add("admin2", "Second Admin", [Role.ADMIN], PASSWORD, by=admin)
    return s


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("act", list(Act))
def test_every_act_by_every_role_is_allowed_or_refused_and_audited(
    store: UserStore, role: Role, act: Act
) -> None:
    user = "admin2" if role is Role.ADMIN else role.value
    before = len(store.audit())
    if act.value in EXPECTED[role]:
        signer = store.sign(user, PASSWORD, act)
        assert (signer.user, signer.act) == (user, act.value)
        assert signer.meaning == {"review": "reviewed", "approve": "approved"}.get(
            act.value, "verified" if act in (Act.CONFIRM_IDENTITY, Act.SCAN_LOT) else "performed"
        )
        assert len(store.audit()) == before
    else:
        with pytest.raises(AccessRefused, match=f"role {role.value} may not {act.value}"):
            store.sign(user, PASSWORD, act)
        last = store.audit()[-1]
        assert (last[2], last[3], last[4]) == (user, "refused", user)
        assert act.value in last[5]
    assert may({role}, act) == (act.value in EXPECTED[role]) == (act in ACTS_OF[role])


def test_wrong_passwords_lock_the_account_until_an_admin_unlocks_it(store: UserStore) -> None:
    for _ in range(LOCK_AFTER - 1):
        with pytest.raises(AccessRefused, match="unknown user or wrong password"):
            store.sign("operator", "guess", Act.HOLD)
    with pytest.raises(AccessRefused, match="unknown user or wrong password"):
        store.sign("operator", "guess", Act.HOLD)  # the fifth: locked, and audited so
    with pytest.raises(AccessRefused, match="unknown user or wrong password"):
        store.sign("operator", PASSWORD, Act.HOLD)  # even the right password: locked
    assert store.get("operator").locked  # type: ignore[union-attr]
    assert "HOLD: the account is locked (right password)".lower() in str(store.audit()).lower()
    store.unlock("operator", by=store.sign("root", "root-pass-0001", Act.MANAGE_USERS))
    assert store.sign("operator", PASSWORD, Act.HOLD).user == "operator"
    actions = [row[3] for row in store.audit()]
    assert actions.count("refused") == LOCK_AFTER + 1 and "locked" in actions
    assert actions[-1] == "unlock"


def test_a_right_password_resets_the_count(store: UserStore) -> None:
    for _ in range(3):
        for _ in range(LOCK_AFTER - 1):
            with pytest.raises(AccessRefused):
                store.sign("operator", "guess", Act.HOLD)
        store.sign("operator", PASSWORD, Act.HOLD)
    assert not store.get("operator").locked  # type: ignore[union-attr]


def test_unknown_user_and_wrong_password_read_the_same(store: UserStore) -> None:
    with pytest.raises(AccessRefused) as unknown:
        store.sign("nobody", PASSWORD, Act.HOLD)
    with pytest.raises(AccessRefused) as wrong:
        store.sign("operator", "guess", Act.HOLD)
    assert unknown.value.reason == wrong.value.reason


def test_a_locked_or_disabled_account_reads_as_an_unknown_id_whatever_the_password(
    store: UserStore,
) -> None:
    """Nobody learns which ids exist or are locked by guessing, nor, once an account is
    locked, whether a guess was right: every refusal reads the same. The administrator's
    audit says what each was."""
    admin = store.sign("root", "root-pass-0001", Act.MANAGE_USERS)
    store.add("lou", "Lou Locked", [Role.OPERATOR], PASSWORD, by=admin)
    store.add("dee", "Dee Disabled", [Role.OPERATOR], PASSWORD, by=admin)
    store.disable("dee", by=admin)
    reasons = set()
    for user in ("lou", "ghost", "dee"):
        for password in ["guess"] * (LOCK_AFTER + 2) + [PASSWORD]:
            with pytest.raises(AccessRefused) as refused:
                store.sign(user, password, Act.HOLD)
            reasons.add(refused.value.reason)
    assert len(reasons) == 1 and "unknown user or wrong password" in reasons.pop()
    assert store.get("lou").locked  # type: ignore[union-attr]
    audited = [row[5] for row in store.audit() if row[3] == "refused"]
    assert "hold: the account is locked (right password)" in audited
    assert "hold: the account is locked (wrong password)" in audited
    assert "hold: the account is disabled" in audited and "hold: unknown user" in audited


def test_disabled_users_sign_nothing_and_keep_their_id(store: UserStore) -> None:
    admin = store.sign("root", "root-pass-0001", Act.MANAGE_USERS)
    store.disable("operator", by=admin)
    with pytest.raises(AccessRefused, match="unknown user or wrong password"):
        store.sign("operator", PASSWORD, Act.HOLD)
    with pytest.raises(UserStoreError, match="never reused"):
        store.add("operator", "Someone Else", [Role.OPERATOR], PASSWORD, by=admin)
    assert store.get("operator").name == "A operator"  # type: ignore[union-attr]


def test_passwords_are_stored_as_salted_scrypt_hashes(store: UserStore, tmp_path: Path) -> None:
    raw = (tmp_path / "users.sqlite").read_bytes()
    assert PASSWORD.encode() not in raw
    hashes = [r[0] for r in store._db.execute("SELECT hash FROM users")]
    assert all(h.startswith("scrypt$") for h in hashes)
    assert len(set(hashes)) == len(hashes)  # same password, different salts


@pytest.mark.parametrize(
    ("user_id", "roles", "password", "problem"),
    [
        ("x/../y", [Role.OPERATOR], PASSWORD, "not a safe name"),
        ("ok", [Role.ADMIN, Role.OPERATOR], PASSWORD, "segregation of duties"),
        ("ok", [], PASSWORD, "at least one role"),
        ("ok", [Role.OPERATOR], "short", "at least 8 characters"),
        ("longname1", [Role.OPERATOR], "LONGNAME1", "may not be the user id"),
        ("engine", [Role.OPERATOR], PASSWORD, "names the batch's own acts"),  # "engine holds"
        ("Engine", [Role.SUPERVISOR], PASSWORD, "names the batch's own acts"),
        ("batch", [Role.OPERATOR], PASSWORD, "names the batch's own acts"),
    ],
)
def test_bad_users_are_refused(
    store: UserStore, user_id: str, roles: list[Role], password: str, problem: str
) -> None:
    admin = store.sign("root", "root-pass-0001", Act.MANAGE_USERS)
    with pytest.raises(UserStoreError, match=problem):
        store.add(user_id, "Name", roles, password, by=admin)


def test_only_an_admin_manages_users(store: UserStore, tmp_path: Path) -> None:
    supervisor = store.sign("supervisor", PASSWORD, Act.STOP)
    with pytest.raises(UserStoreError, match="not for managing users"):
        store.add("new", "New", [Role.OPERATOR], PASSWORD, by=supervisor)
    with pytest.raises(UserStoreError, match="administrator's signature"):
        store.add("new", "New", [Role.OPERATOR], PASSWORD, by=None)
    fresh = UserStore.open(tmp_path / "other.sqlite", create=True)
    with pytest.raises(UserStoreError, match="must be its administrator"):
        fresh.add("op", "Op", [Role.OPERATOR], PASSWORD, by=None)


def test_a_user_with_a_reserved_id_made_before_it_was_reserved_signs_nothing(
    store: UserStore,
) -> None:
    """A user 'engine' from an older users file: their acts would read as the batch's own
    (and their signature could not bind to them), so they sign nothing."""
    store._db.execute(
        "INSERT INTO users (id, name, roles, hash, created, changed) "
        "SELECT 'engine', 'Old Engine', roles, hash, created, changed FROM users WHERE id = ?",
        ("operator",),
    )
    with pytest.raises(AccessRefused, match="unknown user or wrong password"):
        store.sign("engine", PASSWORD, Act.HOLD)
    assert store.sign("operator", PASSWORD, Act.HOLD).user == "operator"
