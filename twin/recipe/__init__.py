"""Recipes: parse, validate against the bench, and pin by content hash."""

from twin.recipe.loader import LoadedRecipe, content_hash, load_recipe
from twin.recipe.model import Header, Operation, Recipe, UnitProcedure

__all__ = [
    "Header",
    "LoadedRecipe",
    "Operation",
    "Recipe",
    "UnitProcedure",
    "content_hash",
    "load_recipe",
]
