"""One model on one dataset: every measurement of the evaluation, into one results dict.

1. n traces per problem, generated once up to the largest budget, with meta-prover forks at every curve point
   (the budgets plus a grid every `curve_every` tokens) -> pass@1 and maj@k of the traces' own answers, mean tokens,
   accuracy at each budget, the J-vs-tokens curve of each trace.
2. Normalised regret at each budget C0 (mean over traces of each trace's regret, docs/algorithm.md), and regret per
   episode with fixed-chunk episodes of `curve_every` tokens (the grid points inside each trace): mrt.regret, the
   functions training uses.
3. Optionally, extrapolation: rounds of forced further thinking with accuracy every few rounds.
4. Optionally (`episode_markers`), the meta-prover at episode boundaries on the same traces: accuracy when the answer
   is forced after episode j, episodes a trace and the progress of each episode (mrt.eval.episode_forcing).
"""
from __future__ import annotations

import time
from typing import Any

from mrt.config import ConfigError, EvalConfig
from mrt.data import DataError, prompt_ids
from mrt.regret import cumulative_regret, normalised_regret, regret_per_episode
from mrt.seeds import derive_seed

from . import metrics, stats
from .budget_forcing import generate_with_budgets
from .episode_forcing import episode_hook, episode_metrics, score_episode_traces
from .extrapolation import extrapolate
from .problems import EvalDataset, get_verifier


def format_prompts(tokenizer, problems: list[str], cfg: EvalConfig) -> list[list[int]]:
    """Prompt token ids: cfg.prompt_template around each problem, then training's prompt formatter (mrt.data: the
    tokenizer's chat template unless cfg.chat_template is off; a tokenizer without one is an error, not raw text)."""
    out = []
    for p in problems:
        _, ids = prompt_ids(cfg.prompt_template.format(problem=p), tokenizer, cfg.chat_template, key="--chat-template")
        if not ids:
            raise DataError(f"problem {p[:60]!r} tokenizes to no tokens")
        out.append(ids)
    return out


def curve_points(cfg: EvalConfig) -> list[int]:
    """Output-token counts at which the meta-prover answers: the budgets and a grid every curve_every tokens."""
    step = episode_tokens(cfg)
    return sorted(set(cfg.budgets) | set(range(step, cfg.max_budget + 1, step)))


def episode_tokens(cfg: EvalConfig) -> int:
    return cfg.curve_every or max(1, cfg.max_budget // 16)


def check_context(cfg: EvalConfig, prompts: list[list[int]], termination_ids: list[int], max_context: int) -> None:
    """ConfigError when a budget (or the extrapolation) cannot fit the model's context."""
    longest = max(len(p) for p in prompts)
    need = longest + cfg.max_budget + len(termination_ids) + cfg.answer_tokens
    if cfg.max_budget >= max_context or need > max_context:
        raise ConfigError(f"budget {cfg.max_budget} is larger than the model's context allows: the longest prompt "
                          f"({longest}) + budget ({cfg.max_budget}) + termination text ({len(termination_ids)}) + "
                          f"answer ({cfg.answer_tokens}) = {need} tokens > {max_context} (max_position_embeddings); "
                          f"lower --budgets or --answer-tokens")
    if cfg.extrapolation_rounds:
        need = longest + (cfg.extrapolation_rounds + 1) * (cfg.round_tokens + 8) + len(termination_ids) \
            + cfg.answer_tokens
        if need > max_context:
            raise ConfigError(f"extrapolation needs up to {need} tokens ({cfg.extrapolation_rounds + 1} rounds of "
                              f"{cfg.round_tokens}) > the model's context {max_context}; lower --extrapolation-rounds "
                              f"or --round-tokens")


def _stop_ids(engine, tokenizer) -> list[int]:
    ids = getattr(getattr(getattr(engine, "model", None), "config", None), "eos_token_ids", None) or []
    if tokenizer.eos_token_id is not None:
        ids = list(ids) + [tokenizer.eos_token_id]
    return sorted(set(int(i) for i in ids))


def evaluate_dataset(engine, tokenizer, dataset: EvalDataset, cfg: EvalConfig, *, max_context: int,
                     model_name: str = "model") -> dict[str, Any]:
    from mrt.rollout import SamplingParams

    t0 = time.perf_counter()
    verifier = get_verifier(cfg.verifier or dataset.verifier)
    termination_text = cfg.termination_text if cfg.termination_text is not None else dataset.termination_text
    termination_ids = tokenizer.encode(termination_text, add_special_tokens=False)
    prompts = format_prompts(tokenizer, dataset.problems, cfg)
    check_context(cfg, prompts, termination_ids, max_context)

    def reward(text: str, i: int) -> float:
        return float(verifier.reward(text, dataset.answers[i]))

    stop_ids = _stop_ids(engine, tokenizer)
    trace_params, meta_params = _sampling_params(cfg, len(prompts))
    points = curve_points(cfg)
    episodes = episode_hook(cfg, tokenizer, termination_ids, max_tokens=cfg.max_budget, max_len=max_context,
                            stop_token_ids=stop_ids, seed=derive_seed("eval-episode-meta-prover", cfg.seed))
    outs, traces, fork_stats = generate_with_budgets(engine, prompts, trace_params, points, termination_ids,
                                                     termination_text, meta_params, reward, stop_token_ids=stop_ids,
                                                     use_tqdm=cfg.progress,
                                                     extra_hooks=() if episodes is None else (episodes,))
    result = {"model": model_name, "dataset": dataset.name, "verifier": verifier.name, "num_problems": len(prompts),
              "samples": cfg.samples, **_own_answer_metrics(outs, prompts, reward, verifier, cfg),
              **_budget_metrics(traces, points, cfg),
              "forks": fork_stats["forks"], "fallbacks": fork_stats["fallbacks"]}
    if episodes is not None:
        result["episodes"] = episode_metrics(score_episode_traces(outs, traces, termination_text, reward), cfg)
    if cfg.extrapolation_rounds:
        curve = extrapolate(engine, tokenizer, prompts, reward, rounds=cfg.extrapolation_rounds,
                            round_tokens=cfg.round_tokens, eval_every=cfg.eval_every, markers=cfg.markers,
                            think_end=cfg.think_end, termination_text=termination_text,
                            trace_params=SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p),
                            seed=derive_seed("eval-extrapolation", cfg.seed),
                            meta_params=meta_params, stop_token_ids=stop_ids)
        result["extrapolation"] = curve.to_dict()
    result["seconds"] = time.perf_counter() - t0
    return result


