"""CausalLM: the Llama-family decoder (Llama 3.x, Qwen2/2.5, Qwen3), one module for training and generation.

    hidden = model(input_ids (N,), positions (N,), attn, kv_cache=None)   # (N, hidden_size), after the final norm

- `attn: PackedMetadata`: N tokens of B packed sequences (no padding), causal within each; `kv_cache` must be None.
  This is the training / scoring path: the caller takes log-probs with the fused kernel on `hidden` and
  `model.lm_head_weight`, so no (N, V) logits exist. `model.gradient_checkpointing = True` recomputes each layer in
  the backward pass (only the layer inputs are kept).
- `attn: PagedMetadata`: N new tokens of B sequences whose earlier keys/values sit in `kv_cache`
  (num_layers, 2, num_blocks, block_size, Hkv, D); layer l stores its new K/V in kv_cache[l, 0] / kv_cache[l, 1] and
  attends over them. Generation calls `compute_logits` on the last token of each sequence only.
Parameter names are those of transformers' models, so the state dict is the checkpoint's.
"""
from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention, KVLayer
from .attention_metadata import PackedMetadata, PagedMetadata
from .config import ArchConfig
from .hf_checkpoint import load_state_dict, save_state_dict
from .layers import MLP, RMSNorm
from .rope import Rotary

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class DecoderLayer(nn.Module):
    def __init__(self, config: ArchConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size, config.mlp_bias)

    def forward(self, h, cos, sin, attn, spans, kv_layer):
        if torch.is_grad_enabled():
            h = h + self.self_attn(self.input_layernorm(h), cos, sin, attn, spans, kv_layer)
            return h + self.mlp(self.post_attention_layernorm(h))
        # Without autograd each residual sum goes into the branch's fresh output (x + y == y + x bit for bit): no
        # (N, d) temporary per sum
        h = self.self_attn(self.input_layernorm(h), cos, sin, attn, spans, kv_layer).add_(h)
        return self.mlp(self.post_attention_layernorm(h)).add_(h)


