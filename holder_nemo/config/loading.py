"""The one recipe loader: YAML files with NeMo RL's conventions, ``defaults:`` inheritance, ``_override_``, and
Hydra's override grammar. ``holderpo train``, ``holderpo recipe check``, ``holderpo schedule`` and the NeMo RL entry
point all load recipes here.

Semantics follow NeMo RL v0.7.0's ``nemo_rl/utils/config.py`` (re-implemented, not copied; a test compares the two
on every shipped recipe):

* ``defaults:`` is a path or a list of paths, relative to the file that names them, loaded recursively; later
  parents override earlier ones and the child overrides all of them (deep merge).
* A mapping containing ``_override_: true`` replaces the inherited mapping instead of deep-merging into it.
* Interpolations ``${...}`` and the resolvers ``add``, ``mul``, ``div``, ``max`` are available.
* Command-line overrides use Hydra's grammar: ``a.b=v`` changes an existing key (an unknown key is an error that
  names it), ``+a.b=v`` adds a new key, ``++a.b=v`` adds or changes, ``~a.b`` deletes.

Every problem is a ``ConfigError`` naming the file and line (or the key) and what to do: a missing file, a
directory, a file that is not YAML (by its suffix), not UTF-8, a YAML syntax error, a key written twice in one
mapping (OmegaConf, which NeMo RL loads with, refuses those too; YAML itself would keep the later one silently), an
empty file, a top level that is not a mapping.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from holder_nemo.config.errors import ConfigError

OVERRIDE_MARKER = "_override_"
RECIPE_SUFFIXES = (".yaml", ".yml")
_MISSING = object()  # sentinel: OmegaConf.select default for "key absent"


def register_resolvers() -> None:
    """Register NeMo RL's arithmetic resolvers once (idempotent)."""
    resolvers = {
        "add": lambda *xs: sum(xs),
        "mul": lambda *xs: math.prod(xs),
        "div": lambda a, b: a / b,
        "max": lambda *xs: max(xs),
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first_line: int, line: int) -> None:
        self.key, self.first_line, self.line = key, first_line, line


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (``<<`` merge keys excepted)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise _DuplicateKey(key, first[key], line)
                first[key] = line
            except TypeError:  # an unhashable (complex) key: the base class reports it
                continue
        return super().construct_mapping(node, deep=deep)


_RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _RecipeLoader.construct_mapping)


def _syntax_hint(problem: str) -> str:
    if "'\\t'" in problem:
        return "YAML indents with spaces, not tabs"
    if "mapping values are not allowed" in problem:
        return "a value containing ': ' needs quotes, or this line is indented wrongly"
    return "check the indentation, brackets and quotes on this line and the one before"


