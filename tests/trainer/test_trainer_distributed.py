"""Two processes over gloo (torch.multiprocessing): every rank generates its share, DDP keeps parameters equal."""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from mrt.distributed import cleanup, init_distributed
    from mrt.trainer import Trainer

    from tests.trainer.trainer_helpers import tiny_config
    d = init_distributed("gloo")
    try:
        tr = Trainer(tiny_config(out_dir, "--optim.prompts_per_step", "3"), d)
        initial = {k: v.clone() for k, v in tr.model.state_dict().items()}
        recs = [tr.train_step() for _ in range(2)]
        batch, _ = tr.rollout(2)
        torch.save({"state": tr.model.state_dict(), "initial": initial, "recs": recs, "strategy": d.strategy,
                    "groups": sorted({t.group for t in batch.traces})},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        cleanup()


def test_two_ranks_keep_equal_parameters(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["strategy"] == r1["strategy"] == "ddp"
    # 3 prompts over 2 ranks: rank 0 takes prompts 0-1 of the step, rank 1 prompt 2.
    assert r0["groups"] == [0, 1] and r1["groups"] == [2]
    changed = False
    for k, v in r0["state"].items():
        torch.testing.assert_close(r1["state"][k], v, rtol=0, atol=0, msg=f"{k} differs between ranks")
        changed |= not torch.equal(v, r0["initial"][k])
    assert changed, "the parameters did not change"
    # Metrics are reduced over ranks: both report the same global values.
    for a, b in zip(r0["recs"], r1["recs"]):
        for key in ("reward", "accuracy", "length", "loss", "grad_norm"):
            assert a[key] == b[key], (key, a[key], b[key])
