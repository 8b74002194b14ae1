"""Engine outputs -> the packed batch of one training step.

A batch holds B traces (G samples of each of this rank's prompts). Per trace: the prompt and completion tokens, the
rollout policy's log-prob of each completion token (`old_logp`), the outcome reward, its group (the prompt), the
episode boundaries found online and the meta-prover's J at each, and J_prompt (the prompt's bare-prompt estimate).

Packed layouts (no padding):
- for `progress_advantages`: completion tokens only; token_offsets (B+1,), episode_offsets (B+1,), episode_ends (E,)
  (a boundary b closes an episode of b completion tokens), J (E,), J_prompt (B,), rewards (B,), group_ids (B,);
- for the update: each trace is prompt + completion; the model's hidden state at position p predicts token p+1, so
  the targets of a trace are its tokens shifted by one, with the prompt's (and the last position's) masked out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .meta_prover import branch_success


@dataclass
class Trace:
    prompt_ids: list[int]
    completion_ids: list[int]
    old_logp: list[float]
    reward: float
    correct: float                 # the outcome reward alone (without the format bonus): accuracy
    group: int
    boundaries: list[int]          # completion token counts, strictly increasing, in [1, len(completion)]
    J: list[float]                 # meta-prover success at each boundary
    J_prompt: float
    finish_reason: str = "length"


@dataclass
class RolloutBatch:
    traces: list[Trace] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.traces)

    @property
    def num_completion_tokens(self) -> int:
        return sum(len(t.completion_ids) for t in self.traces)

    def advantage_inputs(self, device="cpu") -> dict:
        """The tensors of `progress_advantages` (see the module docstring)."""
        lens = [len(t.completion_ids) for t in self.traces]
        n_ep = [len(t.boundaries) for t in self.traces]
        i64 = dict(dtype=torch.int64, device=device)
        f32 = dict(dtype=torch.float32, device=device)
        return dict(
            token_offsets=torch.tensor([0] + _cumsum(lens), **i64),
            episode_offsets=torch.tensor([0] + _cumsum(n_ep), **i64),
            episode_ends=torch.tensor([b for t in self.traces for b in t.boundaries], **i64),
            J=torch.tensor([j for t in self.traces for j in t.J], **f32),
            J_prompt=torch.tensor([t.J_prompt for t in self.traces], **f32),
            rewards=torch.tensor([t.reward for t in self.traces], **f32),
            group_ids=torch.tensor([t.group for t in self.traces], **i64),
        )


def _cumsum(xs: list[int]) -> list[int]:
    out, s = [], 0
    for x in xs:
        s += x
        out.append(s)
    return out


def build_batch(outputs, answers: list, group_ids: list[int], boundaries_of, reward_fn, *, termination_text: str,
                format_reward_fn=None, format_weight: float = 0.0, default_J_prompt: float = 0.0) -> RolloutBatch:
    """RequestOutputs (one per prompt, G completions each) -> RolloutBatch.

    answers[i], group_ids[i]: of prompt i. boundaries_of(i, j) -> the boundaries the meta-prover found online for
    sample j of prompt i (a completion's branches carry their J). Boundaries without a branch answer (e.g. past a
    cap) are dropped. default_J_prompt is used when no bare-prompt branches were run (GRPO without the meta-prover).
    """
    batch = RolloutBatch()
    for i, req in enumerate(outputs):
        # The bare-prompt branches hang on whichever sample was running first: gather them over the group.
        J_prompt, _ = branch_success([b for c in req.outputs for b in c.branches], termination_text, answers[i],
                                     reward_fn)
        J_prompt = default_J_prompt if J_prompt is None else J_prompt
        for c in req.outputs:
            _, J_at = branch_success(c.branches, termination_text, answers[i], reward_fn)
            n = len(c.token_ids)
            bounds = [b for b in boundaries_of(i, c.index) if b in J_at and 1 <= b <= n]
            correct = float(reward_fn(c.text, answers[i]))
            reward = correct + (format_weight * format_reward_fn(c.text) if format_weight else 0.0)
            batch.traces.append(Trace(list(req.prompt_token_ids), list(c.token_ids), list(c.logprobs), reward,
                                      correct, group_ids[i], bounds, [J_at[b] for b in bounds], J_prompt,
                                      c.finish_reason))
    return batch


@dataclass
class PackedUpdate:
    """One micro-batch of the update: packed input ids, positions, targets (ignore_index where masked), advantages,
    old log-probs and trace ids, all (N,), and the trace lengths (prompt + completion)."""
    input_ids: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor
    old_logp: torch.Tensor
    seq_ids: torch.Tensor
    seq_lens: list[int]


def micro_batches(batch: RolloutBatch, advantages: torch.Tensor, token_budget: int, *, ignore_index: int = -100,
                  device="cpu") -> list[PackedUpdate]:
    """Split the traces into micro-batches of at most token_budget packed tokens (a longer trace goes alone).

    advantages (T,) is over completion tokens in batch order (the layout of `advantage_inputs`).
    """
    adv = advantages.detach().float().cpu()
    groups, cur, cur_tok = [], [], 0
    for b, t in enumerate(batch.traces):
        L = len(t.prompt_ids) + len(t.completion_ids)
        if cur and cur_tok + L > token_budget:
            groups.append(cur)
            cur, cur_tok = [], 0
        cur.append(b)
        cur_tok += L
    if cur:
        groups.append(cur)
    starts = [0] + _cumsum([len(t.completion_ids) for t in batch.traces])
    out = []
    for g in groups:
        ids, pos, tgt, msk, a, old, sid, lens = [], [], [], [], [], [], [], []
        for b in g:
            t = batch.traces[b]
            P, C = len(t.prompt_ids), len(t.completion_ids)
            seq = t.prompt_ids + t.completion_ids
            L = P + C
            ids += seq
            pos += list(range(L))
            # Position p predicts token p+1: completion token k (at p = P + k) is predicted at p = P + k - 1.
            tgt += [ignore_index] * (P - 1) + t.completion_ids + [ignore_index]
            msk += [False] * (P - 1) + [True] * C + [False]
            a += [0.0] * (P - 1) + adv[starts[b]:starts[b + 1]].tolist() + [0.0]
            old += [0.0] * (P - 1) + list(t.old_logp) + [0.0]
            sid += [b] * L
            lens.append(L)
        out.append(PackedUpdate(
            torch.tensor(ids, dtype=torch.int64, device=device), torch.tensor(pos, dtype=torch.int64, device=device),
            torch.tensor(tgt, dtype=torch.int64, device=device), torch.tensor(msk, dtype=torch.bool, device=device),
            torch.tensor(a, dtype=torch.float32, device=device), torch.tensor(old, dtype=torch.float32, device=device),
            torch.tensor(sid, dtype=torch.int64, device=device), lens))
    return out
