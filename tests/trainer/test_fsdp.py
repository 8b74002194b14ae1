"""FSDP2 on the CPU (gloo, 2 processes): steps, equal parameters on both ranks, the same loss as DDP on the same seed
and data, a checkpoint that transformers loads, and a resume whose next step equals the uninterrupted run's."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

KEYS = ("reward", "accuracy", "length", "regret", "entropy", "loss", "grad_norm", "approx_kl_old")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)


def _cfg(out_dir, strategy: str, *extra: str):
    from tests.trainer.trainer_helpers import tiny_config
    # rl.recompute_old_logp as in the paper presets: one more (no-grad) forward through the sharded model per step.
    # Dynamic sampling (the default) runs rank-local extra generation rounds: the gather must stay out of them.
    return tiny_config(out_dir, "--distributed.strategy", strategy, "--optim.prompts_per_step", "2",
                       "--rollout.max_new_tokens", "32", "--optim.steps", "3", "--rl.recompute_old_logp", "true",
                       "--rl.dynamic_sampling", "true", "--rl.dynamic_sampling_max_rounds", "2", *extra)


def _first_run(rank: int, world: int, port: int, out: str) -> None:
    """DDP 2 steps; FSDP 3 steps; FSDP 2 steps, a checkpoint, and the process ends (as if killed)."""
    _env(rank, world, port)
    from mrt.distributed import full_state_dict, init_distributed
    from mrt.trainer import Trainer
    d = init_distributed("gloo")
    res = {}
    ddp = Trainer(_cfg(os.path.join(out, "ddp"), "ddp"), init_distributed("gloo"))
    res["ddp"] = [ddp.train_step() for _ in range(2)]
    res["ddp_state"] = full_state_dict(ddp.train_model)
    full = Trainer(_cfg(os.path.join(out, "full"), "fsdp"), init_distributed("gloo"))
    res["fsdp"] = [full.train_step() for _ in range(3)]
    res["strategy"] = full.dist.strategy
    part = Trainer(_cfg(os.path.join(out, "part"), "fsdp"), init_distributed("gloo"))
    part.train_step()
    part.train_step()
    res["fsdp_state_2"] = full_state_dict(part.train_model)    # every rank gathers (a collective)
    res["checkpoint"] = part.save()
    res["sharded"] = type(part.model.model.layers[0].mlp.gate_proj.weight).__name__
    torch.save(res, os.path.join(out, f"first{rank}.pt"))
    d.barrier()
    os._exit(0)      # no clean shutdown: the run ends right after its checkpoint


def _resumed_run(rank: int, world: int, port: int, out: str) -> None:
    _env(rank, world, port)
    from mrt.distributed import cleanup, init_distributed
    from mrt.trainer import Trainer
    d = init_distributed("gloo")
    try:
        tr = Trainer(_cfg(os.path.join(out, "part"), "fsdp", "--checkpoint.resume"), d)
        assert tr.resume() and tr.step == 2
        rec = tr.train_step()
        torch.save({"rec": rec}, os.path.join(out, f"resumed{rank}.pt"))
    finally:
        cleanup()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fsdp"))
    mp.spawn(_first_run, args=(2, _free_port(), out), nprocs=2, join=True)
    mp.spawn(_resumed_run, args=(2, _free_port(), out), nprocs=2, join=True)
    load = lambda name: [torch.load(os.path.join(out, f"{name}{r}.pt"), weights_only=False) for r in (0, 1)]  # noqa
    return load("first"), load("resumed")


def test_fsdp_steps_keep_ranks_equal_and_match_ddp(runs):
    (r0, r1), _ = runs
    assert r0["strategy"] == "fsdp" and r0["sharded"] == "DTensor"
    for k, v in r0["fsdp_state_2"].items():
        torch.testing.assert_close(r1["fsdp_state_2"][k], v, rtol=0, atol=0, msg=f"{k} differs between ranks")
    # The same seed and data: the same traces, so the same losses and updates as DDP, to float rounding (FSDP2
    # reduce-scatters where DDP all-reduces, so sums are taken in another order).
    for step, (a, b) in enumerate(zip(r0["fsdp"][:2], r0["ddp"])):
        for key in KEYS:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (step, key, a[key], b[key])
    for k, v in r0["ddp_state"].items():
        torch.testing.assert_close(r0["fsdp_state_2"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    from safetensors.torch import load_file
    initial = load_file(os.path.join(os.path.dirname(__file__), "..", "..", "mrt", "assets", "tiny_model",
                                     "model.safetensors"))
    assert any(not torch.equal(v, initial[k]) for k, v in r0["fsdp_state_2"].items() if k in initial), \
        "two FSDP steps left the parameters unchanged"


def test_fsdp_checkpoint_loads_in_transformers(runs):
    from transformers import AutoModelForCausalLM
    (r0, _), _ = runs
    hf = AutoModelForCausalLM.from_pretrained(r0["checkpoint"], dtype=torch.float32)
    state = hf.state_dict()
    for k, v in r0["fsdp_state_2"].items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0, msg=k)


def test_fsdp_resume_gives_the_uninterrupted_next_step(runs):
    (r0, r1), (s0, s1) = runs
    want = r0["fsdp"][2]
    for got in (s0["rec"], s1["rec"]):
        assert got["step"] == want["step"] == 3
        diff = {k: (got[k], want[k]) for k in KEYS if got[k] != pytest.approx(want[k], rel=1e-5, abs=1e-7)}
        assert not diff, f"resumed step differs from the uninterrupted one: {diff}"
