"""NeMo RL v0.7.0's GRPO ``MasterConfig`` as a key table, so that ``holderpo recipe check`` knows NeMo RL's keys and
types without NeMo RL installed.

The table, ``master_config_schema.json`` beside this file, is *generated* from NeMo RL's own TypedDicts by
``generate()``: ``python -m holder_nemo.nemo_rl.master_config_schema --write`` with nemo_rl importable (a v0.7.0
source tree on PYTHONPATH, docs/recipes.md); ``tests/recipes/test_master_config_schema.py`` regenerates it and
compares. Two sections are left out because others own them: ``loss_fn`` (the HölderPO plugin's schema,
``nemo_rl/loss_config.py``) and ``env`` (each environment's component, ``components.py``).

``check_master_config(cfg)`` checks a resolved recipe against the table: required keys present; types (``int`` is not
a bool, ``float`` accepts an int, ``os.PathLike`` is a string); ``Literal`` values; ``enabled``-tagged alternatives
(``MegatronConfig | MegatronConfigDisabled``) chosen by their ``enabled`` value. Keys NeMo RL does not declare are left
alone, as NeMo RL's pydantic validation leaves them. With the vLLM backend ``policy.generation`` must also be a
``VllmConfig`` (``VllmGeneration.__init__`` checks its required keys), except the keys that
``configure_generation_config`` and ``grpo.setup`` fill in before it.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("master_config_schema.json")
OWNED_ELSEWHERE = ("loss_fn", "env")
# Filled in before VllmGeneration reads them: configure_generation_config (skip_tokenizer_init, load_format) and
# grpo.setup (model_name); a recipe need not set them.
FILLED_BY_NEMO_RL = (
    "policy.generation.vllm_cfg.skip_tokenizer_init",
    "policy.generation.vllm_cfg.load_format",
    "policy.generation.model_name",
)

# A type in the table: "int", "float", "bool", "str", "null" or "any"; or {"typeddict": NAME}, {"union": [...]},
# {"list": TYPE}, {"dict": TYPE}, {"literal": [VALUES]}. A typeddict is {"required": {KEY: TYPE}, "optional": {...}}.
Type = str | dict[str, Any]


# ------------------------------------------------------------------------------------ generation (needs nemo_rl)


def generate() -> dict[str, Any]:
    """The table from the importable nemo_rl's ``MasterConfig`` (and ``VllmConfig``)."""
    from holder_nemo.nemo_rl.master_config import typed_dict_for_old_python

    typed_dict_for_old_python()
    import typing_extensions
    from nemo_rl.algorithms.grpo import MasterConfig
    from nemo_rl.models.generation.vllm.config import VllmConfig
    from pydantic import BaseModel

    records: dict[str, dict[str, Any]] = {}
    classes: dict[str, Any] = {}

    def record(cls: Any, fields: dict[str, Any], required: set[str]) -> dict[str, str]:
        name = cls.__name__
        if name in classes:
            if classes[name] is not cls:  # the table names TypedDicts by class name: they must be unique
                raise RuntimeError(f"two NeMo RL config classes are called {name}: {classes[name]} and {cls}")
            return {"typeddict": name}
        classes[name], records[name] = cls, {}  # registered first: recursive TypedDicts refer to themselves
        records[name] = {
            "required": {k: describe(t) for k, t in sorted(fields.items()) if k in required},
            "optional": {k: describe(t) for k, t in sorted(fields.items()) if k not in required},
        }
        return {"typeddict": name}

    def describe(tp: Any) -> Type:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp in (int, float, bool, str):
            return tp.__name__
        if tp is type(None):
            return "null"
        if typing_extensions.is_typeddict(tp):
            return record(tp, typing_extensions.get_type_hints(tp), set(tp.__required_keys__))
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {k: f.annotation for k, f in tp.model_fields.items()}
            return record(tp, fields, {k for k, f in tp.model_fields.items() if f.is_required()})
        if origin in (typing.Union, types.UnionType):
            members: list[Type] = []
            for arg in args:
                member = describe(arg)
                if member not in members:
                    members.append(member)
            return members[0] if len(members) == 1 else {"union": members}
        if origin is typing.Literal:
            return {"literal": list(args)}
        if origin in (list, tuple, set) or tp in (list, tuple):
            return {"list": describe(args[0]) if args else "any"}
        if origin is dict or tp is dict:
            return {"dict": describe(args[1]) if len(args) == 2 else "any"}
        if tp is os.PathLike or origin is os.PathLike:
            return "str"
        return "any"

    import nemo_rl

    sections = {
        name: {"type": describe(field.annotation), "required": field.is_required()}
        for name, field in MasterConfig.model_fields.items()
        if name not in OWNED_ELSEWHERE
    }
    vllm = describe(VllmConfig)
    return {
        "generated_from": f"nemo_rl {nemo_rl.__version__}: nemo_rl.algorithms.grpo.MasterConfig, "
        "nemo_rl.models.generation.vllm.config.VllmConfig (python -m holder_nemo.nemo_rl.master_config_schema --write)",
        "sections": sections,
        "vllm_generation": vllm,
        "typeddicts": dict(sorted(records.items())),
    }


