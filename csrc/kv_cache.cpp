// KV-cache ops: schemas and C++ CPU kernels.
//
//   store_kv(key, value, k_cache, v_cache, slot_mapping):
//     key/value (N, Hkv, D); k_cache/v_cache (num_blocks, block_size, Hkv, D) contiguous; slot_mapping (N,) int64.
//     Token n's K/V go to slot s = slot_mapping[n], i.e. block s / block_size, offset s % block_size.
//   copy_blocks(kv_cache, src, dst):
//     kv_cache (num_layers, 2, num_blocks, block_size, Hkv, D) contiguous; src/dst (P,) int64.
//     For every layer and K/V plane, block dst[i] <- block src[i] (copy-on-write of a shared block at a fork).
//
// Both kernels move raw bytes, so one kernel serves every dtype. Shape, dtype and range checks are done by the
// Python launcher (mrt_kernels/kv_cache.py), which raises ValueError naming the argument; the TORCH_CHECKs here only
// guard the memory accesses when the op is called directly through torch.ops (the layout checks, shared with the
// CUDA glue kv_cache_cuda.cpp, are in torch_checks.h).
#include <torch/extension.h>
#include <torch/library.h>

#include <cstring>

#include "torch_checks.h"

namespace {

void store_kv_cpu(const at::Tensor& key, const at::Tensor& value, at::Tensor& k_cache, at::Tensor& v_cache,
                  const at::Tensor& slot_mapping) {
  mrt::check_store_kv(key, value, k_cache, v_cache, slot_mapping);
  const int64_t n_tokens = key.size(0), heads = key.size(1), dim = key.size(2);
  const int64_t num_slots = k_cache.size(0) * k_cache.size(1);
  const int64_t esize = key.element_size();
  const int64_t row_bytes = dim * esize;                   // one head of one token
  const int64_t slot_bytes = heads * row_bytes;            // one token's slot in the (contiguous) cache
  // A key row (one head) must be contiguous; token and head strides may be anything (e.g. a view of a fused qkv).
  at::Tensor k = key.stride(2) == 1 ? key : key.contiguous();
  at::Tensor v = value.stride(2) == 1 ? value : value.contiguous();
  at::Tensor slots = slot_mapping.contiguous();
  const int64_t* slot = slots.data_ptr<int64_t>();
  const char* kp = static_cast<const char*>(k.data_ptr());
  const char* vp = static_cast<const char*>(v.data_ptr());
  char* kc = static_cast<char*>(k_cache.data_ptr());
  char* vc = static_cast<char*>(v_cache.data_ptr());
  const int64_t ks0 = k.stride(0) * esize, ks1 = k.stride(1) * esize;
  const int64_t vs0 = v.stride(0) * esize, vs1 = v.stride(1) * esize;
  for (int64_t n = 0; n < n_tokens; ++n)
    TORCH_CHECK(slot[n] >= 0 && slot[n] < num_slots, "store_kv: slot_mapping[", n, "] = ", slot[n], " out of range");
#pragma omp parallel for if (n_tokens * slot_bytes > (1 << 16))
  for (int64_t n = 0; n < n_tokens; ++n) {
    char* kdst = kc + slot[n] * slot_bytes;
    char* vdst = vc + slot[n] * slot_bytes;
    for (int64_t h = 0; h < heads; ++h) {
      std::memcpy(kdst + h * row_bytes, kp + n * ks0 + h * ks1, row_bytes);
      std::memcpy(vdst + h * row_bytes, vp + n * vs0 + h * vs1, row_bytes);
    }
  }
}

void copy_blocks_cpu(at::Tensor& kv_cache, const at::Tensor& src, const at::Tensor& dst) {
  mrt::check_copy_blocks(kv_cache, src, dst);
  const int64_t num_blocks = kv_cache.size(2);
  const int64_t planes = kv_cache.size(0) * 2;             // (layer, K/V) pairs
  const int64_t block_bytes = kv_cache.stride(2) * kv_cache.element_size();
  const int64_t plane_bytes = num_blocks * block_bytes;
  at::Tensor s = src.contiguous(), d = dst.contiguous();
  const int64_t* sp = s.data_ptr<int64_t>();
  const int64_t* dp = d.data_ptr<int64_t>();
  const int64_t pairs = s.size(0);
  for (int64_t i = 0; i < pairs; ++i)
    TORCH_CHECK(sp[i] >= 0 && sp[i] < num_blocks && dp[i] >= 0 && dp[i] < num_blocks,
                "copy_blocks: src/dst[", i, "] out of range");
  char* base = static_cast<char*>(kv_cache.data_ptr());
  // dst blocks are distinct and never a src (checked by the launcher), so the copies are independent.
#pragma omp parallel for collapse(2) if (pairs * planes * block_bytes > (1 << 16))
  for (int64_t i = 0; i < pairs; ++i)
    for (int64_t p = 0; p < planes; ++p)
      std::memcpy(base + p * plane_bytes + dp[i] * block_bytes, base + p * plane_bytes + sp[i] * block_bytes,
                  block_bytes);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mrt_kernels, m) {
  m.def("store_kv(Tensor key, Tensor value, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping) -> ()");
  m.def("copy_blocks(Tensor(a!) kv_cache, Tensor src, Tensor dst) -> ()");
}

TORCH_LIBRARY_IMPL(mrt_kernels, CPU, m) {
  m.impl("store_kv", &store_kv_cpu);
  m.impl("copy_blocks", &copy_blocks_cpu);
}