def _sampling_params(cfg: EvalConfig, num_prompts: int):
    """(the traces' SamplingParams, one per prompt, the meta-prover's), each with its own seed.

    Every prompt needs a seed of its own: the engine gives sample j of every request that shares a seed the same
    noise stream (as a seeded request does in vLLM), so one seed for all prompts would draw every problem's traces
    from the same few uniforms and make the accuracy of a whole dataset hang on 'samples' random draws."""
    from dataclasses import replace

    from mrt.rollout import SamplingParams
    base = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_budget, n=cfg.samples)
    trace_params = [replace(base, seed=derive_seed("eval-trace", cfg.seed, i)) for i in range(num_prompts)]
    meta_params = SamplingParams(temperature=cfg.meta_temperature, top_p=cfg.meta_top_p, max_tokens=cfg.answer_tokens,
                                 n=cfg.meta_samples, seed=derive_seed("eval-meta-prover", cfg.seed))
    return trace_params, meta_params


def _own_answer_metrics(outs, prompts, reward, verifier, cfg: EvalConfig) -> dict[str, Any]:
    """The traces' own answers: pass@1, pass@k, maj@k against tokens, mean tokens, the stopped fraction."""
    own_rewards, keys, lengths = [], [], []
    for i, out in enumerate(outs):
        own_rewards.append([reward(c.text, i) for c in out.outputs])
        keys.append([verifier.extract(c.text) for c in out.outputs])
        lengths += [len(c.token_ids) for c in out.outputs]
    mean_tokens = metrics.mean(lengths)
    maj = metrics.maj_curve(keys, [[r > 0.5 for r in row] for row in own_rewards])
    return {
        "pass@1": metrics.pass_at_1([r for row in own_rewards for r in row]),
        "pass@k": [metrics.mean([metrics.pass_at_k(len(row), int(sum(r > 0.5 for r in row)), k)
                                 for row in own_rewards]) for k in range(1, cfg.samples + 1)],
        "maj@k": maj, "tokens_for_maj@k": [k * mean_tokens for k in range(1, len(maj) + 1)],
        "mean_tokens": mean_tokens, "mean_prompt_tokens": metrics.mean([len(p) for p in prompts]),
        "stopped_fraction": metrics.mean([float(c.finish_reason == "stop") for o in outs for c in o.outputs]),
    }


def _budget_metrics(traces, points: list[int], cfg: EvalConfig) -> dict[str, Any]:
    """Budget forcing: accuracy and normalised regret at the budgets, the J-vs-tokens curves, regret per episode."""
    all_traces = [t for row in traces for t in row]
    col = {p: j for j, p in enumerate(points)}
    # C0 counts the prompt too, as the curve's x does (docs/algorithm.md): C0 = prompt + budget. Each trace's curve
    # is defined in mrt.eval.budget_forcing (past its end, J is its own outcome).
    regret_at = [metrics.mean([normalised_regret(*t.curve(), t.num_prompt_tokens + b,
                                                 interpolation=cfg.regret_interpolation) for t in all_traces])
                 for b in cfg.budgets]
    # Episodes of fixed chunks: J at the grid points inside the trace, then the point at or past its end closes the
    # last (maybe partial) chunk: the own outcome of a trace that stopped, the last forced answer of one cut off.
    per_episode, cumulative = [], []
    for t in all_traces:
        inside = sum(p < t.num_output_tokens for p in points)
        js = t.J[:inside + 1]
        per_episode.append(regret_per_episode(js))
        cumulative.append(cumulative_regret(js))
    return {
        "budgets": list(cfg.budgets),
        "accuracy_at_budget": [metrics.mean([t.J[col[b]] for t in all_traces]) for b in cfg.budgets],
        "normalised_regret_at_budget": regret_at,
        "curve": {"output_tokens": points,
                  "tokens": [metrics.mean([t.tokens[j] for t in all_traces]) for j in range(len(points))],
                  "J": [metrics.mean([t.J[j] for t in all_traces]) for j in range(len(points))]},
        # The same curves on one token grid, mean over problems with a 95% band: one curve rising in x per model.
        "curve_grid": stats.curve_band([[t.curve() for t in row] for row in traces]),
        "episode_tokens": episode_tokens(cfg),
        "regret_per_episode": metrics.mean(per_episode), "cumulative_regret": metrics.mean(cumulative),
    }
