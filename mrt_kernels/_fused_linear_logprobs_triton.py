"""Triton backend of fused_linear_logprobs: the per-tile softmax statistics and logit gradients in Triton, the matmuls
in cuBLAS (torch.mm), chunked so that only one (chunk, vocab tile) block of logits exists at a time.

The algorithm is that of csrc/fused_linear_logprobs.cpp (read its header for the math): the forward keeps, per token,
the running max m, l = sum exp(z - m), u = sum exp(z - m)(z - m) over vocabulary tiles, and when the hidden states need a
gradient the rescaled accumulator acc = sum_v exp(z_v - m) W_v, so d logp / d h = (W_t - acc / l) / T costs no
recompute; the weight gradient recomputes each block of logits once. Here z is h W^T (unscaled; 1 / T is applied on
load, so bf16 inputs are not rounded a second time), accumulated and reduced in fp32.
Importing this module needs Triton; mrt_kernels.fused_linear_logprobs imports it only when the Triton backend runs.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


# Forward tile update, for a (BLOCK_N, vt) block of raw logits x = h W^T of tile [v0, v0 + vt):
#   z = x / T;  m' = max(m, max_v z);  c = exp(m - m');  e_v = exp(z_v - m')
#   l' = c l + sum_v e_v;  u' = c (u + (m - m') l) + sum_v e_v (z_v - m')  (u = sum exp(z - m)(z - m) <= 0);
#   z_t picked where the target falls in the tile. Entropy at the end: log l - u / l.
# e (the unnormalised probabilities) is written out for the acc matmul; c is written out to rescale acc.
@triton.jit(do_not_specialize=["n"])  # the last chunk's row count: no recompile per training step
def _fwd_tile_kernel(x_ptr, e_ptr, tgt_ptr, m_ptr, l_ptr, u_ptr, zt_ptr, scale_ptr, n, vt, v0, inv_t,
                     stride_x, stride_e, WITH_ENTROPY: tl.constexpr, WRITE_E: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    m_old = tl.load(m_ptr + rows, mask=rmask, other=0.0)
    mx = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    for c0 in range(0, vt, BLOCK_V):
        cols = c0 + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (cols < vt)[None, :]
        x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=float("-inf"))
        mx = tl.maximum(mx, tl.max(x.to(tl.float32) * inv_t, axis=1))
    m_new = tl.maximum(m_old, mx)
    scale = tl.exp(m_old - m_new)  # 0 on the first tile, where m_old = -inf
    tgt = tl.load(tgt_ptr + rows, mask=rmask, other=-1) - v0  # target column inside this tile, if any
    zt = tl.load(zt_ptr + rows, mask=rmask, other=0.0)
    se = tl.zeros((BLOCK_N,), tl.float32)
    sez = tl.zeros((BLOCK_N,), tl.float32)
    for c0 in range(0, vt, BLOCK_V):
        cols = c0 + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (cols < vt)[None, :]
        z = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32) * inv_t
        e = tl.where(mask, tl.exp(z - m_new[:, None]), 0.0)
        se += tl.sum(e, axis=1)
        if WITH_ENTROPY:
            sez += tl.sum(e * (z - m_new[:, None]), axis=1)
        hit = mask & (cols[None, :] == tgt[:, None])
        zt += tl.sum(tl.where(hit, z, 0.0), axis=1)
        if WRITE_E:
            tl.store(e_ptr + rows[:, None] * stride_e + cols[None, :], e.to(e_ptr.dtype.element_ty), mask=mask)
    l_old = tl.load(l_ptr + rows, mask=rmask, other=0.0)
    tl.store(l_ptr + rows, l_old * scale + se, mask=rmask)
    if WITH_ENTROPY:
        u_old = tl.load(u_ptr + rows, mask=rmask, other=0.0)
        dm = tl.where(l_old > 0, m_old - m_new, 0.0)  # on the first tile l_old = 0 and m_old = -inf
        u_new = (u_old + dm * l_old) * scale + sez
        tl.store(u_ptr + rows, u_new, mask=rmask)
    tl.store(m_ptr + rows, m_new, mask=rmask)
    tl.store(zt_ptr + rows, zt, mask=rmask)
    tl.store(scale_ptr + rows, scale, mask=rmask)


# Backward tile, for the same block of raw logits x = h W^T:
#   d logp_i / d x_iv = (1[v = t_i] - p_iv) / T,  p_iv = exp(x_iv / T - lse_i)
#   dz_iv = gs_i (1[v = t_i] - p_iv)  with gs = g / T (0 on ignored rows), so grad_W[tile] += dz^T h.
@triton.jit(do_not_specialize=["n"])
def _bwd_tile_kernel(x_ptr, dz_ptr, tgt_ptr, lse_ptr, gu_ptr, n, vt, v0, inv_t, stride_x, stride_dz,
                     BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    lse = tl.load(lse_ptr + rows, mask=rmask, other=0.0)
    gs = tl.load(gu_ptr + rows, mask=rmask, other=0.0)
    tgt = tl.load(tgt_ptr + rows, mask=rmask, other=-1) - v0
    for c0 in range(0, vt, BLOCK_V):
        cols = c0 + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (cols < vt)[None, :]
        z = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32) * inv_t
        p = tl.exp(z - lse[:, None])
        onehot = (cols[None, :] == tgt[:, None]).to(tl.float32)
        dz = gs[:, None] * (onehot - p)
        tl.store(dz_ptr + rows[:, None] * stride_dz + cols[None, :], dz.to(dz_ptr.dtype.element_ty), mask=mask)


_MM_OUT_DTYPE_OK: bool | None = None


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b accumulated and returned in fp32: cuBLAS's out_dtype path for 16-bit inputs where torch has it."""
    global _MM_OUT_DTYPE_OK
    if a.dtype == torch.float32:
        return torch.mm(a, b)
    if a.is_cuda and _MM_OUT_DTYPE_OK is not False:
        try:
            out = torch.mm(a, b, out_dtype=torch.float32)
            _MM_OUT_DTYPE_OK = True
            return out
        except (TypeError, RuntimeError):
            _MM_OUT_DTYPE_OK = False
    return torch.mm(a, b).float()


