"""In-process stand-ins for NeMo RL's GPU worker actors, behind NeMo RL's real ``RayWorkerGroup`` dispatch.

What is faked, and why: NeMo RL v0.7.0's policy workers (``MegatronPolicyWorker``, ``DTensorPolicyWorker[V2]``) and
vLLM workers are Ray actors that need GPUs, CUDA kernels, Megatron-Bridge / Automodel and vLLM, none of which exist
on a CPU machine. Only the *actors* are replaced: ``FakeActorWorkerGroup`` is NeMo RL's ``RayWorkerGroup`` with its
actor-creation step swapped for in-process objects; the placement groups it asks the (real, local, loopback) Ray
cluster for, the dispatch (``run_all_workers_*``, sharding by named axes, result de-duplication) and everything
above (``Policy``, ``VllmGeneration``, ``grpo.setup``, ``grpo_train``, ``CheckpointManager``) are NeMo RL's own.

The stand-in "model" is a vector ``theta`` [K] of per-token-bucket log-probability offsets: the log-prob of token
``v`` at position ``t`` is ``base(v, t) + theta[v % K]``, so importance ratios differ per token and the Hölder
order p changes the loss. ``train`` runs the real loss object (after a cloudpickle round trip, as Ray sends it)
on every micro-batch with NeMo RL's global normalisers, sums the gradients over data-parallel ranks (the one
collective done here rather than by NCCL) and takes one SGD step per global batch. ``save_checkpoint`` writes what
the real backend writes at the level NeMo RL's ``CheckpointManager`` inspects (Megatron: ``iter_0000000/common.pt``
with the optimizer state embedded; DTensor: ``weights/`` plus ``optimizer/``), and a restarted worker loads it from
the ``weights_path`` / ``optimizer_path`` that ``grpo.setup`` resolved. vLLM's ``generate`` writes a boxed answer
chosen deterministically from the prompt, and its log-probs use the ``theta`` last refitted into it, so
``token_mult_prob_error`` is 1 exactly when refit really happened.

Every call is appended to ``TRACE`` (written as JSON by the driver) for the tests to assert on, and the moments
a ``kill -9`` test aims at (each global batch of a step, each generation, each stage of a save) are trace points
(``kill_points.event``: a durable log, and the place where the driver is held for its SIGKILL).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
from pathlib import Path
from typing import Any

import kill_points
import ray
import torch
from nemo_rl.distributed.batched_data_dict import BatchedDataDict
from nemo_rl.distributed.worker_groups import MultiWorkerFuture, RayWorkerGroup
from ray import cloudpickle

K = 8  # token buckets of the stand-in model
LR = 0.5  # SGD step on theta
TRACE: dict[str, list] = {"policy_init": [], "train": [], "save_checkpoint": [], "refit": [], "generate": []}
# The "device memory": the policy's weights and optimizer step count (shared by its ranks), vLLM's refitted copy.
STATE: dict[str, Any] = {"theta": torch.zeros(K, dtype=torch.float64), "optimizer_steps": 0, "vllm_theta": None}
# Set by the driver: stop (SIGUSR1 to this process) while training this global step, as a Slurm signal would.
SIGNAL_AT_STEP = int(os.environ.get("HOLDERPO_TEST_SIGNAL_AT_STEP", "0") or 0)
CRASH_AT_SAVE = os.environ.get("HOLDERPO_TEST_CRASH_AT_SAVE") == "1"
# What the generation serves: "validation" while NeMo RL's validate runs (set by driver.py), else "train".
PHASE = {"name": "train"}


def values_digest(*tensors: torch.Tensor) -> str:
    """A short hash of tensors' values: which prompts a step or a validation saw (the data position)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def checkpoint_step(weights_path: str) -> int:
    """N of ``.../tmp_step_N/policy/weights``."""
    return int(re.search(r"step_(\d+)", weights_path).group(1))


