"""A model's shape, read from its `config.json` alone: parameter counts, bytes, FLOPs per token, KV bytes per token.

No weights are read and nothing is downloaded. `model.path` may be a folder holding only a `config.json`, an `mrt:`
path, or a hub id whose shape ships in `mrt/plan/model_shapes/` (HUB_SHAPES); anything else raises ConfigError naming
`model.path`.

Counts, for hidden d, layers L, heads H, KV heads Hkv, head dim D, intermediate I, vocab V (the decoder of
mrt/models: q/k/v/o projections, a gated SiLU MLP, RMSNorms):
    matmul params per layer  = d*H*D (q) + 2*d*Hkv*D (k, v) + H*D*d (o) + 3*d*I (gate, up, down)
    other params per layer   = biases (q/k/v for Qwen2) + 2*d (norms) [+ 2*D for Qwen3's q/k norms]
    params                   = L * (matmul + other) + V*d (embedding) + d (final norm) + V*d (lm head, unless tied)
    kv bytes per token       = L * 2 * Hkv * D * element size (one K and one V row per layer)
A forward of one token costs 2 * matmul params FLOPs in the layers (a multiply and an add per weight) and 2*d*V in the
lm head when its logits are needed; attention adds 4*H*D FLOPs per layer per (query, key) pair (QK^T and PV).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import ConfigError, resolve_path
from ..models.config import ArchConfig

SHAPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_shapes")

# hub id -> the folder under model_shapes/ holding its config.json (same architecture, same numbers).
HUB_SHAPES = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": "DeepSeek-R1-Distill-Qwen-1.5B",
    "agentica-org/DeepScaleR-1.5B-Preview": "DeepSeek-R1-Distill-Qwen-1.5B",   # a fine-tune of it (README there)
}

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    name: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int                  # max_position_embeddings
    tied: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    dtype_bytes: int = 2
    eos_token_ids: tuple[int, ...] = (0,)

    @classmethod
    def from_model_config(cls, mc: ArchConfig, name: str, dtype: str) -> "ModelShape":
        return cls(name=name, vocab=mc.vocab_size, hidden=mc.hidden_size, intermediate=mc.intermediate_size,
                   layers=mc.num_layers, heads=mc.num_heads, kv_heads=mc.num_kv_heads, head_dim=mc.head_dim,
                   context=mc.max_position_embeddings, tied=mc.tie_word_embeddings, qkv_bias=mc.qkv_bias,
                   o_bias=mc.o_bias, mlp_bias=mc.mlp_bias, qk_norm=mc.qk_norm, dtype_bytes=DTYPE_BYTES[dtype],
                   eos_token_ids=tuple(mc.eos_token_ids or [0]))

    # ---- parameters ---------------------------------------------------------------------------------------------
    @property
    def layer_matmul_params(self) -> int:
        d, H, Hkv, D, I = self.hidden, self.heads, self.kv_heads, self.head_dim, self.intermediate
        return d * H * D + 2 * d * Hkv * D + H * D * d + 3 * d * I

    @property
    def layer_other_params(self) -> int:
        d, H, Hkv, D, I = self.hidden, self.heads, self.kv_heads, self.head_dim, self.intermediate
        bias = (H * D + 2 * Hkv * D if self.qkv_bias else 0) + (d if self.o_bias else 0) \
            + (2 * I + d if self.mlp_bias else 0)
        return bias + 2 * d + (2 * D if self.qk_norm else 0)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        """The lm head's own weight (0 when tied to the embedding: it is the same tensor)."""
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.layers * (self.layer_matmul_params + self.layer_other_params) + self.embedding_params \
            + self.hidden + self.lm_head_params

    @property
    def weights_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def matmul_weight_bytes(self) -> int:
        """Bytes a forward streams for its layers' products (read once per forward, whatever the row count)."""
        return self.layers * self.layer_matmul_params * self.dtype_bytes

    @property
    def head_weight_bytes(self) -> int:
        """The lm head's V x d matrix (tied or not, a forward that needs logits reads it)."""
        return self.vocab * self.hidden * self.dtype_bytes

    # ---- per token ----------------------------------------------------------------------------------------------
    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def flops_per_token(self) -> int:
        """Layers' products of one token (no attention scores, no lm head)."""
        return 2 * self.layers * self.layer_matmul_params

    @property
    def head_flops_per_row(self) -> int:
        return 2 * self.hidden * self.vocab

    @property
    def attn_flops_per_pair(self) -> int:
        """QK^T and PV over all layers for one (query, key) pair."""
        return 4 * self.layers * self.heads * self.head_dim

    def to_dict(self) -> dict:
        return {"name": self.name, "params": self.params, "weights_bytes": self.weights_bytes,
                "kv_bytes_per_token": self.kv_bytes_per_token, "layers": self.layers, "hidden": self.hidden,
                "heads": self.heads, "kv_heads": self.kv_heads, "head_dim": self.head_dim,
                "intermediate": self.intermediate, "vocab": self.vocab, "dtype_bytes": self.dtype_bytes}


def config_json_path(path: str) -> str:
    """model.path -> the config.json the plan reads (a local folder, an `mrt:` path, or a shipped hub shape)."""
    local = resolve_path(path)
    if os.path.isdir(local):
        cj = os.path.join(local, "config.json")
        if not os.path.isfile(cj):
            raise ConfigError(f"model.path: {path} has no config.json (the plan needs only that file)")
        return cj
    if path in HUB_SHAPES:
        return os.path.join(SHAPES_DIR, HUB_SHAPES[path], "config.json")
    raise ConfigError(f"model.path: {path} is neither a folder with a config.json nor a hub id whose shape ships with "
                      f"mrt.plan (known: {', '.join(sorted(HUB_SHAPES))}); nothing is downloaded: pass "
                      "--model.path DIR with the model's config.json")


def load_shape(path: str, dtype: str) -> ModelShape:
    """The shape of model.path in the run's dtype; a config.json this decoder cannot run raises ConfigError."""
    import json
    cj = config_json_path(path)
    try:
        with open(cj, encoding="utf-8") as f:
            raw = json.load(f)
        mc = ArchConfig.from_hf_dict(raw)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"model.path: {cj}: not a usable config.json ({type(exc).__name__}: {exc})") from None
    name = os.path.basename(os.path.dirname(cj)) or path
    return ModelShape.from_model_config(mc, name, dtype)
