"""LoRA (Hu et al., 2021): low-rank adapters on the model's linear layers instead of full fine-tuning.

A target linear y = x W0^T + b (W0 (out, in)) becomes

    y = x W0^T + b + s * dropout(x) A^T B^T,      A (r, in), B (out, r), s = alpha / r,

with W0 and b frozen and only A and B trained: Adam keeps its two moments for r * (in + out) numbers a layer instead
of in * out (`adam_state_bytes`). A starts ~ U(-1/sqrt(in), 1/sqrt(in)) (peft's default, kaiming-uniform with
a = sqrt(5)) and B at 0, so the adapted model starts as the base model, bit for bit (the adapter adds an exact 0).
The math, the parameter names (`<module>.lora_A.weight`, `<module>.lora_B.weight`) and the saved files
(mrt.models.lora_files) are peft's, so an adapter trained here loads with `PeftModel.from_pretrained` on the
transformers model, and one made by peft loads here.

Training runs the adapter path (`LoraLinear.forward`; the model's layers call a subclass of nn.Linear through its
forward, mrt.models.layers.linear). Generation, `model.lora.generation`:
- merged (the default): the engine runs a generation copy whose target weights hold W = W0 + s B A, every other tensor
  shared with the training model (no copy). After each update `merge_into` (called by
  mrt.models.lora_model.LoraModel.sync) rewrites them with one (out, r) x (r, in) product a layer into the same
  storage (`torch.addmm(..., out=W)`): a decode step's CUDA graph keeps the weights' addresses. Costs one copy of
  the target weights' memory.
- adapters: the engine runs the training model itself, adapters applied in each target linear (two thin products and
  a sum a linear a step; no extra memory). benchmarks/lora_merge_vs_adapters.py measures both.
"""
from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

ALL_LINEAR = "all-linear"      # peft's name for every linear layer but the output layer (lm_head)


def check_available(settings) -> bool:
    """Whether LoRA is asked for (model.lora.r > 0); ConfigError (one line) if it is and peft is not installed."""
    if settings is None or settings.r == 0:
        return False
    if importlib.util.find_spec("peft") is None:
        raise ConfigError("model.lora.r: LoRA needs peft for its adapter files (pip install peft, or the 'lora' "
                          "extra); or set model.lora.r to 0")
    return True


class LoraLinear(nn.Linear):
    """An nn.Linear with a low-rank adapter; its weight and bias are the wrapped linear's own Parameters (no copy),
    so the state dict keeps the base names and adds `lora_A.weight` (r, in) and `lora_B.weight` (out, r)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias
        kw = dict(bias=False, device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, r, **kw)
        self.lora_B = nn.Linear(r, base.out_features, **kw)
        self.r, self.scaling, self.dropout = r, alpha / r, dropout

    @torch.no_grad()
    def reset_adapter(self, generator: torch.Generator | None = None) -> None:
        """peft's init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (drawn in float32 on the CPU, so a seed gives the same
        adapter on every device and dtype), B = 0."""
        bound = 1.0 / math.sqrt(self.in_features)
        a = (torch.rand(self.lora_A.weight.shape, generator=generator) * 2 - 1) * bound
        self.lora_A.weight.copy_(a)
        self.lora_B.weight.zero_()

    def delta_weight(self) -> torch.Tensor:
        """s * B A (out, in): what merging adds to W0."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)                              # (N, out)
        h = F.dropout(x, self.dropout) if self.dropout and torch.is_grad_enabled() else x
        lora = F.linear(F.linear(h, self.lora_A.weight), self.lora_B.weight)  # (N, r) -> (N, out)
        return y + lora * self.scaling if torch.is_grad_enabled() else y.add_(lora.mul_(self.scaling))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, scaling={self.scaling:g}, dropout={self.dropout:g}"


def _is_target(name: str, module: nn.Module, targets: list[str]) -> bool:
    """peft's matching of a list: the module's full name or its last dotted parts equal a target; `all-linear`: every
    nn.Linear but lm_head."""
    if not isinstance(module, nn.Linear) or isinstance(module, LoraLinear):
        return False
    if targets == [ALL_LINEAR]:
        return name != "lm_head"
    return any(name == t or name.endswith("." + t) for t in targets)


def find_targets(model: nn.Module, target_modules: list[str]) -> list[tuple[str, nn.Linear]]:
    """The (name, linear) pairs that target_modules select; ConfigError when none, naming the linear layers."""
    found = [(n, m) for n, m in model.named_modules() if _is_target(n, m, list(target_modules))]
    if not found:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(f"model.lora.target_modules: {list(target_modules)} match no linear layer of the model "
                          f"(its linear layers: {', '.join(leaves)}; or all-linear)")
    return found


def lora_linears(model: nn.Module) -> dict[str, LoraLinear]:
    """{module name: LoraLinear} of an adapted model, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def add_adapters(model: nn.Module, r: int, alpha: float, target_modules: list[str], dropout: float = 0.0, *,
                 seed: int | None = None) -> dict[str, LoraLinear]:
    """Replace the target linears of model by LoraLinear (A seeded by `seed`, B = 0), freeze every other parameter;
    returns {name: LoraLinear}. ConfigError when no module matches, naming the linear layers there are."""
    found = find_targets(model, target_modules)
    model.requires_grad_(False)
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    out = {}
    for name, base in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        lin = LoraLinear(base, r, alpha, dropout)
        lin.weight.requires_grad_(False)
        if lin.bias is not None:
            lin.bias.requires_grad_(False)
        lin.reset_adapter(g)
        setattr(parent, child, lin)
        out[name] = lin
    return out


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def adam_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of Adam's moments (exp_avg, exp_avg_sq) the optimizer holds (after its first step)."""
    return sum(t.numel() * t.element_size() for st in optimizer.state.values()
               for k, t in st.items() if k in ("exp_avg", "exp_avg_sq"))


def merged_copy(model: nn.Module) -> tuple[nn.Module, list[tuple[LoraLinear, torch.Tensor]]]:
    """A plain CausalLM for generation: each adapted linear's weight a tensor of its own (filled by `merge_into`),
    every other tensor the training model's own (shared storage, no copy). Returns (copy, [(LoraLinear, its weight
    in the copy)])."""
    from .causal_lm import CausalLM
    with torch.device("meta"):
        gen = CausalLM(model.config)
    own = model.state_dict()
    adapted = lora_linears(model)
    merged_names = {f"{n}.weight" for n in adapted}
    state = {k: (torch.empty_like(own[k]) if k in merged_names else own[k]) for k in gen.state_dict()}
    gen.load_state_dict(state, strict=True, assign=True)
    gen.requires_grad_(False).eval()
    pairs = [(lin, gen.get_submodule(n).weight) for n, lin in adapted.items()]
    merge_into(pairs)
    return gen, pairs


@torch.no_grad()
def merge_into(pairs: list[tuple[LoraLinear, torch.Tensor]]) -> None:
    """W = W0 + s B A for each (adapted linear, target weight), written into the target's storage (out=)."""
    for lin, w in pairs:
        torch.addmm(lin.weight, lin.lora_B.weight, lin.lora_A.weight, alpha=lin.scaling, out=w)
