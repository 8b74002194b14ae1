"""Counts and memory of mrt.plan against hand computation."""
import pytest

from mrt.config import load_config
from mrt.plan.memory import activation_bytes, plan_memory
from mrt.plan.profiles import H100, with_rates
from mrt.plan.shape import load_shape


def test_small_shape_counts_by_hand(small_model_dir):
    s = load_shape(small_model_dir, "bfloat16")
    d, H, Hkv, D, I, L, V = 64, 4, 2, 16, 128, 2, 100
    matmul = d * H * D + 2 * d * Hkv * D + H * D * d + 3 * d * I          # 4096 + 4096 + 4096 + 24576
    assert s.layer_matmul_params == matmul == 36864
    other = (H * D + 2 * Hkv * D) + 2 * d                                  # q/k/v biases (Qwen2), two norms
    assert s.layer_other_params == other == 256
    assert s.params == L * (matmul + other) + V * d + d + V * d == 87104
    assert s.weights_bytes == 2 * 87104
    assert s.kv_bytes_per_token == L * 2 * Hkv * D * 2 == 256
    assert s.flops_per_token == 2 * L * matmul
    assert s.attn_flops_per_pair == 4 * L * H * D


def test_paper_shape_params():
    s = load_shape("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "bfloat16")
    assert s.params == 1_777_088_000          # 28 x 46,797,824 + 2 x 151,936 x 1,536 + 1,536
    assert s.kv_bytes_per_token == 28 * 2 * 2 * 128 * 2
    assert load_shape("agentica-org/DeepScaleR-1.5B-Preview", "bfloat16").params == s.params


def test_memory_by_hand(small_model_dir):
    cfg = load_config(None, ["--model.path", small_model_dir, "--model.dtype", "bfloat16",
                             "--optim.micro_batch_tokens", "1000", "--rollout.memory_fraction", "0.5",
                             "--rollout.max_new_tokens", "100"])
    prof = with_rates(H100, memory_bytes=1e9, context_bytes=0.0)
    W = 87104 * 2
    one = plan_memory(cfg, load_shape(small_model_dir, "bfloat16"), prof, 1, prompt_tokens=28)
    assert one.strategy == "none" and one.weights == W and one.gradients == W and one.optimizer == 2 * W
    assert one.generation_copy == 0
    per_block = 256 * 16
    assert one.kv_blocks == int((1e9 - W) * 0.5 // per_block)
    assert one.seq_tokens == 128
    assert one.max_concurrent_seqs == min(one.kv_blocks * 16 // 128, cfg.rollout.max_num_seqs)
    # activations: without checkpointing L * per-token-layer bytes, with it L * d * b + one layer's
    per_tl = (5 * 64 + 2 * 64 + 2 * 32 + 4 * 128) * 2 + 4 * 4
    s = load_shape(small_model_dir, "bfloat16")
    assert activation_bytes(s, 1000, False) == 1000 * (2 * per_tl) + 1000 * 64 * 2
    assert activation_bytes(s, 1000, True) == 1000 * (2 * 64 * 2 + per_tl) + 1000 * 64 * 2
    # FSDP over 4 GPUs (forced): shards of the training copy, a whole generation copy
    cfg4 = load_config(None, ["--model.path", small_model_dir, "--distributed.strategy", "fsdp"])
    four = plan_memory(cfg4, s, prof, 4, prompt_tokens=28)
    assert four.strategy == "fsdp" and four.weights == W / 4 and four.optimizer == 2 * W / 4
    assert four.generation_copy == W


def test_fsdp_auto_rule_on_the_paper_shape():
    cfg = load_config("configs/r1_distill_qwen_1p5b_mrt.yaml", [])
    s = load_shape(cfg.model.path, cfg.model.dtype)
    assert plan_memory(cfg, s, H100, 8, 160).strategy == "fsdp"
    assert plan_memory(cfg, s, H100, 1, 160).strategy == "none"
    m = plan_memory(cfg, s, H100, 8, 160)
    assert m.fits and m.activations == m.activations_checkpointed < m.activations_full


@pytest.mark.parametrize("path", ["no/such/hub-model"])
def test_unknown_model_path_names_the_key(path):
    from mrt.config import ConfigError
    with pytest.raises(ConfigError, match="model.path"):
        load_shape(path, "bfloat16")
