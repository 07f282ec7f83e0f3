"""``holderpo recipe check``: resolve a recipe offline, apply every rule, print a summary."""

from holder_nemo.recipe_check.cli import check, is_reference_recipe

__all__ = ["check", "is_reference_recipe"]
