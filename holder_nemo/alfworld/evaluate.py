"""ALFWorld evaluation: success rate overall and per task type, printed in the paper's Table 3 layout.

``python -m holder_nemo.alfworld eval`` / ``holderpo eval-alfworld`` (this module's ``main(argv)``)::

    holderpo eval-alfworld --data-root $ALFWORLD_DATA/json_2.1.1 --model CHECKPOINT            # the paper's protocol
    holderpo eval-alfworld --data-root DIR --model CHECKPOINT --protocol all-games --split valid_unseen
    holderpo eval-alfworld --data-root DIR --policy expert   # the planner: checks the games are winnable

Protocols. ``paper`` (default): Table 3 is verl-agent's in-training validation, 128 episodes on ``valid_seen``
games drawn by its seeded validation environments (``rollout.validation_games``, seed 1000 = ``env.seed`` + 1000,
round 0 = the first validation), sampled at temperature 0.4, top-p 1. ``all-games``: one episode per game of the
split (``valid_unseen``: 134 games), the usual ALFWorld benchmark. "Avg." is the overall success rate over the
episodes (as in the paper), not the mean of the six columns.

Model: a Hugging Face directory or hub id, or a NeMo RL checkpoint ``step_N`` directory, converted the way
``holderpo eval`` converts it (``holder_nemo.eval.model_source``). It runs in bfloat16 on a GPU when there is one
(``--device``, ``--dtype``), with every sampling setting explicit (``rollout.hf_sampling_config``: nothing is taken
from the checkpoint's ``generation_config.json``, such as an instruct model's repetition penalty).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from holder_nemo.alfworld.data import task_type_of
from holder_nemo.alfworld.env import AlfworldEpisode
from holder_nemo.alfworld.protocol import ProtocolConfig
from holder_nemo.alfworld.rollout import Policy, run_episodes, validation_games
from holder_nemo.alfworld.step_samples import Episode, StepRecord

# Paper Table 3 columns, in order: (column, ALFWorld task type).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("Pick", "pick_and_place_simple"),
    ("Look", "look_at_obj_in_light"),
    ("Clean", "pick_clean_then_place_in_recep"),
    ("Heat", "pick_heat_then_place_in_recep"),
    ("Cool", "pick_cool_then_place_in_recep"),
    ("Pick Two", "pick_two_obj_and_place"),
)

# Paper Table 3 (Qwen2.5-1.5B-Instruct), for side-by-side printing.
PAPER_ROWS: dict[str, tuple[float, ...]] = {
    "GRPO (p = 1)": (85.3, 53.7, 84.5, 78.2, 59.7, 53.5, 72.8),
    "GMPO (p -> 0)": (93.1, 78.6, 81.0, 88.2, 82.1, 89.5, 85.9),
    "GiGPO": (94.4, 67.5, 94.8, 94.4, 79.8, 76.4, 86.7),
    "HölderPO (Linear Dec: 2 -> -2)": (97.2, 85.7, 87.5, 91.7, 79.2, 81.5, 87.5),
    "HölderPO (Linear Dec: 1 -> -1)": (96.9, 100.0, 100.0, 100.0, 85.7, 84.5, 93.8),
}


def summarize(episodes: Sequence[Episode]) -> dict:
    """Per-task and overall success: ``{"per_task": {column: {"won", "total", "success"}}, "overall": {...}}``.

    ``success`` is a percentage (nan where a task has no games).
    """
    per_task = {col: {"won": 0, "total": 0} for col, _ in COLUMNS}
    column_of = {task: col for col, task in COLUMNS}
    for ep in episodes:
        task = task_type_of(ep.game_file)
        if task not in column_of:
            raise ValueError(f"{ep.game_file}: task type {task!r} is not one of the six ALFWorld columns")
        cell = per_task[column_of[task]]
        cell["total"] += 1
        cell["won"] += int(ep.won)
    for cell in per_task.values():
        cell["success"] = 100.0 * cell["won"] / cell["total"] if cell["total"] else math.nan
    won = sum(c["won"] for c in per_task.values())
    total = sum(c["total"] for c in per_task.values())
    overall = {"won": won, "total": total, "success": 100.0 * won / total if total else math.nan}
    return {"per_task": per_task, "overall": overall}


def format_table(rows: dict[str, dict], *, with_paper: bool = True) -> str:
    """A markdown table in the paper's layout; ``rows`` maps a label to a :func:`summarize` result."""
    header = "| Training Objectives | " + " | ".join(c for c, _ in COLUMNS) + " | Avg. |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]

    def cell(x: float | None) -> str:
        return "n/a" if x is None or math.isnan(x) else f"{x:.1f}"

    if with_paper:
        for label, values in PAPER_ROWS.items():
            lines.append(f"| {label} (paper) | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    for label, summary in rows.items():
        values = [summary["per_task"][c]["success"] for c, _ in COLUMNS] + [summary["overall"]["success"]]
        lines.append(f"| {label} | " + " | ".join(cell(v) for v in values) + " |")
    for label, summary in rows.items():
        cells = summary["per_task"]
        counts = ", ".join(f"{c} {cells[c]['won']}/{cells[c]['total']}" for c, _ in COLUMNS)
        overall = summary["overall"]
        lines.append(f"\n{label}: won / episodes per column: {counts}; {overall['won']}/{overall['total']} overall.")
    return "\n".join(lines)


def play_expert(game_file: str | Path, config: ProtocolConfig | None = None) -> Episode:
    """Play a game with the planner's plan, formatted as protocol responses (checks games are winnable)."""
    config = config or ProtocolConfig()
    episode = Episode(group_id=0, episode_id=0, game_file=str(game_file))
    with AlfworldEpisode(config) as env:
        prompt = env.reset(game_file, with_expert=True)
        done = False
        while not done:
            plan = env.expert_plan()
            command = plan[0] if plan else "look"
            response = f"<think>follow the plan</think><action>{command}</action>"
            result = env.step(response)
            episode.steps.append(StepRecord(prompt, response, result.valid, result.env_reward))
            prompt, done, episode.won = result.prompt, result.done, result.won
    return episode


def evaluate_policy(
    policy: Policy, game_files: Sequence[str | Path], *, config: ProtocolConfig | None = None, batch_games: int = 64
) -> list[Episode]:
    """One episode per game (the protocol's evaluation), ``batch_games`` environments at a time."""
    episodes: list[Episode] = []
    for start in range(0, len(game_files), batch_games):
        chunk = list(game_files[start : start + batch_games])
        episodes += run_episodes(policy, chunk, group_size=1, config=config)
    return episodes


def nan_to_none(value):
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


PROTOCOLS = ("paper", "all-games")
DEFAULT_SPLIT = {"paper": "valid_seen", "all-games": "valid_unseen"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="holderpo eval-alfworld", description=__doc__.split("\n")[0])
    p.add_argument("--data-root", required=True, help="a json_2.1.1 directory (train/valid_seen/valid_unseen)")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="paper",
        help="paper: --episodes episodes drawn from valid_seen as verl-agent's validation draws them (default); "
        "all-games: one episode per game of the split",
    )
    p.add_argument("--split", help="default: valid_seen (paper), valid_unseen (all-games); or train")
    p.add_argument("--episodes", type=int, default=128, help="paper protocol: episodes (verl-agent val_data_size)")
    p.add_argument("--seed", type=int, default=1000, help="paper protocol: seed of episode 0 (env.seed 0 + 1000)")
    p.add_argument("--round", type=int, default=0, help="paper protocol: which validation's draw (0 = the first)")
    p.add_argument("--limit", type=int, default=0, help="all-games protocol: only the first N games (0 = all)")
    p.add_argument("--policy", choices=("model", "expert"), default="model")
    p.add_argument("--model", help="HF model dir or hub id, or a NeMo RL checkpoint step_N dir (policy=model)")
    p.add_argument("--base-model", help="base model of a NeMo RL checkpoint (default: its config.yaml)")
    p.add_argument("--hf-export-dir", type=Path, help="where a NeMo RL checkpoint is converted (default <step>/hf)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cuda, cuda:N or cpu")
    p.add_argument(
        "--dtype",
        choices=("auto", "bfloat16", "float16", "float32"),
        default="auto",
        help="auto: bfloat16 on a GPU (as verl-agent's vLLM), float32 on CPU",
    )
    p.add_argument("--max-new-tokens", type=int, default=512, help="verl-agent max_response_length 512")
    p.add_argument("--max-prompt-tokens", type=int, default=2048, help="longer prompts are an error (verl-agent)")
    p.add_argument("--temperature", type=float, default=0.4, help="verl-agent val_kwargs.temperature 0.4")
    p.add_argument("--top-p", type=float, default=1.0, help="verl-agent val_kwargs.top_p 1.0")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--batch-games", type=int, default=64, help="episodes played in lock-step per generate batch")
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--history-length", type=int, default=2)
    p.add_argument("--label", default="this run")
    p.add_argument("--output", help="write the summary JSON here")
    return p


