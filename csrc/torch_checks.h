// Argument checks of the ops' torch glue, shared by the C++ CPU kernels (*.cpp) and the CUDA glue (*_cuda.cpp).
// Torch-dependent, so .cpp files only: a .cu never includes it (what the .cu files share is in common.h).
// These TORCH_CHECKs guard memory accesses when an op is called directly through torch.ops; the Python launchers
// (mrt_kernels/*.py) check shapes, dtypes and values first and raise ValueError naming the argument.
#pragma once

#include <torch/extension.h>

#include "progress_advantages.h"  // the mode codes

namespace mrt {

// t: 1-D, numel elements of dtype, contiguous. op names the op in the message.
inline void check_1d(const at::Tensor& t, const char* op, const char* name, at::ScalarType dtype, int64_t numel) {
  TORCH_CHECK(t.dim() == 1 && t.numel() == numel, op, ": ", name, " must be 1-D with ", numel,
              " elements, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

// Every tensor of `tensors` is on `device`.
inline void check_same_device(std::initializer_list<const at::Tensor*> tensors, const at::Device& device,
                              const char* message) {
  for (const at::Tensor* t : tensors) TORCH_CHECK(t->device() == device, message);
}

// store_kv(key, value, k_cache, v_cache, slot_mapping): key/value (N, Hkv, D) alike; caches (num_blocks, block_size,
// Hkv, D) alike, contiguous, of key's dtype; slot_mapping (N,) int64; all on the cache's device.
inline void check_store_kv(const at::Tensor& key, const at::Tensor& value, const at::Tensor& k_cache,
                           const at::Tensor& v_cache, const at::Tensor& slot_mapping) {
  TORCH_CHECK(key.dim() == 3 && value.sizes() == key.sizes(), "store_kv: key/value must be (N, Hkv, D) and alike");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "store_kv: caches must be 4-d and alike");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "store_kv: caches must be contiguous");
  TORCH_CHECK(key.scalar_type() == k_cache.scalar_type() && value.scalar_type() == k_cache.scalar_type() &&
                  v_cache.scalar_type() == k_cache.scalar_type(), "store_kv: dtypes differ");
  TORCH_CHECK(k_cache.size(2) == key.size(1) && k_cache.size(3) == key.size(2),
              "store_kv: cache head shape differs from key");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.dim() == 1 &&
                  slot_mapping.size(0) == key.size(0), "store_kv: slot_mapping must be (N,) int64");
  check_same_device({&key, &value, &v_cache, &slot_mapping}, k_cache.device(),
                    "store_kv: all tensors must be on the cache's device");
}

// copy_blocks(kv_cache, src, dst): kv_cache (num_layers, 2, num_blocks, block_size, Hkv, D) contiguous; src/dst (P,)
// int64 of one length, on the cache's device.
inline void check_copy_blocks(const at::Tensor& kv_cache, const at::Tensor& src, const at::Tensor& dst) {
  TORCH_CHECK(kv_cache.dim() == 6 && kv_cache.size(1) == 2, "copy_blocks: kv_cache must be (L, 2, NB, BS, H, D)");
  TORCH_CHECK(kv_cache.is_contiguous(), "copy_blocks: kv_cache must be contiguous");
  TORCH_CHECK(src.scalar_type() == at::kLong && dst.scalar_type() == at::kLong && src.dim() == 1 &&
                  dst.sizes() == src.sizes(), "copy_blocks: src/dst must be (P,) int64 of one length");
  check_same_device({&src, &dst}, kv_cache.device(), "copy_blocks: src/dst must be on the cache's device");
}

// progress_advantages(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, order, sorted_group_ids,
// num_tokens, alpha, mode, ...): the inputs mrt_kernels/progress_advantages.py:_prepare makes (1-D, contiguous, int64
// offsets / ends / ids, float64 J / J_prompt / rewards, B = len(rewards) traces, E = len(episode_ends) episodes), all
// on rewards' device, and a mode code of progress_advantages.h.
inline void check_progress_advantages(const at::Tensor& token_offsets, const at::Tensor& episode_offsets,
                                      const at::Tensor& episode_ends, const at::Tensor& J, const at::Tensor& J_prompt,
                                      const at::Tensor& rewards, const at::Tensor& order,
                                      const at::Tensor& sorted_group_ids, int64_t mode) {
  struct Input {
    const char* name;
    const at::Tensor& t;
    at::ScalarType dtype;
    int64_t numel;
  };
  const int64_t B = rewards.numel(), E = episode_ends.numel();
  const Input inputs[] = {
      {"token_offsets", token_offsets, at::kLong, B + 1}, {"episode_offsets", episode_offsets, at::kLong, B + 1},
      {"episode_ends", episode_ends, at::kLong, E},       {"J", J, at::kDouble, E},
      {"J_prompt", J_prompt, at::kDouble, B},             {"rewards", rewards, at::kDouble, B},
      {"order", order, at::kLong, B},                     {"sorted_group_ids", sorted_group_ids, at::kLong, B},
  };
  for (const Input& in : inputs) {
    TORCH_CHECK(in.t.device() == rewards.device(), "progress_advantages: ", in.name, " is on ", in.t.device(),
                ", rewards on ", rewards.device());
    check_1d(in.t, "progress_advantages", in.name, in.dtype, in.numel);
  }
  TORCH_CHECK(mode >= kDense && mode <= kTerminationBaseline, "progress_advantages: unknown mode ", mode);
}

}  // namespace mrt
