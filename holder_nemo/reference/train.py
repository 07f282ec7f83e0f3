"""``holderpo train [RECIPE.yaml] [key=value ...]``: the reference GRPO run with annealed-p HölderPO, one process.

    holderpo train                                     # recipes/smoke_cpu.yaml: tiny Qwen2 learns a digit task
    holderpo train recipes/smoke_cpu.yaml grpo.max_num_steps=6 checkpointing.checkpoint_dir=/tmp/run

Each step: sample prompts -> G responses each (temperature sampling, <eos>, max length) -> verifiable rewards ->
group-normalised advantages -> recompute old log-probs -> several mini-batch updates with the NeMo RL plugin's
``HolderPOLossFn`` (p from the schedule at the global step), fed a batch in NeMo RL's data layout and called exactly
as NeMo RL calls it (``ReferenceRecipe``, one step at a time; ``main`` is its command line).

Run directory (RUN_DIR = ``checkpointing.checkpoint_dir``): ``metrics.jsonl`` (one JSON object per step),
``step_N/`` checkpoints, ``tb/`` (TensorBoard, when installed), ``training.png``, and ``COMPLETED`` once done.

Exit codes (the stop contract shared with the NeMo RL entry point): 0 = complete (final checkpoint written);
75 = stopped on request (SIGUSR1, SIGTERM, Ctrl-C, or the file named by $HOLDERPO_STOP_FILE): the current step
finished, a checkpoint was written, rerun the same command to resume; 2 = bad recipe or arguments (one line per
problem, before any work: the recipe, its local paths, the run directory); 130 = a second Ctrl-C (no checkpoint).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from holder_nemo.config import ConfigError, load_recipe, print_problems
from holder_nemo.config.errors import make_run_dir
from holder_nemo.core import Reduce
from holder_nemo.nemo_rl import HolderPOLossFn
from holder_nemo.nemo_rl.progress import ProgressRecorder
from holder_nemo.reference import checkpoint as ckpt
from holder_nemo.reference.metrics_log import MetricsLog, combine_metrics, summarize
from holder_nemo.reference.rollout import (
    build_batch,
    decode_responses,
    full_logprobs,
    group_advantages,
    next_token_logprobs,
    sample_groups,
)
from holder_nemo.reference.schema import (
    ReferenceConfig,
    default_recipe_path,
    is_reference_recipe,
    missing_paths,
    validate_reference_config,
)
from holder_nemo.run_control import (
    ACCEPT_FLAG,
    CHANGE_LOG,
    COMPLETED_FILE,
    EXIT_COMPLETED,
    EXIT_STOPPED,
    StopRequest,
    check_resume_config,
    record_accepted_changes,
)

# Keys a resumed run may change freely (they do not change what is trained): logging, checkpoint cadence/retention.
OPERATIONAL_KEYS = ("logger", "checkpointing.save_period", "checkpointing.keep_last_k")
PROG = "holderpo train"
EXIT_INTERRUPTED = 130  # a second Ctrl-C: stopped at once, without a checkpoint (the shell's code for SIGINT)
# Without a terminal (Slurm, CI, a pipe) there is no progress bar: one line per step instead, at most one every this
# many seconds (the first and the last step, and every checkpoint, always get theirs).
PROGRESS_LINE_INTERVAL_S = 10.0


class ReferenceRecipe:
    """Single-process GRPO with the HölderPO loss.

    Features:
        - built-in tiny Qwen2 + character tokenizer (nothing downloaded), or any local HF causal-LM directory
        - digit task from random init, or maths JSONL scored with math-verify
        - exact resume: model, optimizer, RNG states, data position; atomic ``step_N`` checkpoints, keep last K
        - stop contract: SIGUSR1 / SIGTERM / Ctrl-C / $HOLDERPO_STOP_FILE -> finish step, checkpoint, exit 75
        - progress: a bar in a terminal, else one line per step (step, reward, p, loss, seconds per step)
    Raises:
        ConfigError: on an invalid recipe (raised by ``validate_reference_config`` before anything is built).
    """

    def __init__(self, cfg: ReferenceConfig, resolved_yaml: str) -> None:
        self.cfg, self.resolved_yaml = cfg, resolved_yaml
        self.run_dir = Path(cfg.checkpointing.checkpoint_dir)
        self.max_steps = cfg.grpo.max_num_steps
        self.group_size = cfg.grpo.num_generations_per_prompt
        self.temperature = cfg.policy.generation.temperature
        self.step = 0  # last completed step
        self.data_position = 0  # index of the next prompt
        self.last_saved_step = -1

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg = self.cfg
        # First, so a signal during setup is honoured after the first step. The contract (env var, signals, exit
        # code) is the NeMo RL entry point's, so the request object is shared too.
        self.stop = StopRequest.from_env()
        self.stop.install_signal_handlers(interrupt=True)  # Ctrl-C stops like SIGTERM: checkpoint, exit 75
        self.progress = ProgressRecorder.from_env()  # $HOLDERPO_PROGRESS_FILE: the batch shell's hang watchdog
        self.progress.start()
        if cfg.reference.num_threads:
            torch.set_num_threads(cfg.reference.num_threads)
        # Seed before building the model: a fresh run's weights come from grpo.seed; a resumed run overwrites both.
        seed = cfg.grpo.seed
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        self.device = self._device()
        self.model, self.tokenizer, self.task = self._setup_model_and_task()
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), **cfg.policy.optimizer.kwargs.model_dump())
        self.loss_fn = HolderPOLossFn(cfg.loss_fn)  # called exactly as NeMo RL calls it (docs/reference_run.md)
        self._resume()
        # The metrics log is opened after resume so it can drop lines of steps the checkpoint does not cover.
        self.metrics_log = MetricsLog(self.run_dir, upto_step=self.step, tensorboard=cfg.logger.tensorboard_enabled)

    def _device(self) -> torch.device:
        want = self.cfg.reference.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise ConfigError("reference.device", "'cuda' requested but torch.cuda.is_available() is False")
        return torch.device(want)

    def _setup_model_and_task(self):
        from holder_nemo.reference import model as model_lib
        from holder_nemo.reference.tasks import ArithmeticWordTask, DigitsTask, MathJsonlTask

        cfg, seed = self.cfg, self.cfg.grpo.seed
        if cfg.policy.model_name:
            model, tokenizer = model_lib.load_hf_policy(cfg.policy.model_name)
        else:
            d = cfg.data.digits
            tokenizer = model_lib.build_char_tokenizer(DigitsTask.alphabet)
            tiny = cfg.policy.tiny_model
            model = model_lib.build_tiny_qwen2(
                len(tokenizer),
                hidden_size=tiny.hidden_size,
                num_layers=tiny.num_layers,
                num_heads=tiny.num_heads,
                num_kv_heads=tiny.num_kv_heads,
                intermediate_size=tiny.intermediate_size,
                max_position_embeddings=2 * d.max_digits + 2 + cfg.policy.generation.max_new_tokens + 8,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id,
            )
        if cfg.data.task == "digits":
            d = cfg.data.digits
            task = DigitsTask(d.op, d.min_digits, d.max_digits, d.reward, seed, repeat_length=d.repeat_length)
        elif cfg.data.task == "arith_words":
            task = ArithmeticWordTask(seed, tokenizer)
        else:
            task = MathJsonlTask(cfg.data.train_path, seed, tokenizer)
        return model, tokenizer, task

    def _resume(self) -> None:
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is None:
            return
        state = ckpt.load_checkpoint(latest, model=self.model, optimizer=self.optimizer)
        self.step, self.data_position = int(state["step"]), int(state["data_position"])
        self.last_saved_step = self.step
        print(f"holderpo train: resumed from {latest} (step {self.step})", file=sys.stderr)

    # ----------------------------------------------------------------------------------------------- train
    def train(self) -> int:
        from tqdm import tqdm

        # A bar only in a terminal (tqdm would switch itself off in Slurm and CI logs); else progress lines.
        show_bar = self.cfg.logger.progress_bar and sys.stderr.isatty()
        bar = tqdm(total=self.max_steps, initial=self.step, disable=not show_bar, unit="step")
        last_line = -float("inf")
        self.progress.training_started()
        while self.step < self.max_steps:
            metrics = self._train_step(self.step + 1)
            self.step += 1
            self.progress.completed("step", self.step)
            self.metrics_log.write(metrics)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", p=f"{metrics['holder_p']:+.2f}")
            saving = self.step % self.cfg.checkpointing.save_period == 0 and self.step < self.max_steps
            reason = self.stop.reason() if self.step < self.max_steps else None
            now = time.monotonic()
            if not show_bar and (saving or reason or self.step in (1, self.max_steps) or
                                 now - last_line >= PROGRESS_LINE_INTERVAL_S):  # fmt: skip
                print(self._progress_line(metrics, saving or bool(reason)), flush=True)
                last_line = now
            if saving:
                self.save_checkpoint()
            if reason:
                bar.close()
                self.save_checkpoint()
                print(f"holderpo train: stop requested ({reason}); checkpointed step {self.step}", file=sys.stderr)
                return EXIT_STOPPED
        bar.close()
        self.save_checkpoint()
        self._finish()
        return EXIT_COMPLETED

    def _progress_line(self, metrics: dict[str, Any], checkpoint: bool) -> str:
        seconds = metrics["perf/rollout_s"] + metrics["perf/update_s"]
        return (
            f"holderpo train: step {self.step}/{self.max_steps}  reward {metrics['reward_mean']:.3f}  "
            f"p {metrics['holder_p']:+.3f}  loss {metrics.get('loss', float('nan')):+.4g}  {seconds:.2f} s/step"
            + ("  (checkpoint)" if checkpoint else "")
        )

    def _train_step(self, step: int) -> dict[str, Any]:
        """One GRPO step (sample, score, advantages, old log-probs, updates); returns its metrics (keys under
        ``perf/`` are timings, not reproducible)."""
        t0 = time.perf_counter()
        n_prompts, group_size, tok = self.cfg.grpo.num_prompts_per_step, self.group_size, self.tokenizer
        examples = self.task.prompts(self.data_position, n_prompts)
        self.data_position += n_prompts
        self.model.eval()
        gen = self.cfg.policy.generation
        sampled = sample_groups(
            self.model, tok, examples, group_size, temperature=gen.temperature, max_new_tokens=gen.max_new_tokens
        )
        batch, finished, response_lengths = build_batch(*sampled, tok.pad_token_id, tok.eos_token_id)
        responses = decode_responses(
            tok, sampled[1], response_lengths, finished, skip_special_tokens=not self.task.keep_special_tokens
        )
        rewards = torch.tensor(
            [
                self.task.reward(examples[i // group_size], text, bool(done))
                for i, (text, done) in enumerate(zip(responses, finished, strict=True))
            ]
        )
        advantages = group_advantages(rewards, group_size, normalize_std=self.cfg.grpo.normalize_rewards)
        batch["advantages"] = advantages[:, None].expand_as(batch["token_mask"]).contiguous()
        # Old log-probs recomputed by the learner (not the sampler's), as the paper's code does.
        batch["prev_logprobs"] = full_logprobs(self.model, batch, self.temperature, self.cfg.policy.logprob_batch_size)
        # No reference model is kept (schema.py requires reference_policy_kl_penalty: 0, the paper's maths setting);
        # the field is still filled because it is part of NeMo RL's layout.
        batch["reference_policy_logprobs"] = batch["prev_logprobs"].clone()
        self.loss_fn.set_mean_reward(float(rewards.mean()))  # read by the reward-driven p schedule only
        t1 = time.perf_counter()
        update_metrics = self._update(batch, step)
        t2 = time.perf_counter()
        return {
            "step": step,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "exact_match": float((rewards == 1).float().mean()),
            "response_length_mean": float(response_lengths.float().mean()),
            "truncated_frac": float((~finished).float().mean()),
            "data_position": self.data_position,
            **update_metrics,
            "perf/rollout_s": t1 - t0,
            "perf/update_s": t2 - t1,
            "perf/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    def _update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """B / train_global_batch_size optimizer updates on shuffled mini-batches, each in micro-batches."""
        self.model.train()
        self.loss_fn.set_step(step)
        gbs, mbs = self.cfg.policy.train_global_batch_size, self.cfg.policy.train_micro_batch_size
        rows = batch["input_ids"].shape[0]
        order = torch.randperm(rows)
        sums: dict[str, float] = {}
        n_updates = 0
        for start in range(0, rows, gbs):
            idx = order[start : start + gbs]
            mini = {k: v[idx].to(self.device) for k, v in batch.items()}
            global_valid_seqs = mini["sample_mask"].sum()
            global_valid_toks = (mini["token_mask"][:, 1:] * mini["sample_mask"][:, None]).sum()
            self.optimizer.zero_grad(set_to_none=True)
            update: dict[str, float] = {}
            reductions = self.loss_fn.metric_reductions
            for mstart in range(0, gbs, mbs):
                micro = {k: v[mstart : mstart + mbs] for k, v in mini.items()}
                lps = next_token_logprobs(self.model, micro["input_ids"], micro["input_lengths"], self.temperature)
                loss, metrics = self.loss_fn(
                    next_token_logprobs=lps,
                    data=micro,
                    global_valid_seqs=global_valid_seqs,
                    global_valid_toks=global_valid_toks,
                )
                loss.backward()
                combine_metrics(update, metrics, reductions)
            max_norm = self.cfg.policy.max_grad_norm or float("inf")
            update["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
            self.optimizer.step()
            combine_metrics(sums, update, reductions)
            n_updates += 1
        # Means over the step's updates, except the extremes (MIN / MAX), which stay extremes.
        extremes = (Reduce.MIN, Reduce.MAX)
        out = {k: v if reductions.get(k) in extremes else v / n_updates for k, v in sums.items()}
        out["holder_p"] = float(self.loss_fn.p)
        out["num_updates"] = n_updates
        return out

    # ----------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
        if self.last_saved_step == self.step:
            return
        ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            model=self.model,
            optimizer=self.optimizer,
            trainer_state={"data_position": self.data_position},
            config_yaml=self.resolved_yaml,
            keep_last_k=self.cfg.checkpointing.keep_last_k,
        )
        self.last_saved_step = self.step
        self.progress.completed("checkpoint", self.step)

    def _finish(self) -> None:
        records = self.metrics_log.read()
        summary = summarize(records)
        if self.cfg.logger.plot:
            from holder_nemo.reference.plotting import plot_run

            summary["figure"] = str(plot_run(self.run_dir))
        (self.run_dir / COMPLETED_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        print(
            f"holderpo train: done, {self.step} steps; mean reward first 10% {summary['reward_first_10pct']:.3f} -> "
            f"last 10% {summary['reward_last_10pct']:.3f} (gain {summary['reward_gain']:+.3f}); "
            f"peak RSS {summary['peak_rss_mib']:.0f} MiB; run dir {self.run_dir}"
        )

    def cleanup(self) -> None:
        self.metrics_log.close()


def split_recipe(args: list[str]) -> tuple[Path, list[str]]:
    """(recipe, overrides) of ``[RECIPE] [overrides...]``: a first argument that is no override (no ``=``, no leading
    ``+``/``~``) is the recipe, whatever its suffix (the loader says what is wrong with it); else the default."""
    if args and "=" not in args[0] and not args[0].startswith(("+", "~")):
        return Path(args[0]), list(args[1:])
    return default_recipe_path(), list(args)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="holderpo train",
        description="Reference GRPO run with annealed-p HölderPO (one process, CPU or one GPU).",
        epilog="Exit codes: 0 complete, 75 checkpointed on request (rerun to resume), 2 bad recipe/arguments.",
    )
    parser.add_argument("args", nargs="*", help="[RECIPE.yaml] then Hydra-style overrides, e.g. grpo.max_num_steps=6")
    parser.add_argument(
        ACCEPT_FLAG,
        action="store_true",
        help="resume although the recipe differs from the one the run's checkpoints were made with (recorded in "
        f"RUN_DIR/{CHANGE_LOG})",
    )
    ns = parser.parse_args(argv)
    ns.recipe, ns.overrides = split_recipe(ns.args)
    return ns


def load_config(recipe: str | Path, overrides: list[str], *, paths: bool = True) -> tuple[ReferenceConfig, str]:
    """Recipe -> (validated config, resolved YAML text); raises ConfigError naming the keys (a NeMo RL recipe, a
    key of the schema, and with ``paths`` a local model directory or data file that does not exist here)."""
    from omegaconf import OmegaConf

    raw = load_recipe(recipe, overrides)
    if not is_reference_recipe(raw):
        raise ConfigError(
            str(recipe),
            "is a NeMo RL recipe (it has cluster / policy.megatron_cfg / policy.dtensor_cfg), not a reference-run one: "
            f"run it with `python -m holder_nemo.nemo_rl.run_grpo --config {recipe}` in the NeMo RL container or "
            "`sbatch slurm/holderpo_7b.sh` (docs/slurm.md); `holderpo recipe check` validates it here",
        )
    config = validate_reference_config(raw)
    missing = missing_paths(config) if paths else []
    if missing:
        raise ConfigError(missing)
    return config, OmegaConf.to_yaml(raw)


def _resolved(yaml_text: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from holder_nemo.config.loading import register_resolvers

    register_resolvers()
    return OmegaConf.to_container(OmegaConf.create(yaml_text), resolve=True)  # type: ignore[return-value]


def check_resume(run_dir: Path, resolved_yaml: str, *, accept: bool) -> None:
    """Refuse to resume the newest checkpoint with a recipe that differs from the one stored in it (a finished run
    included), unless ``accept``; an accepted change is recorded and reopens a finished run."""
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        return
    stored = _resolved((latest / ckpt.CONFIG_FILE).read_text())
    changes = check_resume_config(
        stored, _resolved(resolved_yaml), operational=OPERATIONAL_KEYS, accept=accept, where=str(latest)
    )
    if changes:
        for change in changes:
            print(f"holderpo train: accepted config change {change}", file=sys.stderr)
        record_accepted_changes(run_dir, changes, latest.name)
        (run_dir / COMPLETED_FILE).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    ns = parse_args(argv)
    try:
        cfg, resolved_yaml = load_config(ns.recipe, ns.overrides)
        run_dir = make_run_dir("checkpointing.checkpoint_dir", cfg.checkpointing.checkpoint_dir)
        check_resume(run_dir, resolved_yaml, accept=ns.accept_config_change)
    except ConfigError as exc:
        return print_problems(PROG, exc)
    if (run_dir / COMPLETED_FILE).exists():
        print(f"{PROG}: {run_dir} is already complete ({COMPLETED_FILE} exists); nothing to do")
        return EXIT_COMPLETED
    recipe = ReferenceRecipe(cfg, resolved_yaml)
    try:
        recipe.setup()
    except ConfigError as exc:  # the model directory or the data file the recipe names is unusable
        return print_problems(PROG, exc)
    try:
        return recipe.train()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (second Ctrl-C); the newest checkpoint in {run_dir} is kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        recipe.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
