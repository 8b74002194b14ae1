"""The two small blocks of a Llama-family layer besides attention: RMSNorm and the SwiGLU MLP.

RMSNorm: y = w * x / sqrt(mean(x^2) + eps), the statistic taken in float32 and the normalised x cast back to the
input dtype before the weight multiplies it (transformers' order, so bf16 results agree with its models).
MLP: down(silu(gate(x)) * up(x)); without autograd (generation, scoring under no_grad) in place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # torch's own kernel: the same fp32 arithmetic in one op instead of seven
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


def linear(x: torch.Tensor, module: nn.Linear) -> torch.Tensor:
    """module(x): F.linear on a plain nn.Linear's parameters, without a module call (a decode step is small enough
    on a CPU for that overhead to show); a subclass (an adapted linear, mrt.models.lora.LoraLinear) runs its forward."""
    if type(module) is nn.Linear:
        return F.linear(x, module.weight, module.bias)
    return module(x)


class MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = linear(x, self.gate_proj)
        up = linear(x, self.up_proj)
        # Without autograd the same values in place: two fewer (N, intermediate) temporaries, megabytes in a prefill
        act = F.silu(gate) * up if torch.is_grad_enabled() else F.silu(gate, inplace=True).mul_(up)
        return linear(act, self.down_proj)
