"""The role table: which site role may perform which act, and what signing it means.

Roles are not ranks: a supervisor may do what an operator may, and more, but QA
holds no batch command and an administrator, who manages users, takes no batch
action at all (segregation of duties, EU GMP Annex 11 §12). The table is the
only place this is decided; docs/access.md prints it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTS_OF", "MEANING", "Act", "Role", "may", "roles_for"]


class Role(StrEnum):
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    QA = "qa"
    ENGINEER = "engineer"
    ADMIN = "admin"


class Act(StrEnum):
    """Everything a person signs for. Batch commands keep their command names."""

    HOLD = "hold"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    ABORT = "abort"
    CONFIRM_IDENTITY = "confirm-identity"
    SCAN_LOT = "scan-lot"
    ACKNOWLEDGE = "acknowledge"
    ACKNOWLEDGE_CRITICAL = "acknowledge-critical"
    RESUME_INTERRUPTED = "resume-interrupted"
    QC_RESULT = "qc-result"
    REVIEW = "review"
    APPROVE = "approve"
    RUN_DEVELOPMENT = "run-development"
    MANAGE_USERS = "manage-users"


_OPERATOR = frozenset(
    {
        Act.HOLD,
        Act.RESTART,
        Act.PAUSE,
        Act.RESUME,
        Act.CONFIRM_IDENTITY,
        Act.SCAN_LOT,
        Act.ACKNOWLEDGE,
    }
)
ACTS_OF: dict[Role, frozenset[Act]] = {
    Role.OPERATOR: _OPERATOR,
    Role.SUPERVISOR: _OPERATOR
    | {Act.STOP, Act.ABORT, Act.RESUME_INTERRUPTED, Act.ACKNOWLEDGE_CRITICAL},
    Role.QA: frozenset({Act.QC_RESULT, Act.REVIEW, Act.APPROVE}),
    Role.ENGINEER: frozenset({Act.RUN_DEVELOPMENT}),
    Role.ADMIN: frozenset({Act.MANAGE_USERS}),
}

#: The meaning a signature carries (21 CFR 11.50(a)(3)).
MEANING: dict[Act, str] = {act: "performed" for act in Act}
MEANING.update(
    {
        Act.CONFIRM_IDENTITY: "verified",
        Act.SCAN_LOT: "verified",
        Act.REVIEW: "reviewed",
        Act.APPROVE: "approved",
    }
)


def may(roles: frozenset[Role] | set[Role], act: Act) -> bool:
    """True if any of ``roles`` permits ``act``."""
    return any(act in ACTS_OF[role] for role in roles)


def roles_for(act: Act) -> list[Role]:
    """The roles that permit ``act``, for a refusal that says who could."""
    return [role for role in Role if act in ACTS_OF[role]]
