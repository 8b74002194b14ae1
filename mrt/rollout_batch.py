"""Engine outputs -> the packed batch of one training step -> the update's micro-batches.

A batch holds B traces (G samples of each of this rank's prompts), packed without padding, in tensors from the start
(`build_batch` is the one place the engine's outputs change form):
- prompt_ids (sum P,) with prompt_offsets (B+1,): trace b's prompt is prompt_ids[prompt_offsets[b]:prompt_offsets[b+1]];
- completion_ids, old_logp (T,) with token_offsets (B+1,): its completion and the rollout policy's log-prob of each
  completion token;
- rewards, correct (the outcome reward alone: accuracy), J_prompt (the prompt's bare-prompt estimate), group_ids
  (the prompt), truncated (stopped by the length limit), all (B,);
- episode_ends, J (E,) with episode_offsets (B+1,): the episode boundaries found online (a boundary b closes an
  episode of b completion tokens) and the meta-prover's J at each, read off the trace's scored branches
  (`mrt.meta_prover.score_branches`, `episode_J`).
Its offsets, ends, J, J_prompt, rewards and group_ids are the inputs of `progress_advantages` (`advantage_inputs`).

For the update (`micro_batches`) each trace is prompt + completion; the model's hidden state at position p predicts
token p+1, so the targets of a trace are its tokens shifted by one, with the prompt's (and the last position's)
masked out: completion token k (at position P + k) is the target of position P + k - 1. Advantages and old
log-probs sit at the same positions (0 elsewhere). The whole batch is packed at once by index arithmetic on the
batch's device, then cut into micro-batches of whole traces; `micro_batches_ref` is the same packing written out
in per-token Python lists (the definition, for tests).
"""
from __future__ import annotations

import dataclasses
from array import array
from dataclasses import dataclass
from itertools import accumulate

import torch

from .meta_prover import BranchTag, episode_J, score_branches

_I64, _F32 = torch.int64, torch.float32
_PROMPT = BranchTag.prompt()


@dataclass
class Trace:
    """One trace in plain Python values: what `RolloutBatch.from_traces` packs and `RolloutBatch.traces` unpacks
    (tests and inspection; a training step never builds these)."""
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
    """B packed traces (module docstring)."""
    prompt_ids: torch.Tensor       # (sum P,) int64
    prompt_offsets: torch.Tensor   # (B+1,) int64
    completion_ids: torch.Tensor   # (T,) int64
    old_logp: torch.Tensor         # (T,) float32
    token_offsets: torch.Tensor    # (B+1,) int64
    rewards: torch.Tensor          # (B,) float32
    correct: torch.Tensor          # (B,) float32
    group_ids: torch.Tensor        # (B,) int64
    J_prompt: torch.Tensor         # (B,) float32
    truncated: torch.Tensor        # (B,) bool
    episode_offsets: torch.Tensor  # (B+1,) int64
    episode_ends: torch.Tensor     # (E,) int64
    J: torch.Tensor                # (E,) float32

    def __len__(self) -> int:
        return self.rewards.numel()

    @property
    def device(self) -> torch.device:
        return self.rewards.device

    @property
    def num_completion_tokens(self) -> int:
        return self.completion_ids.numel()

    @property
    def prompt_lens(self) -> torch.Tensor:
        return self.prompt_offsets.diff()

    @property
    def completion_lens(self) -> torch.Tensor:
        return self.token_offsets.diff()

    def to(self, device) -> RolloutBatch:
        return RolloutBatch(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})

    def advantage_inputs(self) -> dict:
        """The tensors of `progress_advantages`, on the batch's device."""
        return dict(token_offsets=self.token_offsets, episode_offsets=self.episode_offsets,
                    episode_ends=self.episode_ends, J=self.J, J_prompt=self.J_prompt, rewards=self.rewards,
                    group_ids=self.group_ids)

    def select(self, index: torch.Tensor) -> RolloutBatch:
        """The traces at index (B',) int64, in that order."""
        index = index.to(device=self.device, dtype=_I64)
        src_p, prompt_offsets = _segment_gather(self.prompt_offsets, index)
        src_t, token_offsets = _segment_gather(self.token_offsets, index)
        src_e, episode_offsets = _segment_gather(self.episode_offsets, index)
        return RolloutBatch(self.prompt_ids[src_p], prompt_offsets, self.completion_ids[src_t], self.old_logp[src_t],
                            token_offsets, self.rewards[index], self.correct[index], self.group_ids[index],
                            self.J_prompt[index], self.truncated[index], episode_offsets, self.episode_ends[src_e],
                            self.J[src_e])

    @classmethod
    def cat(cls, batches: list[RolloutBatch]) -> RolloutBatch:
        """The traces of batches, one after the other."""
        if len(batches) == 1:
            return batches[0]
        out = {}
        for f in dataclasses.fields(cls):
            parts = [getattr(b, f.name) for b in batches]
            out[f.name] = _cat_offsets(parts) if f.name.endswith("offsets") else torch.cat(parts)
        return cls(**out)

    @classmethod
    def from_traces(cls, traces: list[Trace]) -> RolloutBatch:
        builder = _BatchBuilder()
        for t in traces:
            builder.add(t.prompt_ids, t.completion_ids, t.old_logp, t.reward, t.correct, t.group, t.boundaries, t.J,
                        t.J_prompt, t.finish_reason)
        return builder.build()

    @property
    def traces(self) -> list[Trace]:
        """The traces in plain Python values (one host transfer of the whole batch)."""
        h = {f.name: getattr(self, f.name).tolist() for f in dataclasses.fields(self)}
        po, to, eo = h["prompt_offsets"], h["token_offsets"], h["episode_offsets"]
        return [Trace(h["prompt_ids"][po[b]:po[b + 1]], h["completion_ids"][to[b]:to[b + 1]],
                      h["old_logp"][to[b]:to[b + 1]], h["rewards"][b], h["correct"][b], h["group_ids"][b],
                      h["episode_ends"][eo[b]:eo[b + 1]], h["J"][eo[b]:eo[b + 1]], h["J_prompt"][b],
                      "length" if h["truncated"][b] else "stop") for b in range(len(self))]