def load_model(args: argparse.Namespace):
    """(model, tokenizer, description) for ``--model``: NeMo RL checkpoints converted as ``holderpo eval`` does,
    placed on ``--device`` in ``--dtype``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from holder_nemo.eval.model_source import resolve_model

    resolved = resolve_model(args.model, hf_export_dir=args.hf_export_dir, base_model=args.base_model)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    tokenizer = AutoTokenizer.from_pretrained(resolved.tokenizer)
    model = AutoModelForCausalLM.from_pretrained(resolved.model, dtype=getattr(torch, dtype_name))
    model = model.to(device).eval()
    description = {**resolved.__dict__, "device": device, "dtype": dtype_name}
    return model, tokenizer, description


def select_games(args: argparse.Namespace, split: str) -> list[str]:
    from holder_nemo.alfworld.data import list_games

    games = list_games(args.data_root, split)
    if not games:
        return []
    if args.protocol == "paper":
        return validation_games(games, args.episodes, args.seed, args.round)
    return games[: args.limit] if args.limit > 0 else games


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    split = args.split or DEFAULT_SPLIT[args.protocol]
    for name in ("episodes", "batch_games", "max_new_tokens", "max_prompt_tokens"):
        if getattr(args, name) < 1:
            print(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    config = ProtocolConfig(max_steps=args.max_steps, history_length=args.history_length)
    games = select_games(args, split)
    if not games:
        print(f"no games found under {args.data_root} for split {split}", file=sys.stderr)
        return 2
    settings: dict = {"protocol": args.protocol, "split": split, "episodes": len(games)}
    if args.protocol == "paper":
        settings.update(seed=args.seed, round=args.round)
    if args.policy == "expert":
        episodes = [play_expert(g, config) for g in games]
        settings["policy"] = "expert"
    else:
        if not args.model:
            print("--model is required with --policy model", file=sys.stderr)
            return 2
        from holder_nemo.alfworld.rollout import hf_policy
        from holder_nemo.eval.model_source import ModelSourceError

        try:
            model, tokenizer, described = load_model(args)
            policy = hf_policy(
                model,
                tokenizer,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                top_p=args.top_p,
                greedy=args.greedy,
                max_prompt_tokens=args.max_prompt_tokens,
            )
        except (ModelSourceError, ValueError) as exc:
            print(f"holderpo eval-alfworld: {exc}", file=sys.stderr)
            return 2
        sampling = {"temperature": None if args.greedy else args.temperature, "top_p": args.top_p}
        sampling.update(greedy=args.greedy, top_k=None, repetition_penalty=1.0, max_new_tokens=args.max_new_tokens)
        settings.update(policy="model", model=described, sampling=sampling)
        episodes = evaluate_policy(policy, games, config=config, batch_games=args.batch_games)
    summary = summarize(episodes)
    print(format_table({f"{args.label} ({split}, {args.protocol})": summary}))
    if args.output:
        # strict JSON: a column without episodes has success null, not NaN
        payload = {**summary, "settings": settings, "games": list(games)}
        Path(args.output).write_text(json.dumps(nan_to_none(payload), indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
