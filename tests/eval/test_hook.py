"""The budget hook's fork requests, and cutting the stop ending off a round of thinking, without a model."""
from mrt.eval.budget_forcing import BudgetHook
from mrt.eval.extrapolation import trim_stop
from mrt.meta_prover import BranchTag
from mrt.rollout import SamplingParams, SequenceView


def _view(out, req=0, sample=0, prompt=(5, 6, 7)):
    return SequenceView(request_index=req, sample_index=sample, prompt_token_ids=list(prompt),
                        output_token_ids=list(out), num_new_tokens=1)


def test_hook_forks_once_at_each_budget():
    meta = SamplingParams(temperature=0.0, max_tokens=4, n=3)
    hook = BudgetHook([4, 2, 7], [90, 91], meta, stop_token_ids=[0])
    assert hook(_view([1])) is None
    reqs = hook(_view([1, 2]))
    assert [(r.tag, r.position, r.continuation_token_ids, r.params.n) for r in reqs] == [
        (BranchTag.budget(2), 5, [90, 91], 3)]
    assert hook(_view([1, 2, 3])) is None
    # Several budgets passed in one step (a multi-token step or a preempted sequence): each forks once, in order.
    reqs = hook(_view([1, 2, 3, 4, 5, 6, 7, 8]))
    assert [(r.tag.position, r.position) for r in reqs] == [(4, 7), (7, 10)]
    assert hook(_view(list(range(1, 12)))) is None
    # Another sample of the same request keeps its own count; a prefix ending in the stop token is not forked.
    assert [r.tag.position for r in hook(_view([3, 3], sample=1))] == [2]
    assert hook(_view([3, 3, 3, 0], sample=1)) is None
    assert hook.num_forks == 4


def test_trim_stop():
    vocab = {1: "a", 2: " b", 3: " Th", 4: "e answer", 5: " is", 6: "\n\n", 9: "<eos>"}

    def decode(ids):
        return "".join(vocab[i] for i in ids)

    assert trim_stop([1, 2, 9], decode, [], [9]) == [1, 2]
    assert trim_stop([1, 2, 6, 3, 4, 5, 1], decode, ["The answer is"], [9]) == [1, 2]
    assert trim_stop([1, 2, 3], decode, ["The answer is"], [9]) == [1, 2, 3]
    # The stop string starts inside a token: that whole token goes.
    assert trim_stop([1, 2, 3, 4, 5], decode, ["he answer"], []) == [1, 2]
    assert trim_stop([6, 6], decode, ["x"], []) == []