# ------------------------------------------------------------------------------------------- checking (offline)


@functools.cache
def table() -> dict[str, Any]:
    return json.loads(TABLE.read_text())


_SCALARS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "null": lambda v: v is None,
    "any": lambda v: True,
}


def _name(tp: Type) -> str:
    if isinstance(tp, str):
        return tp
    if "typeddict" in tp:
        return f"a mapping (NeMo RL's {tp['typeddict']})"
    if "union" in tp:
        return " or ".join(_name(t) for t in tp["union"])
    if "literal" in tp:
        return "one of " + ", ".join(json.dumps(v) for v in tp["literal"])
    return "a list" if "list" in tp else "a mapping"


def _got(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _tag(tp: Type) -> list[Any] | None:
    """The ``enabled`` literal of a TypedDict alternative (``MegatronConfigDisabled``: [False]), or None."""
    if isinstance(tp, dict) and "typeddict" in tp:
        enabled = table()["typeddicts"][tp["typeddict"]]["required"].get("enabled")
        if isinstance(enabled, dict) and "literal" in enabled:
            return enabled["literal"]
    return None


def _union_problems(value: Any, members: list[Type], key: str) -> list[tuple[str, str]]:
    tags = [_tag(m) for m in members]
    if isinstance(value, Mapping) and "enabled" in value and any(t is not None for t in tags):
        for member, tag in zip(members, tags, strict=True):
            if tag is not None and any(value["enabled"] is v for v in tag):
                return problems(value, member, key)
        return [(f"{key}.enabled", f"must be true or false, got {_got(value['enabled'])}")]
    attempts = [problems(value, member, key) for member in members]
    if any(not found for found in attempts):
        return []
    # None fits none: report the alternative of the value's own shape (a mapping, a list, a scalar) that fits best
    shape = _value_shape(value)
    shaped = [found for member, found in zip(members, attempts, strict=True) if _type_shape(member) == shape]
    if shaped:
        return min(shaped, key=len)
    return [(key, f"expected {_name({'union': members})}, got {_got(value)}")]


def _type_shape(tp: Type) -> str:
    """The shape of the values a table type accepts: "mapping", "list" or "scalar"."""
    if isinstance(tp, dict) and ("typeddict" in tp or "dict" in tp):
        return "mapping"
    return "list" if isinstance(tp, dict) and "list" in tp else "scalar"


def _value_shape(value: Any) -> str:
    return "mapping" if isinstance(value, Mapping) else "list" if isinstance(value, list) else "scalar"


def problems(value: Any, tp: Type, key: str) -> list[tuple[str, str]]:
    """Where ``value`` (at dotted ``key``) does not fit the table type ``tp``, as ``(key, message)``."""
    if isinstance(tp, str):
        return [] if _SCALARS[tp](value) else [(key, f"expected {tp}, got {_got(value)}")]
    if "union" in tp:
        return _union_problems(value, tp["union"], key)
    if "literal" in tp:
        if any(value == v and type(value) is type(v) for v in tp["literal"]):
            return []
        return [(key, f"must be {_name(tp)}, got {_got(value)}")]
    if "list" in tp:
        if not isinstance(value, list):
            return [(key, f"expected a list, got {_got(value)}")]
        return [p for i, item in enumerate(value) for p in problems(item, tp["list"], f"{key}[{i}]")]
    if not isinstance(value, Mapping):
        return [(key, f"expected {_name(tp)}, got {_got(value)}")]
    if "dict" in tp:
        return [p for k, item in value.items() for p in problems(item, tp["dict"], f"{key}.{k}")]
    record = table()["typeddicts"][tp["typeddict"]]
    found = []
    for field, field_type in record["required"].items():
        if field not in value:
            found.append(
                (f"{key}.{field}", f"required key is missing (NeMo RL's {tp['typeddict']}: {_name(field_type)})")
            )
        else:
            found += problems(value[field], field_type, f"{key}.{field}")
    for field, field_type in record["optional"].items():
        if field in value:
            found += problems(value[field], field_type, f"{key}.{field}")
    return found


def check_master_config(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every key of a resolved recipe that NeMo RL's ``MasterConfig`` (or, with vLLM, ``VllmConfig``) would refuse."""
    found = []
    for section, spec in table()["sections"].items():
        if section not in cfg:
            if spec["required"]:
                found.append((section, f"required section is missing (NeMo RL's MasterConfig: {_name(spec['type'])})"))
        else:
            found += problems(cfg[section], spec["type"], section)
    generation = (cfg.get("policy") or {}).get("generation") if isinstance(cfg.get("policy"), Mapping) else None
    if isinstance(generation, Mapping) and generation.get("backend") == "vllm":
        seen = {key for key, _ in found}
        vllm = problems(generation, table()["vllm_generation"], "policy.generation")
        found += [(k, m) for k, m in vllm if k not in seen and k not in FILLED_BY_NEMO_RL]
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m holder_nemo.nemo_rl.master_config_schema [--write]``: print (or write) the generated table."""
    argv = sys.argv[1:] if argv is None else argv
    text = json.dumps(generate(), indent=1) + "\n"
    if "--write" in argv:
        TABLE.write_text(text)
        print(f"wrote {TABLE}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
