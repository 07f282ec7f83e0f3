"""ALFWorld under the GiGPO / verl-agent protocol for HölderPO (paper §4.5, Table 3).

Modules (``alfworld``/``textworld`` come from the optional extra ``holder_nemo[alfworld]`` and are imported lazily):

- ``protocol``: prompt, history, action parsing, rewards (pure Python).
- ``games``: small offline games, one per task type, in the real dataset's folder layout.
- ``env``: one episode on one game file (reset / step on response text / admissible commands / step limit).
- ``rollout``: lock-step episodes for any text policy; ``step_samples``: per-step training rows + group advantages.
- ``train_step``: one HölderPO + KL + entropy update on per-step rows (CPU reference path).
- ``nemo_rl_adapter`` (pure) and ``nemo_rl_env`` (Ray actor, needs NeMo RL): NeMo RL ``EnvironmentInterface``.
- ``evaluate``: success overall / per task in the paper's table layout; ``data``: fetch the real games.
- ``cli``: ``python -m holder_nemo.alfworld {eval,make-games,prepare} ...``.
"""
