"""ALFWorld under the GiGPO / verl-agent protocol for HölderPO (paper §4.5, Table 3).

Modules (``alfworld``/``textworld`` come from the optional extra ``holder_nemo[alfworld]`` and are imported lazily):

- ``protocol``: prompt, history, action parsing (pure Python); ``env``: one episode on one game file.
- ``games``: small offline games, one per task type, in the real dataset's folder layout; ``data``: the real games.
- ``rollout``: lock-step episodes for any text policy (Hugging Face or NeMo RL generation), the validation draw.
- ``step_samples``: per-step training rows with verl-agent's group advantage, in NeMo RL's ``train_data`` contract.
- ``training``: the NeMo RL training loop on those rows (the recipe's ``env.alfworld._component_``);
  ``entropy``: verl-agent's entropy bonus through NeMo RL's loss interface.
- ``evaluate``: ``holderpo eval-alfworld``, success overall / per task in the paper's table layout.
- ``cli``: ``python -m holder_nemo.alfworld {eval,make-games,prepare} ...``.
"""
