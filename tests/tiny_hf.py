"""Helpers shared by tests that build tiny random `transformers` models."""
import torch


def unit_scale_weights_(model: torch.nn.Module) -> torch.nn.Module:
    """Re-draw the weights so activations are of unit scale, in place.

    The default init (std 0.02) gives near-constant logits: greedy ties and flat distributions would let bugs pass.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    return model


def tiny_qwen2(vocab: int, seed: int) -> torch.nn.Module:
    """A 2-layer Qwen2 of width 32 (GQA, qkv bias, tied embeddings, EOS 0) with unit-scale weights, in eval mode: the
    engine tests' model, small enough to run thousands of steps on the CPU."""
    from mrt.models import ArchConfig, CausalLM
    torch.manual_seed(seed)
    cfg = ArchConfig(architecture="Qwen2ForCausalLM", vocab_size=vocab, hidden_size=32, intermediate_size=48,
                     num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=128,
                     qkv_bias=True, tie_word_embeddings=True, eos_token_ids=[0])
    return unit_scale_weights_(CausalLM.from_config(cfg)).eval()