def read_yaml(path: Path) -> dict[str, Any]:
    """One YAML file as a plain dict; ``ConfigError`` naming the file (and line) and the fix otherwise."""
    where = str(path)
    if path.is_dir():
        examples = sorted(p.name for p in path.glob("*.y*ml"))[:3]
        hint = f" (e.g. {', '.join(str(path / e) for e in examples)})" if examples else ""
        raise ConfigError(where, f"is a directory, not a recipe: give a recipe YAML file{hint}")
    if not path.is_file():
        raise ConfigError(where, "no such recipe file (recipes/*.yaml are the shipped ones)")
    if path.suffix.lower() not in RECIPE_SUFFIXES:
        kind = f"a '{path.suffix}' file" if path.suffix else "no .yaml suffix"
        raise ConfigError(where, f"not a YAML recipe ({kind}): give a .yaml recipe, e.g. recipes/smoke_cpu.yaml")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{where}:{line}", f"not UTF-8 (byte 0x{raw[exc.start]:02x}): save the file as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_RecipeLoader)
    except _DuplicateKey as dup:
        raise ConfigError(
            f"{where}:{dup.line}",
            f"duplicate key {dup.key!r} (first at line {dup.first_line}); YAML would silently keep the later one: "
            "merge the two or delete one",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or str(exc)
        started = exc.context_mark.line + 1 if exc.context_mark is not None else None
        context = f" ({exc.context} that starts on line {started})" if exc.context and started else ""
        raise ConfigError(f"{where}{line}", f"YAML syntax error: {problem}{context}; {_syntax_hint(problem)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(where, f"not valid YAML: {exc}") from None
    if data is None:
        raise ConfigError(where, "the file is empty: a recipe is a mapping of sections (grpo, loss_fn, policy, ...)")
    if not isinstance(data, dict):
        kind = "text" if isinstance(data, str) else f"a {type(data).__name__}"
        raise ConfigError(where, f"the top level must be a mapping of sections (key: value lines), got {kind}")
    return data


def _merge(base: Any, child: Any) -> Any:
    """Deep merge of plain containers; ``_override_: true`` in a child mapping replaces the base mapping."""
    if isinstance(child, dict):
        child = dict(child)
        if child.pop(OVERRIDE_MARKER, False) or not isinstance(base, dict):
            return {k: _merge(None, v) for k, v in child.items()}
        merged = dict(base)
        for key, value in child.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return child


def _strip_markers(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_markers(v) for k, v in node.items() if k != OVERRIDE_MARKER}
    if isinstance(node, list):
        return [_strip_markers(v) for v in node]
    return node


def load_yaml_with_inheritance(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a YAML file and its ``defaults:`` parents into one plain dict (interpolations left unresolved)."""
    path = Path(path)
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ConfigError(str(path), f"defaults: inheritance cycle: {chain}")
    data = read_yaml(path)
    parents = data.pop("defaults", None)
    if parents is None:
        return data
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(str(path), f"defaults: must be a path or a list of paths, got {parents!r}")
    merged: Any = {}
    for parent in parents:
        merged = _merge(merged, load_yaml_with_inheritance(path.parent / parent, (*_seen, path.resolve())))
    return _merge(merged, data)


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply Hydra-grammar overrides to ``cfg`` in place (struct mode: unknown keys need ``+``/``++``)."""
    if not overrides:
        return cfg
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:  # one at a time, so the error names the override that does not parse
        try:
            parsed += parser.parse_overrides([text])
        except HydraException as exc:
            reason = str(exc).splitlines()[0]
            raise ConfigError(text, f"not an override ({reason}); the grammar is key=value, +key=value, ~key") from None
    OmegaConf.set_struct(cfg, True)
    for override in parsed:
        key = override.key_or_group
        exists = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is not _MISSING
        if override.is_delete():
            if not exists:
                raise ConfigError(key, f"~{key}: no such key to delete")
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            with open_dict(parent):
                del parent[leaf]
            continue
        value = override.value()
        if override.is_add() and exists:
            raise ConfigError(key, f"already exists, so +{key}=... cannot add it; use {key}=... or ++{key}=...")
        if not (override.is_add() or override.is_force_add()) and not exists:
            raise ConfigError(key, f"unknown key (misspelt?); use +{key}=... to add a new key")
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    return cfg


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a recipe with inheritance, apply CLI overrides, and resolve interpolations.

    Returns a ``DictConfig`` in struct mode, so reading a misspelt key raises instead of returning ``None``.
    """
    register_resolvers()
    cfg = OmegaConf.create(_strip_markers(load_yaml_with_inheritance(path)))
    apply_overrides(cfg, overrides)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(_failing_key(cfg) or str(path), f"cannot resolve: {reason}") from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def _failing_key(cfg: DictConfig) -> str | None:
    """The dotted key of the first interpolation that does not resolve (``OmegaConf.resolve`` does not say)."""

    def interpolations(node: Any, prefix: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from interpolations(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from interpolations(value, f"{prefix}[{i}]")
        elif isinstance(node, str) and "${" in node:
            yield prefix

    for key in interpolations(OmegaConf.to_container(cfg, resolve=False), ""):
        try:
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except OmegaConfBaseException:
            return key
    return None


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved recipe as plain dicts and lists (what NeMo RL's ``MasterConfig`` and the schemas take)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