def base_logprob(ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Deterministic per-token log-probs in [-1.5, -0.5] (float64)."""
    return -0.5 - 0.1 * ((ids.long() * 31 + positions.long() * 7) % 11).to(torch.float64)


def token_logprobs(input_ids: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """[B, S] log-probs of each token given its prefix (position 0 holds 0, NeMo RL's convention)."""
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    lp = base_logprob(input_ids, positions) + theta[input_ids.long() % K]
    lp[:, 0] = 0.0
    return lp


def _roundtrip(value: Any) -> Any:
    """What a Ray actor receives: resolved top-level ObjectRefs, then a cloudpickle copy of the argument."""
    if isinstance(value, ray.ObjectRef):
        value = ray.get(value)
    return cloudpickle.loads(cloudpickle.dumps(value))


class _RemoteMethod:
    def __init__(self, fn) -> None:
        self.fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> ray.ObjectRef:
        args = tuple(_roundtrip(a) for a in args)
        kwargs = {k: _roundtrip(v) for k, v in kwargs.items()}
        return ray.put(self.fn(*args, **kwargs))


class FakeActor:
    """One worker actor: ``actor.method.remote(...)`` runs ``method`` here and returns an ObjectRef of its result."""

    def __init__(self, rank: int, role: str, fqn: str, config: dict, init_kwargs: dict) -> None:
        self.rank, self.role, self.fqn, self.config, self.init_kwargs = rank, role, fqn, config, init_kwargs
        self.cfg = self.config  # the real workers keep their config as ``cfg`` (read by __ray_call__ functions)
        self._method_shells = {}
        # Ray's built-in on every actor: run ``fn(actor, *args)`` inside the actor process.
        self.__ray_call__ = _RemoteMethod(lambda fn, *args, **kwargs: fn(self, *args, **kwargs))

    def __getattr__(self, name: str) -> _RemoteMethod:
        if name.startswith("__") or name == "_method_shells":
            raise AttributeError(name)
        impl = getattr(self, f"do_{name}", None)
        if impl is None:
            raise AttributeError(
                f"{self.fqn} stand-in (rank {self.rank}) has no '{name}': NeMo RL called a worker method this "
                "driver-contract test does not model yet"
            )
        return _RemoteMethod(impl)

    # ------------------------------------------------------------------------------------------ shared, no-ops
    def do_report_node_ip_and_gpu_id(self) -> tuple[str, int]:
        return ("127.0.0.1", self.rank)

    def do_report_device_id(self) -> str:
        return f"GPU-fake-{self.rank}"

    def do_shutdown(self) -> bool:
        return True

    def _noop(self, *args: Any, **kwargs: Any) -> None:
        return None

    do_prepare_for_training = do_prepare_for_lp_inference = do_finish_training = do_finish_inference = _noop
    do_offload_before_refit = do_offload_after_refit = do_post_init = do_reset_prefix_cache = _noop
    do_sleep = do_wake_up = do_finish_generation = do_prepare_for_generation = do_clear_vllm_logger_metrics = _noop
    do_start_gpu_profiling = do_stop_gpu_profiling = do_release_ipc_buffer = _noop

    def do__get_raw_spec_counters(self) -> dict:
        return {}  # no speculative decoding

    def do_get_free_memory_bytes(self) -> int:
        return 80 * 2**30

    def do_prepare_refit_info(self, *args: Any, **kwargs: Any) -> dict:
        return {"theta": ((K,), torch.float64)}

    # ------------------------------------------------------------------------------------------------- policy
    def do_get_logprobs(self, data: BatchedDataDict, **_: Any) -> BatchedDataDict:
        return BatchedDataDict({"logprobs": token_logprobs(data["input_ids"], STATE["theta"]).float()})

    def do_get_reference_policy_logprobs(self, data: BatchedDataDict, **_: Any) -> BatchedDataDict:
        zeros = torch.zeros(K, dtype=torch.float64)  # the reference model: theta at initialisation
        return BatchedDataDict({"reference_logprobs": token_logprobs(data["input_ids"], zeros).float()})

    def do_stream_weights_via_ipc_zmq(self, *args: Any, **kwargs: Any) -> None:
        if self.rank == 0:
            STATE["refit_channel"] = STATE["theta"].clone()
        return None

    def do_broadcast_weights_for_collective(self, *args: Any, **kwargs: Any) -> None:
        return self.do_stream_weights_via_ipc_zmq()

    def do_save_checkpoint(self, weights_path: str, optimizer_path: str | None = None, **kwargs: Any) -> None:
        if CRASH_AT_SAVE:
            raise RuntimeError("stand-in worker: checkpoint write failed (HOLDERPO_TEST_CRASH_AT_SAVE)")
        if self.rank != 0:
            return None
        step = checkpoint_step(weights_path)
        kill_points.event("save_begin", step=step)
        TRACE["save_checkpoint"].append(
            {"weights_path": weights_path, "optimizer_path": optimizer_path, "kwargs": sorted(kwargs)}
        )
        weights = Path(weights_path)
        model = {"theta": STATE["theta"].clone()}
        optimizer = {"optimizer_steps": STATE["optimizer_steps"]}
        if "Megatron" in self.fqn:  # Megatron's dist checkpoint: optimizer embedded in iter_0000000/common.pt
            (weights / "iter_0000000").mkdir(parents=True, exist_ok=True)
            common = {"model": model, **({"optimizer": optimizer} if optimizer_path else {})}
            torch.save(common, weights / "iter_0000000" / "common.pt")
            kill_points.event("save_weights_written", step=step)  # Megatron writes its tracker file last
            (weights / "latest_checkpointed_iteration.txt").write_text("0")
        else:  # DTensor: weights and optimizer directories
            (weights / "model").mkdir(parents=True, exist_ok=True)
            torch.save(model, weights / "model" / "shard_0.pt")
            kill_points.event("save_weights_written", step=step)
            if optimizer_path:
                Path(optimizer_path).mkdir(parents=True, exist_ok=True)
                torch.save(optimizer, Path(optimizer_path) / "optim_0.pt")
        tokenizer_path = kwargs.get("tokenizer_path")
        if tokenizer_path:
            Path(tokenizer_path).mkdir(parents=True, exist_ok=True)
        kill_points.event("save_end", step=step)
        return None

    def load_from_checkpoint(self) -> None:
        """What a restarted policy worker does in ``__init__`` with the paths ``grpo.setup`` resolved."""
        weights, optimizer = self.init_kwargs.get("weights_path"), self.init_kwargs.get("optimizer_path")
        entry = {"fqn": self.fqn, "weights_path": weights and str(weights)}
        entry["optimizer_path"] = optimizer and str(optimizer)
        TRACE["policy_init"].append(entry)
        if not weights:
            kill_points.event("policy_init", **entry)
            return
        weights = Path(weights)
        if "Megatron" in self.fqn:
            common = torch.load(weights / "iter_0000000" / "common.pt", weights_only=True)
            STATE["theta"] = common["model"]["theta"]
            STATE["optimizer_steps"] = common["optimizer"]["optimizer_steps"] if optimizer else 0
        else:
            STATE["theta"] = torch.load(weights / "model" / "shard_0.pt", weights_only=True)["theta"]
            if optimizer:
                STATE["optimizer_steps"] = torch.load(Path(optimizer) / "optim_0.pt", weights_only=True)[
                    "optimizer_steps"
                ]
        entry.update(theta=STATE["theta"].tolist(), optimizer_steps=STATE["optimizer_steps"])
        kill_points.event("policy_init", **entry)

    # --------------------------------------------------------------------------------------------------- vLLM
    def do_update_weights_via_ipc_zmq(self, *args: Any, **kwargs: Any) -> bool:
        STATE["vllm_theta"] = STATE["refit_channel"].clone()
        if self.rank == 0:
            TRACE["refit"].append(STATE["vllm_theta"].tolist())
        return True

    def do_update_weights_from_collective(self, *args: Any, **kwargs: Any) -> bool:
        return self.do_update_weights_via_ipc_zmq()

    def do_generate(self, data: BatchedDataDict, greedy: bool = False) -> BatchedDataDict:
        """A boxed answer per prompt (right for about half of the samples, chosen from the prompt text and the
        sample's index), then EOS; log-probs from the refitted ``theta``."""
        from transformers import AutoTokenizer

        tokenizer = _tokenizer(self.config["model_name"], AutoTokenizer)
        theta = STATE["vllm_theta"]
        if theta is None:
            raise RuntimeError("vLLM stand-in asked to generate before any refit of the policy weights")
        input_ids, lengths = data["input_ids"], data["input_lengths"]
        responses = []
        for i in range(input_ids.shape[0]):
            prompt = tokenizer.decode(input_ids[i, : lengths[i]].tolist())
            numbers = [int(n) for n in re.findall(r"\d+", prompt.split("user")[-1])[:2]] or [0, 0]
            digest = int(hashlib.sha256(f"{prompt}|{i}".encode()).hexdigest(), 16)
            answer = sum(numbers) + (0 if digest % 2 == 0 else 1 + digest % 5)
            text = f"The sum is \\boxed{{{answer}}}"
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][: self.config["max_new_tokens"] - 1]
            responses.append([*ids, tokenizer.eos_token_id])
        width = int(lengths.max()) + max(len(r) for r in responses) if responses else 0
        pad = self.config["_pad_token_id"]
        output_ids = torch.full((len(responses), width), pad, dtype=input_ids.dtype)
        for i, response in enumerate(responses):
            n = int(lengths[i])
            output_ids[i, :n] = input_ids[i, :n]
            output_ids[i, n : n + len(response)] = torch.tensor(response, dtype=input_ids.dtype)
        logprobs = token_logprobs(output_ids, theta).float()
        for i in range(len(responses)):  # vLLM reports log-probs of generated tokens only
            logprobs[i, : int(lengths[i])] = 0.0
            logprobs[i, int(lengths[i]) + len(responses[i]) :] = 0.0
        TRACE["generate"].append({"rows": len(responses), "temperature": self.cfg["temperature"], "greedy": greedy})
        prompts, outputs = values_digest(input_ids, lengths), values_digest(output_ids)
        kill_points.event("generate", phase=PHASE["name"], rank=self.rank, prompts=prompts, responses=outputs)
        return BatchedDataDict(
            {
                "output_ids": output_ids,
                "logprobs": logprobs,
                "generation_lengths": torch.tensor([len(r) for r in responses]),
                "unpadded_sequence_lengths": torch.tensor([int(lengths[i]) + len(r) for i, r in enumerate(responses)]),
                "truncated": torch.zeros(len(responses), dtype=torch.bool),
            }
        )


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(name: str, auto_tokenizer: Any) -> Any:
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = auto_tokenizer.from_pretrained(name)
    return _TOKENIZERS[name]


def _microbatches(batch: BatchedDataDict, policy_cfg: dict, mbs: int):
    """The micro-batches the Megatron worker iterates (``get_microbatch_iterator``), with NeMo RL's own iterators."""
    if policy_cfg["sequence_packing"]["enabled"]:
        return batch.make_microbatch_iterator_for_packable_sequences()
    if policy_cfg["dynamic_batching"]["enabled"]:
        return batch.make_microbatch_iterator_with_dynamic_shapes()
    return batch.make_microbatch_iterator(mbs)


def _loss_call(mb: BatchedDataDict, loss_fn: Any, theta: torch.Tensor, seqs, toks, packed: bool):
    """The loss as the Megatron worker calls it: NeMo RL's ``SequencePackingLossWrapper`` (one call per packed
    sequence, metrics summed) or ``wrap_loss_fn_with_input_preparation``; the "model" supplies the log-probs."""
    from nemo_rl.algorithms.loss.wrapper import SequencePackingLossWrapper, wrap_loss_fn_with_input_preparation

    def prepare(logits, data, loss_fn, **_):
        return {"next_token_logprobs": token_logprobs(data["input_ids"], theta)[:, 1:]}, data

    lengths = mb["input_lengths"].long()
    outputs = torch.zeros(1, int(lengths.sum()), 1)  # stands for the packed logits; prepare reads input_ids
    if packed:
        cu = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
        return SequencePackingLossWrapper(loss_fn, prepare, cu, cu)(outputs, mb, seqs, toks)
    return wrap_loss_fn_with_input_preparation(outputs, mb, seqs, toks, loss_fn, prepare)


def train_all_ranks(
    shards: list[BatchedDataDict], loss_fn: Any, gbs: int, mbs: int, eval_mode: bool, policy_cfg: dict
) -> list[dict]:
    """Every data-parallel rank's ``train``, as the Megatron worker runs it: per global batch NeMo RL's
    ``get_batch`` (``process_global_batch``: valid sequences / next-token positions summed over DP ranks), the
    micro-batches of NeMo RL's iterators, the loss through NeMo RL's wrappers, gradients summed over ranks (the
    NCCL all-reduce), one SGD step on ``theta``. Returns each rank's result dict as the real workers do."""
    dp = len(shards)
    local_gbs = gbs // dp
    n_batches = sum(s.size for s in shards) // gbs
    packed = policy_cfg["sequence_packing"]["enabled"]
    per_rank_metrics: list[list[dict]] = [[] for _ in range(dp)]
    losses = []
    grad_norm = torch.tensor(0.0)
    step = getattr(loss_fn, "step", None)
    if SIGNAL_AT_STEP and step == SIGNAL_AT_STEP:
        os.kill(os.getpid(), signal.SIGUSR1)  # as `scancel --signal=USR1` would, while this step trains
    kill_points.event("train_begin", step=step, data=values_digest(*(s["input_ids"] for s in shards)))
    for g in range(n_batches):
        batches = [s.get_batch(batch_idx=g, batch_size=local_gbs) for s in shards]
        seqs = torch.tensor(sum(float(b["sample_mask"].sum()) for b in batches))
        toks = torch.tensor(
            sum(float((b["token_mask"][:, 1:] * b["sample_mask"].unsqueeze(-1)).sum()) for b in batches)
        )
        theta = STATE["theta"].clone().requires_grad_(not eval_mode)
        batch_loss = 0.0
        mb_count = [0] * dp
        for rank, batch in enumerate(batches):
            for mb in _microbatches(batch, policy_cfg, mbs):
                loss, metrics = _loss_call(mb, loss_fn, theta, seqs, toks, packed)
                if not eval_mode:
                    loss.backward()
                batch_loss += float(loss)
                metrics = {k: (v if ("_min" in k or "_max" in k) else v / n_batches) for k, v in metrics.items()}
                metrics.update(
                    {"lr": LR, "wd": 0.0, "global_valid_seqs": float(seqs), "global_valid_toks": float(toks)}
                )
                per_rank_metrics[rank].append(metrics)
                mb_count[rank] += 1
        assert sum(mb_count) > 0, "a global batch without micro-batches"
        if not eval_mode:
            grad = theta.grad
            grad_norm = grad.norm()
            STATE["theta"] = (STATE["theta"] - LR * grad).detach()
            STATE["optimizer_steps"] += 1
        losses.append(batch_loss)
        kill_points.event("train_batch", step=step, batch=g + 1, of=n_batches)
    TRACE["train"].append(
        {
            "step": step,
            "p": getattr(loss_fn, "p", None),
            "theta": STATE["theta"].tolist(),
            "optimizer_steps": STATE["optimizer_steps"],
            "losses": losses,
        }
    )
    kill_points.event("train_end", **TRACE["train"][-1])
    results = []
    for rank in range(dp):
        mb_metrics: dict[str, list] = {}
        for m in per_rank_metrics[rank]:
            for k, v in m.items():
                mb_metrics.setdefault(k, []).append(v)
        results.append(
            {
                "global_loss": torch.tensor(losses),
                "grad_norm": torch.tensor([float(grad_norm)]),
                "rank": rank,
                "gpu_name": "fake",
                "model_dtype": torch.bfloat16,
                "all_mb_metrics": mb_metrics,
            }
        )
    return results


class FakeActorWorkerGroup(RayWorkerGroup):
    """NeMo RL's ``RayWorkerGroup`` whose actors are ``FakeActor`` objects in this process (see module docstring)."""

    def _create_workers_from_bundle_indices(self, remote_worker_builder, bundle_indices_list, env_vars=None) -> None:
        fqn = remote_worker_builder.ray_actor_class_fqn
        role = "vllm" if "Vllm" in fqn else "policy"
        config = remote_worker_builder.args[0] if remote_worker_builder.args else {}
        placement_groups = self.cluster.get_placement_groups()  # the real group asks Ray for GPU bundles here
        assert placement_groups, "no placement groups"
        rank = 0
        for _group, bundles in bundle_indices_list:
            for local_rank, _ in enumerate(bundles):
                if local_rank == 0:
                    self.dp_leader_worker_indices.append(rank)
                actor = FakeActor(rank, role, fqn, config, dict(remote_worker_builder.kwargs))
                self._workers.append(actor)
                self._worker_metadata.append({"node_idx": _group, "local_rank": local_rank, "dp_shard_idx": rank})
                rank += 1
        if role == "policy":
            self._workers[0].load_from_checkpoint()

    def run_all_workers_sharded_data(self, method_name: str, *args: Any, **kwargs: Any) -> MultiWorkerFuture:
        if method_name != "train":
            return super().run_all_workers_sharded_data(method_name, *args, **kwargs)
        # The data-parallel gradient all-reduce is a collective across actors; here all ranks train in one call.
        common = {k: _roundtrip(v) for k, v in (kwargs.get("common_kwargs") or {}).items()}
        shards = [_roundtrip(s) for s in kwargs["data"]]
        policy_cfg = self._workers[0].config
        results = train_all_ranks(
            shards, common["loss_fn"], common["gbs"], common["mbs"], common["eval_mode"], policy_cfg
        )
        leaders = [
            i
            for i in range(len(self._workers))
            if all(
                coord == 0
                for axis, coord in self.sharding_annotations.get_worker_coords(i).items()
                if axis != "data_parallel"
            )
        ]
        futures = [ray.put(results[self.sharding_annotations.get_worker_coords(i)["data_parallel"]]) for i in leaders]
        return MultiWorkerFuture(futures=futures, called_workers=leaders, return_from_workers=leaders)

    def shutdown(self, cleanup_method: str | None = None, timeout: float | None = 30.0, force: bool = False) -> bool:
        self._workers = []
        return True


def install() -> None:
    """Point NeMo RL's policy and vLLM generation modules at the fake-actor worker group."""
    from nemo_rl.models.generation.vllm import vllm_generation
    from nemo_rl.models.policy import lm_policy

    lm_policy.RayWorkerGroup = FakeActorWorkerGroup
    vllm_generation.RayWorkerGroup = FakeActorWorkerGroup
