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
