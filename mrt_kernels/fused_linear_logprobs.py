"""Per-token log-probs (and entropy) of target tokens straight from hidden states and the lm-head weight.

    logp_i = log_softmax(h_i W^T / T)[t_i]        (0 where t_i == ignore_index)
    entropy_i = -sum_v p_iv log p_iv,  p_i = softmax(h_i W^T / T)   (0 where ignored; not differentiated)

Choices: the (N, V) logits are never held. Tokens go in chunks and the vocabulary in tiles; each tile updates an
online log-sum-exp (running max, rescaled sum) per token. Everything is accumulated in fp32 whatever the input dtype.
Backward: grad_h needs d logp_i / d h_i = (W_{t_i} - sum_v p_iv W_v) / T, an (N, d) tensor that the forward computes
alongside the log-sum-exp (one extra matmul per tile) when hidden requires grad, so the backward only scales it by the
upstream gradient. grad_W = dZ^T h / T with dZ_iv = g_i (1[v = t_i] - p_iv) needs the logits again: the backward
recomputes them tile by tile (same partition as the forward) from the saved (N,) log-sum-exp. That is 2 matmuls
forward and 2 backward for both gradients (a plain recompute design does 1 + 3), and 2 in all with a frozen lm-head.

Backends: "cpp" (csrc/fused_linear_logprobs.cpp, torch.ops.mrt_kernels.fused_linear_logprobs_fwd / _bwd_weight),
"triton" (_fused_linear_logprobs_triton.py, registered as torch.ops.mrt_kernels.fused_linear_logprobs_triton_*),
"reference" (fused_linear_logprobs_ref below, which defines the op and holds the whole logits).
"""
from __future__ import annotations

import os
import warnings

import torch
from torch.autograd.function import once_differentiable

from ._backend import select_backend

__all__ = ["fused_linear_logprobs", "fused_linear_logprobs_ref"]

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Tokens per chunk and vocabulary rows per tile. On the CPU the (chunk, tile) block of fp32 logits (16 MiB) stays
# small next to W while each matmul (1024 x d x 4096) is still big enough to run near peak.
CHUNK_SIZE = {"cpu": 1024, "cuda": 4096}
VOCAB_TILE = {"cpu": 4096, "cuda": 16384}


def fused_linear_logprobs_ref(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                              temperature: float = 1.0, ignore_index: int = -100, return_entropy: bool = False):
    """The definition, in plain PyTorch (holds the (N, V) logits). Computes in fp32, or in float64 for float64
    inputs (the tests' reference), and returns logp (N,) [, entropy (N,)] in that dtype."""
    acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logits = (hidden.to(acc) @ weight.to(acc).T) / temperature  # (N, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    valid = targets != ignore_index
    safe = torch.where(valid, targets, 0)
    logp = torch.where(valid, logprobs.gather(1, safe[:, None]).squeeze(1), 0.0)
    if not return_entropy:
        return logp
    with torch.no_grad():
        lp = logprobs.detach()
        entropy = torch.where(valid, -(lp.exp() * lp).sum(-1), 0.0)
    return logp, entropy


# ---- the Triton kernels as dispatcher ops (their fake kernels: _fake_kernels.py) ----------------------------------

@torch.library.custom_op("mrt_kernels::fused_linear_logprobs_triton_fwd", mutates_args=())
def _triton_fwd(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float,
                ignore_index: int, with_entropy: bool, with_grad_hidden: bool, chunk_size: int,
                vocab_tile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from . import _fused_linear_logprobs_triton as tri  # needs Triton: imported only when this backend runs
    return tri.fwd(hidden, weight, targets, temperature, ignore_index, with_entropy, with_grad_hidden, chunk_size,
                   vocab_tile)


@torch.library.custom_op("mrt_kernels::fused_linear_logprobs_triton_bwd_weight", mutates_args=())
def _triton_bwd_weight(grad_logp: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                       lse: torch.Tensor, temperature: float, ignore_index: int, chunk_size: int,
                       vocab_tile: int) -> torch.Tensor:
    from . import _fused_linear_logprobs_triton as tri
    return tri.bwd_weight(grad_logp, hidden, weight, targets, lse, temperature, ignore_index, chunk_size, vocab_tile)


def _ops(backend: str):
    if backend == "cpp":
        return torch.ops.mrt_kernels.fused_linear_logprobs_fwd, torch.ops.mrt_kernels.fused_linear_logprobs_bwd_weight
    return torch.ops.mrt_kernels.fused_linear_logprobs_triton_fwd, \
        torch.ops.mrt_kernels.fused_linear_logprobs_triton_bwd_weight


# ---- launcher: argument checks -----------------------------------------------------------------------------------

def _check_inputs(hidden, weight, targets, temperature, ignore_index, chunk_size):
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2:
        raise ValueError(f"hidden must be a (N, d) tensor, got {getattr(hidden, 'shape', type(hidden))}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"weight must be a (V, d) tensor, got {getattr(weight, 'shape', type(weight))}")
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1:
        raise ValueError(f"targets must be a (N,) tensor, got {getattr(targets, 'shape', type(targets))}")
    if hidden.dtype not in DTYPES:
        raise ValueError(f"hidden must be float32, bfloat16 or float16, got {hidden.dtype}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight dtype {weight.dtype} differs from hidden dtype {hidden.dtype}")
    if targets.dtype != torch.int64:
        raise ValueError(f"targets must be int64, got {targets.dtype}")
    if weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"weight is {tuple(weight.shape)} but hidden is {tuple(hidden.shape)}: d must match")
    if targets.shape[0] != hidden.shape[0]:
        raise ValueError(f"targets has {targets.shape[0]} entries but hidden has {hidden.shape[0]} rows")
    if weight.device != hidden.device or targets.device != hidden.device:
        raise ValueError(f"hidden, weight and targets must be on one device, got {hidden.device}, {weight.device}, "
                         f"{targets.device}")
    if weight.shape[0] == 0:
        raise ValueError("weight has no rows (V = 0)")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if targets.numel():
        bad = (targets != ignore_index) & ((targets < 0) | (targets >= weight.shape[0]))
        if bool(bad.any()):  # one sync; the kernels index W with these
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"targets[{i}] = {int(targets[i])} is outside [0, {weight.shape[0]}) and is not "
                             f"ignore_index ({ignore_index})")


