"""Environments selected from the recipe by dotted path, and NeMo RL's registries they fill.

A recipe names the code behind an environment in its own section, torchtune's ``_component_`` idea::

    env:
      holder_math:
        _component_: holder_nemo.eval.nemo_rl_component     # registers the "holder_math" environment
        num_workers: 8

The component (any importable object, usually a module; ``module.attr`` paths work too) provides

    register(env_name, config) -> list[str]           required: fill NeMo RL's registries (``ENV_REGISTRY`` via
                                                      ``register_env``, ``ACTOR_ENVIRONMENT_REGISTRY``,
                                                      ``PROCESSOR_REGISTRY``); idempotent; returns what it did
    check(config) -> list[tuple[str, str]]            optional: recipe rules as (dotted key, message), offline
    training(config) -> Training | None               optional: a training loop that replaces ``grpo_train``

This is the only way the plugin learns about an environment: ``holder_nemo.nemo_rl`` imports no environment, and
environments import the plugin (dependencies point one way). An ``env.<name>`` section without ``_component_`` is
one of NeMo RL's own environments (``math``, ...). The entry point removes the ``_component_`` keys after
registration, so NeMo RL hands each environment actor only its own settings.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol

from holder_nemo.config.errors import ConfigError

COMPONENT_KEY = "_component_"


class Training(Protocol):
    """A training loop that replaces ``grpo_train`` (ALFWorld's per-step layout): its data, then its loop."""

    def datasets(self, config: Any) -> tuple[Any, Any, dict, dict]:
        """(train, validation, task_to_env, val_task_to_env), in place of NeMo RL's ``setup_response_data`` (called
        before Ray starts: ``run_grpo.prepare``)."""
        ...

    def train(self, session: Any, stop: Any) -> None:
        """Train from the ``run_grpo.Session`` until done or ``stop`` fires (``stop.fired`` set)."""
        ...


def load_component(path: str, key: str) -> Any:
    """Import ``path`` (a module, or ``module.attribute``); ``ConfigError`` naming ``key`` when it does not resolve."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        module, _, attribute = path.rpartition(".")
        if not module or (exc.name not in (path, module) and not path.startswith(f"{exc.name}.")):
            raise
        try:
            return getattr(importlib.import_module(module), attribute)
        except (ModuleNotFoundError, AttributeError):
            raise ConfigError(key, f"cannot import {path!r} (a module or module.attribute)") from None


def components(config: Mapping[str, Any]) -> dict[str, Any]:
    """{env name: component} of a recipe (``config`` a plain mapping or NeMo RL's ``MasterConfig``)."""
    env = config.get("env") if isinstance(config, Mapping) else getattr(config, "env", None)
    return {
        name: load_component(section[COMPONENT_KEY], f"env.{name}.{COMPONENT_KEY}")
        for name, section in (env or {}).items()
        if isinstance(section, Mapping) and section.get(COMPONENT_KEY)
    }


def component_training(found: Mapping[str, Any], config: Any) -> Training | None:
    """The training loop a component supplies for this recipe, or None (NeMo RL's ``grpo_train``); at most one."""
    loops = [(name, loop) for name, c in found.items() if (loop := getattr(c, "training", lambda _: None)(config))]
    if len(loops) > 1:
        raise ConfigError("env", f"components {[n for n, _ in loops]} each replace grpo_train; at most one may")
    return loops[0][1] if loops else None


def strip_component_keys(env_config: dict[str, Any]) -> None:
    """Remove ``_component_`` from every ``env.<name>`` (NeMo RL passes the section to the environment actor)."""
    for section in env_config.values():
        if isinstance(section, dict):
            section.pop(COMPONENT_KEY, None)


def dataset_configs(data_config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every train / validation dataset config (a mapping or a list of them), completed with ``data.default`` the
    way NeMo RL's ``update_single_dataset_config`` does (keys missing from the dataset are taken from the default)."""
    default = data_config.get("default") or {}
    out = []
    for split in ("train", "validation"):
        entries = data_config.get(split)
        if entries is None:
            continue
        for entry in [entries] if isinstance(entries, Mapping) else entries:
            out.append({**default, **entry})
    return out


def required_names(data_config: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(environment names, processor names) the recipe's datasets use. ``data.default.env_name`` counts even when
    every dataset overrides it: NeMo RL v0.7.0 creates that environment too (``extract_necessary_env_names``)."""
    configs = dataset_configs(data_config)
    envs = {c["env_name"] for c in configs if c.get("env_name")}
    default = data_config.get("default") or {}
    if default.get("env_name"):
        envs.add(default["env_name"])
    processors = {c["processor"] for c in configs if c.get("processor")}
    return envs, processors


def registration_problems(
    data_config: Mapping[str, Any], env_config: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    """After registration: what NeMo RL would fail on later (an unregistered ``env_name`` or ``processor``, or an
    environment without its ``env.<name>`` section), as ``(key, message)``. Imports ``nemo_rl``."""
    from nemo_rl.data.processors import PROCESSOR_REGISTRY
    from nemo_rl.environments.utils import ENV_REGISTRY

    envs, processors = required_names(data_config)
    env_config = env_config or {}
    problems = []
    for name in sorted(envs):
        if name not in ENV_REGISTRY:
            known = ", ".join(sorted(ENV_REGISTRY))
            problems.append(
                (
                    "data.*.env_name",
                    f"environment {name!r} is not registered (known: {known}; env.{name}.{COMPONENT_KEY} names the "
                    "code of one of ours)",
                )
            )
        elif name not in env_config:
            problems.append((f"env.{name}", f"missing (data.*.env_name uses environment {name!r})"))
    for name in sorted(processors):
        if name not in PROCESSOR_REGISTRY:
            known = ", ".join(sorted(PROCESSOR_REGISTRY))
            problems.append(("data.*.processor", f"processor {name!r} is not registered (known: {known})"))
    return problems


def register_environment(env_name: str, actor_class_fqn: str) -> str:
    """``register_env`` + the actor's Python (the driver's, ``PY_EXECUTABLES.SYSTEM``), idempotently."""
    from nemo_rl.distributed.ray_actor_environment_registry import ACTOR_ENVIRONMENT_REGISTRY
    from nemo_rl.distributed.virtual_cluster import PY_EXECUTABLES
    from nemo_rl.environments.utils import ENV_REGISTRY, register_env

    if env_name not in ENV_REGISTRY:
        register_env(env_name, actor_class_fqn)
    ACTOR_ENVIRONMENT_REGISTRY.setdefault(actor_class_fqn, PY_EXECUTABLES.SYSTEM)
    return f"env {env_name}"
