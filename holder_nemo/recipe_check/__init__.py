"""``holderpo recipe check``: resolve a recipe offline, apply every rule, print a summary."""