def _addmm_f32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b with acc fp32, in place without a temporary when the inputs are fp32 too."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    else:
        acc.add_(_mm_f32(a, b))


def _blocks(device: torch.device) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_V): a few rows of wide tiles on a GPU; few, big programs under the interpreter (slow loops).

    On sm_90 a (4, 2048) fp32 tile at 4 warps takes 168-251 registers a thread (2 blocks an SM; 8 bytes of spills
    with the entropy), benchmarks/sm90_compile.py; (4, 1024) takes 82-101, 4 blocks an SM, no spills, and still has
    each thread load 32 values (8 x 16 bytes) per loop step."""
    return (4, 1024) if device.type == "cuda" else (16, 8192)


def fwd(hidden, weight, targets, temperature: float, ignore_index: int, with_entropy: bool, with_grad_hidden: bool,
        chunk: int, tile: int):
    n_all, d = hidden.shape
    V = weight.shape[0]
    dev = hidden.device
    f32 = dict(dtype=torch.float32, device=dev)
    inv_t = 1.0 / temperature
    logp = torch.zeros(n_all, **f32)
    lse = torch.zeros(n_all, **f32)
    entropy = torch.zeros(n_all if with_entropy else 0, **f32)
    dlogp_dh = torch.zeros((n_all, d) if with_grad_hidden else (0,), **f32)
    block_n, block_v = _blocks(dev)
    for r0 in range(0, n_all, chunk):
        n = min(chunk, n_all - r0)
        h = hidden[r0:r0 + n]  # (n, d)
        tgt = targets[r0:r0 + n].contiguous()
        m = torch.full((n,), float("-inf"), **f32)
        l = torch.zeros(n, **f32)
        u = torch.zeros(n, **f32)
        zt = torch.zeros(n, **f32)
        scale = torch.empty(n, **f32)
        acc = torch.zeros(n, d, **f32) if with_grad_hidden else None
        grid = (triton.cdiv(n, block_n),)
        for v0 in range(0, V, tile):
            vt = min(tile, V - v0)
            w = weight[v0:v0 + vt]  # (vt, d)
            x = _mm_f32(h, w.t())  # (n, vt) fp32 raw logits
            # e goes back into x for fp32 inputs; for 16-bit ones into a buffer of the matmul dtype.
            e = x if weight.dtype == torch.float32 or not with_grad_hidden else torch.empty_like(x, dtype=weight.dtype)
            _fwd_tile_kernel[grid](x, e, tgt, m, l, u, zt, scale, n, vt, v0, inv_t, x.stride(0), e.stride(0),
                                   WITH_ENTROPY=with_entropy, WRITE_E=with_grad_hidden,
                                   BLOCK_N=block_n, BLOCK_V=block_v)
            if with_grad_hidden:
                acc.mul_(scale[:, None])
                _addmm_f32(acc, e, w)  # (n, vt) @ (vt, d)
        lse_c = m + l.log()
        valid = tgt != ignore_index
        lse[r0:r0 + n] = lse_c
        logp[r0:r0 + n] = torch.where(valid, zt - lse_c, 0.0)
        if with_entropy:
            entropy[r0:r0 + n] = torch.where(valid, l.log() - u / l, 0.0)
        if with_grad_hidden:
            w_t = weight.index_select(0, tgt.clamp(0, V - 1)).float()  # (n, d) W_{t_i}
            dlogp_dh[r0:r0 + n] = (w_t - acc / l[:, None]).mul_(inv_t) * valid[:, None]
    return logp, lse, entropy, dlogp_dh


def bwd_weight(grad_logp, hidden, weight, targets, lse, temperature: float, ignore_index: int, chunk: int, tile: int):
    n_all, d = hidden.shape
    V = weight.shape[0]
    inv_t = 1.0 / temperature
    grad_w = torch.empty_like(weight, memory_format=torch.contiguous_format)  # (V, d)
    gs_all = (grad_logp.float() * (targets != ignore_index)) * inv_t  # (N,) g / T, 0 on ignored rows
    targets = targets.contiguous()
    lse = lse.float().contiguous()
    block_n, block_v = _blocks(hidden.device)
    for v0 in range(0, V, tile):
        vt = min(tile, V - v0)
        w = weight[v0:v0 + vt]
        acc = torch.zeros(vt, d, dtype=torch.float32, device=hidden.device)
        for r0 in range(0, n_all, chunk):
            n = min(chunk, n_all - r0)
            h = hidden[r0:r0 + n]
            x = _mm_f32(h, w.t())  # (n, vt): the forward's block of logits, recomputed
            dz = x if weight.dtype == torch.float32 else torch.empty_like(x, dtype=weight.dtype)
            _bwd_tile_kernel[(triton.cdiv(n, block_n),)](x, dz, targets[r0:r0 + n], lse[r0:r0 + n],
                                                          gs_all[r0:r0 + n], n, vt, v0, inv_t, x.stride(0),
                                                          dz.stride(0), BLOCK_N=block_n, BLOCK_V=block_v)
            _addmm_f32(acc, dz.t(), h)  # (vt, n) @ (n, d)
        grad_w[v0:v0 + vt] = acc
    return grad_w
