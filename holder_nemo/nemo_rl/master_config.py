"""A recipe through NeMo RL's own loader and GRPO ``MasterConfig`` (only where ``nemo_rl`` is importable).

The same path as NeMo RL's ``examples/run_grpo.py``: ``load_config`` (``defaults:`` inheritance),
``parse_hydra_overrides``, ``OmegaConf.to_container(resolve=True)``, ``MasterConfig(**cfg)`` (pydantic), then
``ClippedPGLossFn(master.loss_fn)`` as ``grpo.setup()`` does. ``holderpo recipe check --nemo-rl`` and the tests use it
to show that NeMo RL itself accepts what our loader and rules accept; ``check_nemo_rl`` is the entry point's version
gate (0.7.x).

NeMo RL v0.7.0 targets Python 3.13 and declares its configs with ``typing.TypedDict``, which pydantic refuses on
Python < 3.12. On such interpreters (the 3.11 development venv) ``typing.TypedDict`` is pointed at
``typing_extensions.TypedDict`` before NeMo RL's config modules are imported: same semantics, the form pydantic
accepts there. This mutates the ``typing`` module for the whole process, so call it from a dedicated process (the
entry point, the CLI, or a subprocess as the tests do).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

SUPPORTED_NEMO_RL = (0, 7)  # (major, minor): every 0.7.x
ALLOW_ANY_VERSION_ENV = "HOLDERPO_ALLOW_ANY_NEMO_RL"


class NemoRLUnavailable(RuntimeError):
    """No importable, supported nemo_rl in this Python environment."""


def nemo_rl_release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a NeMo RL version string ("0.7.0", "0.7.1rc1", "0.7.0+7ea279ab", "v0.7.2"), or None."""
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:[.+\-]|rc|a|b|dev|$)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_nemo_rl() -> str:
    """The importable NeMo RL version; raises ``NemoRLUnavailable`` with what to do when absent or unsupported.

    Every 0.7.x build is accepted (patch releases, release candidates, local ``+<commit>`` builds); anything else is
    refused with the reason and the override variable, because the loss contract and ``grpo_train``'s save / stop
    path this entry point relies on are those of 0.7.
    """
    try:
        import nemo_rl
    except ImportError as exc:
        raise NemoRLUnavailable(
            f"nemo_rl is not importable ({exc}). Run this inside the NeMo RL container "
            "(nvcr.io/nvidia/nemo-rl:v0.7.0: `cd /opt/nemo-rl && uv run python -m holder_nemo.nemo_rl.run_grpo ...` "
            "with holder_nemo on PYTHONPATH), or with a NeMo RL v0.7.0 checkout on PYTHONPATH; see docs/nemo_rl.md."
        ) from None
    version = str(getattr(nemo_rl, "__version__", "unknown"))
    release = nemo_rl_release(version)
    if release != SUPPORTED_NEMO_RL and os.environ.get(ALLOW_ANY_VERSION_ENV) != "1":
        supported = "{}.{}.x".format(*SUPPORTED_NEMO_RL)
        found = "an unparseable version" if release is None else f"release {release[0]}.{release[1]}"
        raise NemoRLUnavailable(
            f"nemo_rl {version!r} ({found}) is not supported by this entry point (supported: {supported}): its "
            "loss-function contract and grpo_train's checkpoint / stop path are those of 0.7. Use the "
            f"nvcr.io/nvidia/nemo-rl:v0.7.0 image, or set {ALLOW_ANY_VERSION_ENV}=1 to try anyway (0.6.x has the "
            "same loss interface; <= 0.5 passes logits, not log-probs, to the loss)."
        )
    return version


def nemo_rl_available() -> bool:
    """True when the real NeMo RL package is importable (a regular package, not a same-named namespace dir)."""
    import importlib.util

    spec = importlib.util.find_spec("nemo_rl")
    return spec is not None and spec.origin is not None and spec.origin != "namespace"


def typed_dict_for_old_python() -> None:
    """On Python < 3.12, before NeMo RL's config TypedDicts are built: pydantic needs typing_extensions.TypedDict."""
    if sys.version_info < (3, 12) and "nemo_rl.algorithms.grpo" not in sys.modules:
        import typing

        import typing_extensions

        typing.TypedDict = typing_extensions.TypedDict  # type: ignore[misc]


def load_master_config(path: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The recipe resolved by NeMo RL's own loader, as a plain dict (before ``MasterConfig``)."""
    from nemo_rl.utils.config import load_config, parse_hydra_overrides, register_omegaconf_resolvers
    from omegaconf import OmegaConf

    register_omegaconf_resolvers()
    config = load_config(path)
    if overrides:
        config = parse_hydra_overrides(config, list(overrides))
    return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]


def validate_with_nemo_rl(
    path: str, overrides: Sequence[str] = ()
) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """Load with NeMo RL and build its GRPO ``MasterConfig``; returns (resolved dict, ``(key, message)`` problems)."""
    typed_dict_for_old_python()
    from nemo_rl.algorithms.grpo import MasterConfig
    from pydantic import ValidationError

    from holder_nemo.config.errors import problems_from_pydantic

    try:
        cfg = load_master_config(path, overrides)
    except Exception as exc:  # NeMo RL's loader raises omegaconf/hydra errors of several types; ours loaded it
        return None, [(str(path), f"NeMo RL's loader refuses it: {type(exc).__name__}: {str(exc).splitlines()[0]}")]
    from nemo_rl.algorithms.loss.loss_functions import ClippedPGLossFn

    try:
        master = MasterConfig(**cfg)
    except ValidationError as exc:
        return cfg, problems_from_pydantic(exc)
    try:
        ClippedPGLossFn(master.loss_fn)  # grpo.setup() builds it from loss_fn before any plugin swaps the loss
    except (AssertionError, ValueError) as exc:
        return cfg, [("loss_fn", f"NeMo RL's ClippedPGLossFn rejects it: {exc}")]
    return cfg, []
