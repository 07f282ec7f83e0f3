"""Recipes: the one loader (``loading.py``) and the structured error type and report (``errors.py``), shared by
every ``holderpo`` command and the NeMo RL entry point."""

from holder_nemo.config.errors import EXIT_BAD_INPUT, ConfigError, Finding, Report, print_problems
from holder_nemo.config.loading import apply_overrides, load_recipe, load_yaml_with_inheritance, to_plain

__all__ = [
    "EXIT_BAD_INPUT",
    "ConfigError",
    "Finding",
    "Report",
    "apply_overrides",
    "load_recipe",
    "load_yaml_with_inheritance",
    "print_problems",
    "to_plain",
]
