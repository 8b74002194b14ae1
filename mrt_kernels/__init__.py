"""mrt_kernels: the custom ops of mrt, each with a plain-PyTorch reference and faster backends.

`import mrt_kernels` works on any machine: without a GPU, Triton or the compiled extension the references run.
Ops (one file each):
  fused_linear_logprobs  lm-head matmul + log-softmax + gather, forward and backward, logits never stored
  progress_advantages    episode-level meta-prover success -> token advantages over a packed batch
  store_kv, copy_blocks  paged KV-cache writes and block copies (copy-on-write forks)
  paged_attention        attention of new tokens over a paged KV cache (prefill with a cached prefix, and decode)
"""
from ._backend import BACKENDS, BackendError, available_backends, extension_build, extension_error
from .fused_linear_logprobs import fused_linear_logprobs, fused_linear_logprobs_ref
from .kv_cache import copy_blocks, copy_blocks_ref, store_kv, store_kv_ref
from .paged_attention import paged_attention, paged_attention_ref
from .progress_advantages import ProgressAdvantages, progress_advantages, progress_advantages_ref
from . import _fake_kernels  # noqa: F401  (after the ops: registers their fake kernels for torch.compile)

__all__ = [
    "BACKENDS", "BackendError", "available_backends", "extension_build", "extension_error",
    "fused_linear_logprobs", "fused_linear_logprobs_ref",
    "progress_advantages", "progress_advantages_ref", "ProgressAdvantages",
    "store_kv", "store_kv_ref", "copy_blocks", "copy_blocks_ref",
    "paged_attention", "paged_attention_ref",
]