# ---- autograd ----------------------------------------------------------------------------------------------------

class _FusedLinearLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, ignore_index, return_entropy, chunk_size, vocab_tile,
                backend):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        fwd, _ = _ops(backend)
        logp, lse, entropy, dlogp_dh = fwd(hidden, weight, targets, float(temperature), int(ignore_index),
                                           bool(return_entropy), bool(need_h), int(chunk_size), int(vocab_tile))
        # Saved: (N,) and (N, d) tensors, plus the inputs when grad_W must recompute the logits.
        ctx.save_for_backward(hidden if need_w else None, weight if need_w else None, targets,
                              lse if need_w else None, dlogp_dh if need_h else None)
        ctx.args = (float(temperature), int(ignore_index), int(chunk_size), int(vocab_tile), backend, hidden.dtype)
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, targets, lse, dlogp_dh = ctx.saved_tensors
        temperature, ignore_index, chunk_size, vocab_tile, backend, h_dtype = ctx.args
        grad_h = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_h = (grad_logp.float()[:, None] * dlogp_dh).to(h_dtype)  # (N, d); dlogp_dh is 0 on ignored rows
        if ctx.needs_input_grad[1]:
            _, bwd = _ops(backend)
            grad_w = bwd(grad_logp.contiguous(), hidden, weight, targets, lse, temperature, ignore_index,
                         chunk_size, vocab_tile)
        return grad_h, grad_w, None, None, None, None, None, None, None


# ---- the reference as a fallback on a GPU -------------------------------------------------------------------------

_WARNED_FALLBACK: set[str] = set()


def _warn_reference_fallback(device: torch.device, n: int, v: int) -> bool:
    """Warn once per device type that an automatic choice fell back to the reference on a GPU: it holds the (N, V)
    fp32 logits and their log-softmax (2 x N x V x 4 bytes; 32k tokens x 151,936 = 39 GB), an out-of-memory error far
    from its cause. Returns whether it warned (tests)."""
    if device.type == "cpu" or device.type in _WARNED_FALLBACK:
        return False
    _WARNED_FALLBACK.add(device.type)
    gib = 2 * n * v * 4 / 2 ** 30
    warnings.warn(
        f"fused_linear_logprobs: no Triton or CUDA kernel can run on {device.type} here, so the op falls back to the "
        f"plain-PyTorch reference, which MATERIALISES the ({n}, {v}) logits: {gib:.1f} GiB for this call alone, and "
        "long traces over a large vocabulary run out of memory. Fix: install the Triton that matches your torch "
        "(`pip install triton`), or build the CUDA extension (`TORCH_SPEC=torch bash scripts/bootstrap.sh` with nvcc "
        "on the PATH); `python -c \"import mrt_kernels; print(mrt_kernels.extension_error())\"` says why it is "
        "missing. Set MRT_KERNELS_BACKEND=reference to choose the reference on purpose and silence this warning.",
        RuntimeWarning, stacklevel=3)
    return True


# ---- public function ---------------------------------------------------------------------------------------------

def fused_linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                          temperature: float = 1.0, ignore_index: int = -100, return_entropy: bool = False,
                          chunk_size: int | None = None, backend: str | None = None):
    """log_softmax(hidden @ weight.T / temperature)[i, targets[i]] as (N,) fp32, 0 where targets[i] == ignore_index,
    without holding the (N, V) logits; differentiable in hidden and weight. With return_entropy=True also the (N,)
    fp32 entropy of each softmax (0 where ignored, not differentiated).

    hidden (N, d) and weight (V, d): float32 / bfloat16 / float16, same dtype and device; targets (N,) int64.
    chunk_size: tokens per chunk (default by device). backend: "cpp", "triton" or "reference" (default: the fastest
    here; MRT_KERNELS_BACKEND also forces one). Bad input raises ValueError naming the argument.
    """
    _check_inputs(hidden, weight, targets, temperature, ignore_index, chunk_size)
    name = "fused_linear_logprobs"
    chosen = select_backend(name, hidden.device, backend, cpp_op="fused_linear_logprobs_fwd", triton_ok=True)
    if chosen == "reference":
        if backend is None and not os.environ.get("MRT_KERNELS_BACKEND"):
            _warn_reference_fallback(hidden.device, hidden.shape[0], weight.shape[0])
        out = fused_linear_logprobs_ref(hidden, weight, targets, temperature=temperature, ignore_index=ignore_index,
                                        return_entropy=return_entropy)
        return out
    kind = "cuda" if hidden.device.type == "cuda" else "cpu"
    chunk = chunk_size or CHUNK_SIZE[kind]
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        logp, entropy = _FusedLinearLogprobs.apply(hidden, weight, targets, temperature, ignore_index,
                                                   return_entropy, chunk, VOCAB_TILE[kind], chosen)
    else:  # no autograd: skip the d logp / d hidden matmul (ctx.needs_input_grad ignores no_grad mode)
        logp, _, entropy, _ = _ops(chosen)[0](hidden, weight, targets, float(temperature), int(ignore_index),
                                              bool(return_entropy), False, int(chunk), int(VOCAB_TILE[kind]))
    return (logp, entropy) if return_entropy else logp
