"""One-screen summary of a resolved recipe: model, GPUs, layout, tokens per step, steps, p range."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from holder_nemo.nemo_rl.parallel_layout import ParallelLayout, is_int
from holder_nemo.recipe_check.sizing_report import one_row_per_environment_step

_get = functools.partial(OmegaConf.select, default="?")  # the value at a dotted key, "?" when absent


def _int(value: Any) -> int | None:
    return value if is_int(value) else None


def _p_range(cfg: DictConfig, steps: int | None) -> str:
    schedule = _get(cfg, "loss_fn.holder.schedule", default=None)
    if not OmegaConf.is_dict(schedule):
        return "?"
    from holder_nemo.core import PSchedule

    try:
        sched = PSchedule.from_dict(OmegaConf.to_container(schedule))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "invalid schedule"
    if sched.kind == "constant":
        return f"constant p = {sched.p_max:g}"
    if sched.kind == "reward":
        return f"reward feedback, p in [{sched.p_min:g}, {sched.p_max:g}], gamma {sched.gamma:g}"
    last = steps if steps is not None else sched.steps
    return (
        f"{sched.kind} {sched(0):g} -> {sched(sched.steps):g} over {sched.steps} steps "
        f"(p(1) = {sched(1):.4g}, p({last}) = {sched(last):.4g})"
    )


def _layout_lines(cfg: DictConfig, layout: ParallelLayout) -> list[tuple[str, Any]]:
    sp = ", sequence parallel" if layout.sequence_parallel else ""
    packing = "on" if _get(cfg, "policy.sequence_packing.enabled") is True else "off"
    engines = layout.gen_gpus // (layout.gen_tp * layout.gen_pp)
    return [
        ("GPUs", f"{layout.nodes} node(s) x {layout.gpus_per_node} = {layout.nodes * layout.gpus_per_node}"),
        (
            "training",
            f"{layout.backend}: TP {layout.tp} x PP {layout.pp} x CP {layout.cp} x DP {layout.dp}{sp}; "
            f"packing {packing}",
        ),
        (
            "generation",
            f"{_get(cfg, 'policy.generation.backend')}: TP {layout.gen_tp} x PP {layout.gen_pp}, {engines} engine(s), "
            f"{'colocated' if layout.colocated else 'dedicated GPUs'}",
        ),
    ]


def _batch_lines(cfg: DictConfig) -> list[tuple[str, Any]]:
    prompts, gens = _int(_get(cfg, "grpo.num_prompts_per_step")), _int(_get(cfg, "grpo.num_generations_per_prompt"))
    gbs, seq = _int(_get(cfg, "policy.train_global_batch_size")), _int(_get(cfg, "policy.max_total_sequence_length"))
    new_tokens = _int(_get(cfg, "policy.generation.max_new_tokens"))
    rows = prompts * gens if prompts and gens else None
    mbs = _get(cfg, "policy.train_micro_batch_size")
    batch = f"{prompts} prompts x {gens} = {rows} trajectories; global batch {gbs}, micro-batch {mbs}"
    per_step = one_row_per_environment_step(cfg)
    if per_step:
        batch = (
            f"{prompts} games x {gens} episodes = {rows} episodes, one row per environment step; {gbs} rows per "
            f"optimizer update, micro-batch {mbs}"
        )
    elif rows and gbs:
        batch += f"; {rows / gbs:g} optimizer updates per step"
    lines = [("batch", batch)]
    if rows and seq:
        turns = _int(_get(cfg, "grpo.max_rollout_turns")) if per_step else None
        shape, n = (f"{rows} x {turns}", rows * turns) if turns else (f"{rows}", rows)
        cap = f"<= {n * new_tokens:,} generated" if new_tokens else "?"
        lines.append(("tokens/step", f"<= {n * seq:,} total ({shape} x {seq}), {cap} ({shape} x {new_tokens})"))
    return lines


def _training_lines(cfg: DictConfig) -> list[tuple[str, Any]]:
    steps = _int(_get(cfg, "grpo.max_num_steps"))
    epochs = _get(cfg, "grpo.max_num_epochs", default=None)
    lines = [("steps", f"{steps}" + (f" (max_num_epochs {epochs})" if epochs is not None else ""))]
    lines.append(("p", _p_range(cfg, steps)))
    holder = _get(cfg, "loss_fn.holder", default=None)
    if OmegaConf.is_dict(holder):
        eps = f"[{_get(cfg, 'loss_fn.ratio_clip_min')}, {_get(cfg, 'loss_fn.ratio_clip_max')}]"
        kl = _get(cfg, "loss_fn.reference_policy_kl_penalty", default=0)
        lines.append(("loss", f"clip_mode {holder.get('clip_mode')}, eps {eps}, KL {kl}"))
    lr = _get(cfg, "policy.megatron_cfg.optimizer.lr", default=None)
    if lr is None or _get(cfg, "policy.megatron_cfg.enabled") is not True:
        lr = _get(cfg, "policy.optimizer.kwargs.lr")
    lines.append(("lr", lr))
    ckpt = _get(cfg, "checkpointing.checkpoint_dir") if _get(cfg, "checkpointing.enabled") is True else "off"
    lines.append(("checkpoints", ckpt))
    train_data = _get(cfg, "data.train.data_path", default=None) or _get(cfg, "data.train_path", default=None)
    if train_data:
        lines.append(("train data", train_data))
    return lines


def summarize(cfg: Mapping, layout: ParallelLayout | None) -> str:
    """Lines of ``key: value`` describing what one step costs and what the run does."""
    cfg = OmegaConf.create(dict(cfg))
    model = _get(cfg, "policy.model_name")
    if model is None and OmegaConf.is_dict(_get(cfg, "policy.tiny_model", default=None)):
        model = "built-in tiny Qwen2 (policy.tiny_model)"
    lines: list[tuple[str, Any]] = [("model", model)]
    lines += _layout_lines(cfg, layout) if layout is not None else []
    lines += _batch_lines(cfg) + _training_lines(cfg)
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in lines)
