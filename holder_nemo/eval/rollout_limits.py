"""Which training rollouts were cut by a length limit, for the ``holder_math`` NeMo RL environment (no NeMo RL here).

NeMo RL v0.7.0 gives an environment the conversation (each message with its ``token_ids``) but not vLLM's finish
reason. vLLM ends a reply with ``finish_reason == "length"`` exactly when it reached ``max_tokens`` (NeMo RL passes
``policy.generation.max_new_tokens``) or the sequence reached ``max_model_len``; both are visible in the token
counts. The authors' training gives such a reply reward 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ENV_KEYS = ("num_workers", "max_new_tokens", "max_model_len")


def _num_tokens(message: Mapping[str, Any]) -> int:
    ids = message.get("token_ids")
    return 0 if ids is None else len(ids)


def cut_by_length(
    conversation: Sequence[Mapping[str, Any]], max_new_tokens: int | None, max_model_len: int | None
) -> bool:
    """True when the last assistant reply of ``conversation`` stopped at a length limit (None: that limit is off)."""
    last = max((i for i, m in enumerate(conversation) if m["role"] == "assistant"), default=None)
    if last is None:
        return False
    reply = _num_tokens(conversation[last])
    total = sum(_num_tokens(m) for m in conversation[: last + 1])
    return (max_new_tokens is not None and reply >= max_new_tokens) or (
        max_model_len is not None and total >= max_model_len
    )


def length_limits(cfg: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(max_new_tokens, max_model_len) of the ``env.holder_math`` config; unknown keys and bad values are errors."""
    unknown = sorted(set(cfg) - set(ENV_KEYS))
    if unknown:
        raise ValueError(f"env.holder_math: unknown keys {unknown}; allowed {list(ENV_KEYS)}")
    limits = []
    for key in ("max_new_tokens", "max_model_len"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"env.holder_math.{key} must be an integer >= 1 or null, got {value!r}")
        limits.append(value)
    return limits[0], limits[1]
