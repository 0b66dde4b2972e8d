"""The site's master-file register: which recipe versions a site may run.

Point-of-care rules allow only products made to their approved master file. A site
keeps a register of approved recipe hashes (``approved-recipes.yaml`` next to its
bench files); outside a development bench a recipe whose
exact text is not in it, or whose status is not ``approved``, is refused at load.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from twin.errors import InvalidInput, Problem
from twin.recipe.loader import LoadedRecipe
from twin.sourcemap import load_yaml, validate_document

__all__ = ["ApprovedRecipe", "Register", "check_approval", "load_register"]

REGISTER_NAME = "approved-recipes.yaml"


class ApprovedRecipe(BaseModel):
    """One approved master-file version."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    id: str
    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    approved_by: str
    approved_on: date


class Register(BaseModel):
    """The site's register of approved recipes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    site: str
    approved: list[ApprovedRecipe] = Field(default_factory=list)


def load_register(path: Path) -> Register:
    data, source = load_yaml(path)
    return validate_document(Register, data, source, [Register, ApprovedRecipe])


def check_approval(recipe: LoadedRecipe, development: bool, register: Path) -> list[Problem]:
    """Problems that keep this recipe from running on a production bench (none on a dev bench)."""
    if development:
        return []
    header = recipe.model.recipe
    src = recipe.source
    if header.status != "approved":
        return [
            src.problem(
                ["recipe", "status"],
                f"recipe status is '{header.status}': only an "
                "approved master-file version may run on a production bench",
            )
        ]
    path = register
    if not path.exists():
        return [
            Problem(
                str(path),
                1,
                1,
                "no master-file register: a production bench runs only "
                "recipes whose hash the site has approved",
            )
        ]
    try:
        entries = load_register(path).approved
    except InvalidInput as exc:
        return exc.problems
    for entry in entries:
        if entry.sha256 == recipe.sha256:
            return []
    versions = [e.version for e in entries if e.id == header.id]
    known = f" (approved versions of {header.id}: {', '.join(versions)})" if versions else ""
    return [
        src.problem(
            ["recipe", "version"],
            f"recipe {header.id} v{header.version} with hash "
            f"{recipe.sha256[:16]}… is not in the site's register {path}{known}",
        )
    ]
