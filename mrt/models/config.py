"""ArchConfig: the few numbers that define a Llama-family decoder, parsed from a Hugging Face `config.json`.

The families differ only in small switches, kept in the `ARCHITECTURES` registry:
- Llama 3.x: optional bias on all attention projections (`attention_bias`) and on the MLP (`mlp_bias`); llama3 rope
  scaling.
- Qwen2 / Qwen2.5 (and the DeepSeek-R1-Distill-Qwen models): bias on q/k/v, none on o.
- Qwen3: an RMSNorm over head_dim on each query and key head before rope (`qk_norm`); bias from `attention_bias`.
Both the transformers 5 layout (`rope_parameters` holding `rope_theta`) and the older one (top-level `rope_theta`,
`rope_scaling`) are read. Anything this decoder does not implement raises ValueError naming it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class _Family:
    model_type: str
    qkv_bias: Callable[[dict], bool]      # from the HF dict
    o_bias: Callable[[dict], bool]
    qk_norm: bool


ARCHITECTURES: dict[str, _Family] = {
    "LlamaForCausalLM": _Family("llama", lambda c: bool(c.get("attention_bias", False)),
                                lambda c: bool(c.get("attention_bias", False)), qk_norm=False),
    "Qwen2ForCausalLM": _Family("qwen2", lambda c: True, lambda c: False, qk_norm=False),
    "Qwen3ForCausalLM": _Family("qwen3", lambda c: bool(c.get("attention_bias", False)),
                                lambda c: bool(c.get("attention_bias", False)), qk_norm=True),
}
_BY_MODEL_TYPE = {fam.model_type: arch for arch, fam in ARCHITECTURES.items()}

# Rope types implemented in rope.py (others, e.g. yarn or dynamic NTK, raise when the config is parsed).
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass
class ArchConfig:
    architecture: str                   # HF class name, e.g. "Qwen2ForCausalLM"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None    # {"rope_type": "llama3", "factor": ..., ...} or None for plain rope
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    tie_word_embeddings: bool = False
    eos_token_ids: list[int] = field(default_factory=list)
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    torch_dtype: str | None = None      # the checkpoint's dtype as written in config.json ("bfloat16", ...)
    hf_config: dict = field(default_factory=dict, repr=False)   # the parsed config.json, kept for save_pretrained

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; supported: {sorted(ARCHITECTURES)}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"ArchConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        # The switches must be ones transformers can express for this architecture, or a saved model would load
        # differently there.
        fam, as_hf = ARCHITECTURES[self.architecture], {"attention_bias": self.qkv_bias}
        for name, want in (("qkv_bias", fam.qkv_bias(as_hf)), ("o_bias", fam.o_bias(as_hf)),
                           ("qk_norm", fam.qk_norm)):
            if getattr(self, name) != want:
                raise ValueError(f"{self.architecture} needs {name}={want} (with qkv_bias={self.qkv_bias})")
        if self.mlp_bias and self.architecture != "LlamaForCausalLM":
            raise ValueError(f"{self.architecture} has no MLP bias; mlp_bias must be False")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rope, got {self.head_dim}")
        if self.rope_scaling is not None:
            rope_type = self.rope_scaling.get("rope_type", "default")
            if rope_type not in ROPE_TYPES:
                raise ValueError(f"unsupported rope_type {rope_type!r} in rope scaling; supported: {ROPE_TYPES}")

    @property
    def model_type(self) -> str:
        return ARCHITECTURES[self.architecture].model_type

    # ---- Hugging Face config.json -------------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any]) -> "ArchConfig":
        archs = cfg.get("architectures") or []
        arch = archs[0] if archs else _BY_MODEL_TYPE.get(cfg.get("model_type", ""), cfg.get("model_type"))
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r} (model_type {cfg.get('model_type')!r}); supported: "
                             f"{sorted(ARCHITECTURES)}")
        fam = ARCHITECTURES[arch]
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"unsupported hidden_act {act!r} for {arch}; only 'silu' is implemented")
        if cfg.get("use_sliding_window"):
            raise ValueError(f"use_sliding_window=True is not supported ({arch})")
        num_heads = cfg["num_attention_heads"]
        theta, scaling = _parse_rope(cfg)
        eos = cfg.get("eos_token_id")
        eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        return cls(
            architecture=arch,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=cfg.get("num_key_value_heads") or num_heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // num_heads,
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=theta,
            rope_scaling=scaling,
            qkv_bias=fam.qkv_bias(cfg),
            o_bias=fam.o_bias(cfg),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            qk_norm=fam.qk_norm,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            eos_token_ids=eos_ids,
            bos_token_id=cfg.get("bos_token_id"),
            pad_token_id=cfg.get("pad_token_id"),
            torch_dtype=cfg.get("dtype") or cfg.get("torch_dtype"),
            hf_config=dict(cfg),
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "ArchConfig":
        """Read `path/config.json`; eos ids of `generation_config.json` (e.g. Llama 3 Instruct's <|eot_id|>) join in."""
        with open(os.path.join(path, "config.json")) as f:
            config = cls.from_hf_dict(json.load(f))
        gen_path = os.path.join(path, "generation_config.json")
        if os.path.exists(gen_path):
            with open(gen_path) as f:
                eos = json.load(f).get("eos_token_id")
            for t in [] if eos is None else ([eos] if isinstance(eos, int) else eos):
                if t not in config.eos_token_ids:
                    config.eos_token_ids.append(t)
        return config

    def to_hf_dict(self, dtype: str | None = None) -> dict[str, Any]:
        """A config.json that transformers (5.x, and 4.x through the legacy rope keys) loads as this model."""
        out = dict(self.hf_config)
        fam = ARCHITECTURES[self.architecture]
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            rope.update(self.rope_scaling)
        out.update(
            architectures=[self.architecture], model_type=fam.model_type, vocab_size=self.vocab_size,
            hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim,
            max_position_embeddings=self.max_position_embeddings, rms_norm_eps=self.rms_norm_eps,
            hidden_act="silu", tie_word_embeddings=self.tie_word_embeddings, rope_parameters=rope,
            bos_token_id=self.bos_token_id, pad_token_id=self.pad_token_id,
            eos_token_id=(self.eos_token_ids[0] if len(self.eos_token_ids) == 1 else list(self.eos_token_ids))
            if self.eos_token_ids else None,
        )
        out.pop("rope_scaling", None)
        out.pop("rope_theta", None)
        if self.architecture != "Qwen2ForCausalLM":   # qwen2's q/k/v bias is fixed by the architecture
            out["attention_bias"] = self.qkv_bias
        if self.architecture == "LlamaForCausalLM":
            out["mlp_bias"] = self.mlp_bias
        if dtype is not None:
            out["dtype"] = dtype
            out.pop("torch_dtype", None)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("hf_config")
        return d


def _parse_rope(cfg: dict) -> tuple[float, dict | None]:
    """(rope_theta, scaling dict or None) from either rope layout of config.json."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
        raise ValueError("per-layer-type rope_parameters are not supported")
    scaling = dict(params) if isinstance(params, dict) else (dict(cfg["rope_scaling"]) if cfg.get("rope_scaling")
                                                             else {})
    theta = float(scaling.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
    if "type" in scaling and "rope_type" not in scaling:      # the oldest spelling
        scaling["rope_type"] = scaling.pop("type")
    rope_type = scaling.get("rope_type", "default")
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"unsupported rope_type {rope_type!r}; supported: {ROPE_TYPES}")
    if scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not supported")
    if rope_type == "default":
        return theta, None
    if rope_type == "llama3":
        scaling.setdefault("original_max_position_embeddings", cfg.get("max_position_embeddings"))
    return theta, scaling
