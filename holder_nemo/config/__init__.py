"""Recipes: the one loader (``loading.py``) and the structured error type and report (``errors.py``), shared by
every ``holderpo`` command and the NeMo RL entry point."""

from holder_nemo.config.errors import EXIT_BAD_INPUT, ConfigError, print_problems
from holder_nemo.config.loading import load_recipe, to_plain

__all__ = ["EXIT_BAD_INPUT", "ConfigError", "load_recipe", "print_problems", "to_plain"]
