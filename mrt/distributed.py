"""Distributed runs through torchrun: process group, data-parallel wrapping, collectives for metrics.

- Environment: torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT); without them the run is a single
  process and nothing is initialised.
- Backend: gloo on the CPU, nccl on GPUs (`distributed.backend: auto`). The process group's timeout is 10 minutes on
  gloo, 30 on nccl (`pg_timeout_s`); a rank that dies is found within seconds by the heartbeat watchdog
  (mrt.watchdog), which ends the others with a line naming the lost rank.
- Generation: every rank generates its own share of the step's prompts with its own engine.
- Update: DDP (gradients all-reduced in backward) or FSDP2 (`fully_shard` per decoder layer and the root). With FSDP2
  the ranks' generation loops run different numbers of steps, so the model cannot all-gather inside them: the
  parameters are gathered once per step into an unsharded generation copy (`sync_generation_model`).
- FSDP2 checkpoints: the model goes out in Hugging Face layout from the gathered generation copy (rank 0 writes it),
  the optimizer as its gathered full state dict keyed by parameter names (`gathered_optimizer_state`, every rank
  takes part); resuming reads both on every rank and shards them again (`load_fsdp_checkpoint`), through
  torch.distributed.checkpoint's state-dict API, so a run resumes on any number of ranks.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: str = "none"               # none | ddp | fsdp

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- collectives (no-ops on one process) -------------------------------------------------------------------
    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """t summed over ranks, in place (returned): one all-reduce (mrt.step_metrics stacks a step's sums into t)."""
        if self.enabled:
            dist.all_reduce(t)
        return t

    def all_gather_objects(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shard(self, n: int) -> tuple[int, int]:
        """[start, end) of this rank's share of n items (the first n % world_size ranks get one more)."""
        q, r = divmod(n, self.world_size)
        start = self.rank * q + min(self.rank, r)
        return start, start + q + (1 if self.rank < r else 0)


def init_distributed(backend: str = "auto", device: str | None = None) -> Distributed:
    """Read torchrun's environment, pick the device and start the process group (when WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        if backend == "nccl" and dev.type != "cuda":
            raise ValueError("distributed.backend: nccl needs GPUs; use gloo on the CPU")
        timeout = datetime.timedelta(seconds=pg_timeout_s(backend))
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout,
                                **_restart_store(world, timeout))
        global _PEER_STORE
        from torch.distributed import distributed_c10d
        _PEER_STORE = distributed_c10d._get_default_store()
        from .watchdog import start_watchdog
        start_watchdog(_PEER_STORE, rank, world)
    return Distributed(rank, world, local, dev)


# How long a collective may wait for a peer before the process group gives up. On GPUs (nccl) a peer may be busy for
# long between collectives (an evaluation, a big checkpoint gathered to rank 0); gloo runs on the CPU, with small
# models, where no legitimate wait comes near 10 minutes. A rank that dies is found much sooner than either, by the
# heartbeat watchdog (mrt.watchdog). MRT_PG_TIMEOUT_S overrides both.
PG_TIMEOUT_S = {"nccl": 30 * 60, "gloo": 10 * 60}


def pg_timeout_s(backend: str) -> float:
    env = os.environ.get("MRT_PG_TIMEOUT_S")
    if env:
        try:
            value = float(env)
        except ValueError:
            value = -1.0
        if value <= 0:
            raise ValueError(f"MRT_PG_TIMEOUT_S: expected a positive number of seconds, got {env!r}")
        return value
    return PG_TIMEOUT_S.get(backend, PG_TIMEOUT_S["nccl"])


def _restart_store(world: int, timeout) -> dict:
    """After torchrun restarts the group (`--max-restarts`), the agent's store still holds the last attempt's keys,
    among them the gloo addresses of its dead ranks; a new rank that reads one before its peer rewrites it fails to
    connect ("Connection refused"). So each restarted attempt rendezvouses under its own key prefix."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt == "0" or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, False, timeout=timeout)
    return {"store": dist.PrefixStore(f"mrt/attempt_{attempt}/", store)}


_PEER_STORE = None


def peer_store():
    """The key-value store of the run's rendezvous (kept past the process group's end: torchrun's agent hosts it),
    or None before any process group: how failing ranks wait for each other's error lines (mrt.cli)."""
    return _PEER_STORE


def wrap_model(model: torch.nn.Module, dist_env: Distributed, strategy: str = "auto",
               fsdp_min_params: int = 500_000_000):
    """The module that takes the training forward: the model itself (one process), DDP or FSDP2.

    strategy auto: DDP, or FSDP2 on GPUs for models of at least fsdp_min_params parameters.
    """
    if not dist_env.enabled:
        dist_env.strategy = "none"
        return model
    if strategy == "auto":
        big = sum(p.numel() for p in model.parameters()) >= fsdp_min_params
        strategy = "fsdp" if big and dist_env.device.type == "cuda" else "ddp"
    dist_env.strategy = strategy
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [dist_env.device.index] if dist_env.device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded parameters and buffers (every rank takes part in the all-gathers of FSDP2's DTensors)."""
    out = {}
    for name, t in unwrap(model).state_dict().items():
        out[name] = t.full_tensor() if hasattr(t, "full_tensor") else t
    return out


@torch.no_grad()
def sync_generation_model(train_model: torch.nn.Module, gen_model: torch.nn.Module) -> None:
    """Copy the (gathered) training parameters into the unsharded generation model, in place (the engine keeps
    references to gen_model's tensors)."""
    full = full_state_dict(train_model)
    for name, t in gen_model.state_dict().items():
        t.copy_(full[name])


def gathered_optimizer_state(train_model, optimizer, dist_env: Distributed) -> dict | None:
    """The optimizer state to checkpoint, on rank 0 (None elsewhere). FSDP2: a collective (every rank must call it)
    that gathers the sharded moments into full tensors on the CPU, keyed by parameter name; otherwise the
    optimizer's own state dict (every rank holds all of it)."""
    if dist_env.strategy != "fsdp":
        return optimizer.state_dict() if dist_env.is_main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    state = get_optimizer_state_dict(train_model, optimizer,
                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if dist_env.is_main else None


def load_fsdp_checkpoint(train_model, gen_model, optimizer, path: str, optimizer_state: dict | None) -> None:
    """Resume an FSDP2 run: the full weights of the checkpoint folder and the full optimizer state (both read on
    every rank) are sharded into the training model and its optimizer; the generation copy takes the full weights."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    from .models.hf_checkpoint import load_state_dict
    expected = {n: t.shape for n, t in gen_model.state_dict().items()}
    full = load_state_dict(path, expected, dtype=gen_model.dtype, device=gen_model.device,
                           tied=gen_model.config.tie_word_embeddings)
    with torch.no_grad():      # first: set_model_state_dict turns the dict's tensors into shards in place
        for name, t in gen_model.state_dict().items():
            t.copy_(full[name])
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(train_model, full, options=opts)
    if optimizer_state is not None:
        set_optimizer_state_dict(train_model, optimizer, optimizer_state, options=opts)


def cleanup() -> None:
    from .watchdog import stop_watchdog
    stop_watchdog()          # first: the peers must not take this rank's exit for a death
    if dist.is_initialized():
        dist.destroy_process_group()