def _segment_gather(offsets: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Segments index of a packed layout with offsets (B+1,) -> (source positions (N',), new offsets (B'+1,))."""
    lens = offsets.diff()[index]                                                    # (B',)
    new = torch.cat([offsets.new_zeros(1), lens.cumsum(0)])                         # (B'+1,)
    n = int(new[-1])
    owner = torch.repeat_interleave(torch.arange(index.numel(), device=offsets.device), lens, output_size=n)
    src = offsets[index][owner] + torch.arange(n, device=offsets.device) - new[:-1][owner]
    return src, new


def _cat_offsets(parts: list[torch.Tensor]) -> torch.Tensor:
    """Offsets (B_i+1,) of packed layouts -> the offsets of their concatenation."""
    out, base = [parts[0][:1]], parts[0].new_zeros(())
    for p in parts:
        out.append(p[1:] + base)
        base = base + p[-1]
    return torch.cat(out)


class _BatchBuilder:
    """Collects traces, then packs them in one go (`build`): the engine's token-id lists are appended to one int64
    array each, made a tensor once per batch (an array's buffer converts ~3x faster than a list); log-probs are the
    engine's tensors, concatenated."""

    def __init__(self):
        self.prompt_ids, self.completion_ids = array("q"), array("q")
        self.prompt_lens, self.completion_lens, self.logps = [], [], []
        self.rewards, self.correct, self.groups, self.J_prompt, self.truncated = [], [], [], [], []
        self.ends, self.J, self.num_episodes = [], [], []

    def add(self, prompt_ids, completion_ids, logprobs, reward: float, correct: float, group: int,
            boundaries: list[int], J: list[float], J_prompt: float, finish_reason: str) -> None:
        prompt_ids, completion_ids = _id_list(prompt_ids), _id_list(completion_ids)
        self.prompt_ids.extend(prompt_ids)
        self.prompt_lens.append(len(prompt_ids))
        self.completion_ids.extend(completion_ids)
        self.completion_lens.append(len(completion_ids))
        self.logps.append(torch.as_tensor(logprobs, dtype=_F32).cpu())     # a tensor or a list: either works
        self.rewards.append(reward)
        self.correct.append(correct)
        self.groups.append(group)
        self.J_prompt.append(J_prompt)
        self.truncated.append(finish_reason == "length")
        self.ends += boundaries
        self.J += J
        self.num_episodes.append(len(boundaries))

    def build(self) -> RolloutBatch:
        def offsets(lens: list[int]) -> torch.Tensor:
            return torch.tensor([0, *accumulate(lens)], dtype=_I64)

        return RolloutBatch(
            _int64_tensor(self.prompt_ids), offsets(self.prompt_lens), _int64_tensor(self.completion_ids),
            torch.cat(self.logps) if self.logps else torch.zeros(0, dtype=_F32), offsets(self.completion_lens),
            torch.tensor(self.rewards, dtype=_F32), torch.tensor(self.correct, dtype=_F32),
            torch.tensor(self.groups, dtype=_I64), torch.tensor(self.J_prompt, dtype=_F32),
            torch.tensor(self.truncated, dtype=torch.bool), offsets(self.num_episodes),
            torch.tensor(self.ends, dtype=_I64), torch.tensor(self.J, dtype=_F32))


def _id_list(ids) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else ids


def _int64_tensor(values: array) -> torch.Tensor:
    """An int64 array -> a tensor of its own (frombuffer shares the array's memory: cloned)."""
    return torch.frombuffer(values, dtype=_I64).clone() if len(values) else torch.zeros(0, dtype=_I64)


def build_batch(outputs, answers: list, group_ids: list[int], reward_fn, *, termination_text: str,
                format_reward_fn=None, format_weight: float = 0.0, default_J_prompt: float = 0.0) -> RolloutBatch:
    """RequestOutputs (one per prompt, G completions each) -> RolloutBatch.

    answers[i], group_ids[i]: of prompt i. Each completion's branches are scored once (`score_branches`); its
    boundaries and J are its episode branches' (`episode_J`). The bare-prompt branches hang on whichever sample was
    running first: J_prompt gathers them over the group, default_J_prompt when there are none (e.g. GRPO without the
    meta-prover, or an evaluation without bare-prompt branches).
    """
    builder = _BatchBuilder()
    for i, req in enumerate(outputs):
        answer = answers[i]
        scores = [score_branches(c.branches, termination_text, lambda text: reward_fn(text, answer))
                  for c in req.outputs]
        prompt = [s[_PROMPT] for s in scores if _PROMPT in s]
        J_prompt = _merged(prompt).J if prompt else default_J_prompt
        prompt_ids = list(req.prompt_token_ids)
        for c, s in zip(req.outputs, scores):
            bounds, J = episode_J(s, len(c.token_ids))
            correct = float(reward_fn(c.text, answer))
            reward = correct + (format_weight * format_reward_fn(c.text) if format_weight else 0.0)
            builder.add(prompt_ids, c.token_ids, c.logprobs, reward, correct, group_ids[i], bounds, J, J_prompt,
                        c.finish_reason)
    return builder.build()


def _merged(scores: list):
    out = scores[0]
    for s in scores[1:]:
        out = out.merge(s)
    return out


@dataclass
class PackedUpdate:
    """One micro-batch of the update: packed input ids, positions, targets (ignore_index where masked), mask,
    advantages, old log-probs and trace ids, all (N,), and the trace lengths (prompt + completion)."""
    input_ids: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor
    old_logp: torch.Tensor
    seq_ids: torch.Tensor
    seq_lens: list[int]


def micro_batches(batch: RolloutBatch, advantages: torch.Tensor, token_budget: int, *, ignore_index: int = -100,
                  device=None) -> list[PackedUpdate]:
    """Split the traces into micro-batches of at most token_budget packed tokens (a longer trace goes alone).

    advantages (T,) is over completion tokens in batch order (the layout of `advantage_inputs`). The batch is packed
    on `device` (default: the batch's own) and each micro-batch is a slice of that packing.
    """
    if device is not None:
        batch = batch.to(device)
    lens = (batch.prompt_lens + batch.completion_lens).tolist()            # (B,) on the host: the split points
    packed = _pack(batch, advantages.detach().to(batch.device, _F32), lens, ignore_index)
    out, first, lo = [], 0, 0
    for count in _budget_groups(lens, token_budget):
        seq_lens = lens[first:first + count]
        hi = lo + sum(seq_lens)
        out.append(PackedUpdate(*(t[lo:hi] for t in packed), seq_lens))
        first, lo = first + count, hi
    return out


def _budget_groups(lens: list[int], token_budget: int) -> list[int]:
    """Trace counts of consecutive micro-batches, each of at most token_budget tokens (or one longer trace)."""
    counts, cur, cur_tok = [], 0, 0
    for L in lens:
        if cur and cur_tok + L > token_budget:
            counts.append(cur)
            cur, cur_tok = 0, 0
        cur += 1
        cur_tok += L
    return counts + [cur] if cur else counts


def _pack(batch: RolloutBatch, adv: torch.Tensor, lens: list[int], ignore_index: int) -> tuple[torch.Tensor, ...]:
    """The whole batch packed: (input_ids, positions, targets, mask, advantages, old_logp, seq_ids), each (N,)."""
    dev, B, T = batch.device, len(batch), batch.num_completion_tokens
    N = sum(lens)
    P, L = batch.prompt_lens, batch.prompt_lens + batch.completion_lens                      # (B,)
    sid = torch.repeat_interleave(torch.arange(B, device=dev), L, output_size=N)             # (N,) trace of each
    seq_start = torch.cat([L.new_zeros(1), L.cumsum(0)[:-1]])                                # (B,)
    pos = torch.arange(N, device=dev) - seq_start[sid]                                       # (N,) position in trace
    Ps = P[sid]
    # Input token: prompt token pos, or completion token pos - P (one gather from prompts ++ completions).
    tokens = torch.cat([batch.prompt_ids, batch.completion_ids])
    src = torch.where(pos < Ps, batch.prompt_offsets[sid] + pos,
                      batch.prompt_ids.numel() + batch.token_offsets[sid] + pos - Ps)
    # Position p predicts completion token k = p + 1 - P, for p in [P - 1, L - 2]; elsewhere the index points at
    # the padding entry T appended below (ignore_index / 0).
    mask = (pos >= Ps - 1) & (pos <= L[sid] - 2)
    k = torch.where(mask, batch.token_offsets[sid] + pos + 1 - Ps, torch.full_like(pos, T))
    return (tokens[src], pos, _padded(batch.completion_ids, ignore_index)[k], mask, _padded(adv, 0.0)[k],
            _padded(batch.old_logp, 0.0)[k], sid)


def _padded(x: torch.Tensor, value) -> torch.Tensor:
    """x (T,) with one more entry, value, at index T."""
    return torch.cat([x, x.new_full((1,), value)])


def micro_batches_ref(traces: list[Trace], advantages: list[float], token_budget: int, *,
                      ignore_index: int = -100) -> list[PackedUpdate]:
    """The definition of `micro_batches` in per-token Python lists (tests compare the two)."""
    starts = [0]
    for t in traces:
        starts.append(starts[-1] + len(t.completion_ids))
    lens = [len(t.prompt_ids) + len(t.completion_ids) for t in traces]
    out, first = [], 0
    for count in _budget_groups(lens, token_budget):
        ids, pos, tgt, msk, a, old, sid = [], [], [], [], [], [], []
        for b in range(first, first + count):
            t = traces[b]
            P, C = len(t.prompt_ids), len(t.completion_ids)
            ids += t.prompt_ids + t.completion_ids
            pos += list(range(P + C))
            tgt += [ignore_index] * (P - 1) + t.completion_ids + [ignore_index]
            msk += [False] * (P - 1) + [True] * C + [False]
            a += [0.0] * (P - 1) + advantages[starts[b]:starts[b + 1]] + [0.0]
            old += [0.0] * (P - 1) + t.old_logp + [0.0]
            sid += [b] * (P + C)
        out.append(PackedUpdate(torch.tensor(ids, dtype=_I64), torch.tensor(pos, dtype=_I64),
                                torch.tensor(tgt, dtype=_I64), torch.tensor(msk, dtype=torch.bool),
                                torch.tensor(a, dtype=_F32), torch.tensor(old, dtype=_F32),
                                torch.tensor(sid, dtype=_I64), lens[first:first + count]))
        first += count
    return out
