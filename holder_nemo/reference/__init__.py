"""The CPU-capable reference GRPO run (`holderpo train`): one process, HF model, HölderPO loss via the NeMo RL plugin.

Modules, one job each: ``schema`` (recipe schema, where the default recipe is), ``model`` (tiny Qwen2 + local
tokenizer, or a local HF dir), ``tasks`` (built-in digit task, maths JSONL), ``rollout`` (sampling, rewards,
advantages, NeMo RL batch layout), ``checkpoint`` (atomic step_N dirs, resume), ``train`` (the trainer and its
command line), ``metrics_log``, ``plotting``, ``schedule_cli``, ``smollm2``.
"""