class Decoder(nn.Module):
    """transformers' `model.` submodule: embeddings, layers, final norm."""

    def __init__(self, config: ArchConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class CausalLM(nn.Module):
    def __init__(self, config: ArchConfig):
        super().__init__()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = None if config.tie_word_embeddings else \
            nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary = Rotary(config.head_dim, config.rope_theta, config.rope_scaling)
        self.gradient_checkpointing = False

    @property
    def lm_head_weight(self) -> torch.Tensor:
        """(V, d): the lm-head weight, the embedding matrix itself when tied."""
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    # ---- forward ------------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: PackedMetadata | PagedMetadata,
                kv_cache: torch.Tensor | None = None, *, check: bool = True) -> torch.Tensor:
        """check=False skips the paged kernels' argument checks (done in the first layer otherwise): for a caller
        that built the metadata from its own block tables, as the engine's runner does."""
        if input_ids.dim() != 1 or positions.shape != input_ids.shape:
            raise ValueError(f"input_ids and positions must both be (N,), got {tuple(input_ids.shape)} and "
                             f"{tuple(positions.shape)}")
        spans = None
        if isinstance(attn, PackedMetadata):
            if kv_cache is not None:
                raise ValueError("kv_cache must be None with PackedMetadata (packed mode keeps no cache)")
            cu = attn.cu_seqlens.tolist()           # one host sync per forward, not per layer
            if cu[0] != 0 or cu[-1] != input_ids.shape[0]:
                raise ValueError(f"attn.cu_seqlens must run from 0 to N={input_ids.shape[0]}, got {cu[0]}..{cu[-1]}")
            spans = [(a, b) for a, b in zip(cu[:-1], cu[1:]) if b > a]
        elif isinstance(attn, PagedMetadata):
            self._check_kv_cache(kv_cache)
        else:
            raise ValueError(f"attn must be PackedMetadata or PagedMetadata, got {type(attn).__name__}")

        h = self.model.embed_tokens(input_ids)                    # (N, d)
        cos, sin = self.rotary.cos_sin(positions, h.dtype)       # (N, 1, D) each; sin carries rotate_half's sign
        use_ckpt = self.gradient_checkpointing and spans is not None and torch.is_grad_enabled()
        for i, layer in enumerate(self.model.layers):
            kv_layer = None if kv_cache is None else KVLayer(kv_cache[i, 0], kv_cache[i, 1], check=check and i == 0)
            if use_ckpt:
                h = checkpoint(layer, h, cos, sin, attn, spans, kv_layer, use_reentrant=False)
            else:
                h = layer(h, cos, sin, attn, spans, kv_layer)
        return self.model.norm(h)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (n, d) -> logits (n, V) float32 (the matmul in the model's dtype, as transformers does)."""
        if hidden.device.type == "cpu" and hidden.dim() == 2:
            # On the CPU, W (V, d) @ hidden^T (d, n) runs MKL's sgemm with the V x d weight as the untransposed left
            # operand, which streams it faster than hidden @ W^T: 1.1-1.7x for the n = 8..24 rows of a decode step
            # at a 49k vocabulary (SmolLM2-135M's shape). The (V, n) product is then laid out (n, V), contiguous.
            return torch.mm(self.lm_head_weight, hidden.t()).t().to(torch.float32,
                                                                     memory_format=torch.contiguous_format)
        return F.linear(hidden, self.lm_head_weight).float()

    def _check_kv_cache(self, kv_cache: torch.Tensor | None) -> None:
        c = self.config
        if kv_cache is None:
            raise ValueError("kv_cache is required with PagedMetadata")
        if kv_cache.dim() != 6 or kv_cache.shape[0] != c.num_layers or kv_cache.shape[1] != 2 \
                or kv_cache.shape[4] != c.num_kv_heads or kv_cache.shape[5] != c.head_dim:
            raise ValueError(f"kv_cache must be (num_layers={c.num_layers}, 2, num_blocks, block_size, "
                             f"num_kv_heads={c.num_kv_heads}, head_dim={c.head_dim}), got {tuple(kv_cache.shape)}")
        if kv_cache.dtype != self.dtype or kv_cache.device != self.device:
            raise ValueError(f"kv_cache is {kv_cache.dtype} on {kv_cache.device}, the model {self.dtype} on "
                             f"{self.device}")

    def new_kv_cache(self, num_blocks: int, block_size: int) -> torch.Tensor:
        """A zeroed (num_layers, 2, num_blocks, block_size, Hkv, D) cache in the model's dtype and device."""
        c = self.config
        return torch.zeros(c.num_layers, 2, num_blocks, block_size, c.num_kv_heads, c.head_dim, dtype=self.dtype,
                           device=self.device)

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ArchConfig, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu", std: float = 0.02,
                    generator: torch.Generator | None = None) -> "CausalLM":
        """A randomly initialised model (benchmarks, the embedded tiny model): see `init_weights`."""
        with torch.device(device):
            model = cls(config)
        return model.to(dtype).init_weights(std, generator=generator)

    @torch.no_grad()
    def init_weights(self, std: float = 0.02, *, generator: torch.Generator | None = None) -> "CausalLM":
        """transformers' scheme: weights of linears and embeddings ~ N(0, std^2), biases 0, norm weights 1."""
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                # draw in float32 on the CPU so a seed gives the same model on every device and dtype
                p.copy_(torch.randn(p.shape, generator=generator) * std)
        return self

    # ---- Hugging Face folders -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype | str = torch.float32,
                        device: torch.device | str = "cpu") -> "CausalLM":
        """Load config.json + safetensors weights. dtype="auto" takes the checkpoint's dtype from config.json."""
        config = ArchConfig.from_pretrained(path)
        if dtype == "auto":
            dtype = _DTYPES.get(config.torch_dtype or "float32", torch.float32)
        elif isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)} or 'auto'")
            dtype = _DTYPES[dtype]
        with torch.device("meta"):
            model = cls(config)
        expected = {n: t.shape for n, t in model.state_dict().items()}
        state = load_state_dict(path, expected, dtype=dtype, device=device, tied=config.tie_word_embeddings)
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()

    def save_pretrained(self, path: str | os.PathLike, *, max_shard_size: int | None = None) -> None:
        """Write config.json + model.safetensors (or shards + index) in the layout transformers loads as is."""
        os.makedirs(path, exist_ok=True)
        state = self.state_dict()
        if self.lm_head is None:
            state.pop("lm_head.weight", None)
        save_state_dict(state, path, max_shard_size=max_shard_size)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(self.config.to_hf_dict(dtype=str(self.dtype).removeprefix("torch.")), f, indent=2)
