"""Helpers of the verl tests: the actor config exactly as verl's workers build it (Hydra compose of verl's own
``ppo_trainer.yaml`` + overrides, then ``omega_conf_to_dataclass``), and the overrides documented in docs/verl.md."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

NEEDS_VERL = "needs the verl extra in its own venv: pip install -e '.[verl]' (verl==0.9.1, transformers<5.11)"
# A submodule, not the bare name: tests/ is on sys.path (its conftest), so without the package installed a bare
# `import verl` would find this test directory as a namespace package.
VERL_MODULE = "verl.trainer.ppo.core_algos"
DOC = Path(__file__).resolve().parents[2] / "docs" / "verl.md"
# what every actor config needs besides the loss settings (verl refuses a config without a micro-batch size)
BASE = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"]


def documented_overrides() -> list[str]:
    """The ``actor_rollout_ref.actor...`` override lines of the bash block under "## Overrides" in docs/verl.md."""
    text = DOC.read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index("## Overrides") :], re.S)
    assert block, "docs/verl.md: no bash block under '## Overrides'"
    lines = [line.strip().rstrip("\\").strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line.lstrip("+").startswith("actor_rollout_ref.actor.")]


def actor_config(*overrides: str):
    """verl's ActorConfig for ``ppo_trainer.yaml`` with ``overrides``, as ``ActorRolloutRefWorker`` builds it (a fresh
    copy: tests change ``global_batch_info`` and ``policy_loss.global_step``)."""
    return copy.deepcopy(_composed_actor_config(overrides))


@functools.cache
def _composed_actor_config(overrides: tuple[str, ...]):
    """Hydra's compose of verl's config takes seconds; each distinct override list is composed once per session."""
    import verl
    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=[*BASE, *overrides])
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def holder_overrides(loss_mode: str = "holder", schedule: str = "constant", p: float = 0.0, **extra: str) -> list:
    out = [
        "actor_rollout_ref.actor.policy_loss._target_=holder_nemo.verl.HolderPolicyLossConfig",
        f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}",
        f"+actor_rollout_ref.actor.policy_loss.holder_p_schedule={schedule}",
        f"+actor_rollout_ref.actor.policy_loss.holder_p_max={p}",
        f"+actor_rollout_ref.actor.policy_loss.holder_p_min={min(p, -2.0)}",
    ]
    return out + [f"actor_rollout_ref.actor.{k}={v}" for k, v in extra.items()]
