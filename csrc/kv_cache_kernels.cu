// KV-cache ops on CUDA: plain kernels and launchers over raw pointers (no torch headers; the glue is
// kv_cache_cuda.cpp). Both ops move raw bytes, so the kernels are templated on a copy unit U (16, 8, 4, 2 or 1
// bytes), the widest that divides every base address, stride and row length involved: bf16 rows of 128 elements
// move as 16 uint4 loads/stores each.
#include <cstdint>
#include <cuda_runtime.h>

#include "common.h"  // the launchers' prototypes

namespace {

// One CTA per token. In units of U: key/value token n, head h starts at n*ks0 + h*ks1 (any strides, rows contiguous);
// the cache slot s starts at s*heads*row (contiguous cache).
template <typename U>
__global__ void store_kv_kernel(const U* __restrict__ key, const U* __restrict__ value, U* __restrict__ k_cache,
                                U* __restrict__ v_cache, const int64_t* __restrict__ slot_mapping, int64_t heads,
                                int64_t row, int64_t ks0, int64_t ks1, int64_t vs0, int64_t vs1) {
  const int64_t n = blockIdx.x;
  const int64_t slot = slot_mapping[n];
  const int64_t total = heads * row;
  U* kdst = k_cache + slot * total;
  U* vdst = v_cache + slot * total;
  for (int64_t i = threadIdx.x; i < total; i += blockDim.x) {
    const int64_t h = i / row, d = i - h * row;
    kdst[i] = key[n * ks0 + h * ks1 + d];
    vdst[i] = value[n * vs0 + h * vs1 + d];
  }
}

// Grid (pairs, planes, chunks): plane p = (layer, K/V); block dst[i] <- block src[i] in every plane, in units of U.
template <typename U>
__global__ void copy_blocks_kernel(U* __restrict__ cache, const int64_t* __restrict__ src,
                                   const int64_t* __restrict__ dst, int64_t block_units, int64_t plane_units) {
  const int64_t i = blockIdx.x, p = blockIdx.y;
  const U* from = cache + p * plane_units + src[i] * block_units;
  U* to = cache + p * plane_units + dst[i] * block_units;
  const int64_t step = (int64_t)blockDim.x * gridDim.z;
  for (int64_t j = (int64_t)blockIdx.z * blockDim.x + threadIdx.x; j < block_units; j += step) to[j] = from[j];
}

// The widest unit in {16, 8, 4, 2, 1} bytes dividing every value in `vals`.
int copy_unit(const int64_t* vals, int count) {
  for (int unit = 16; unit > 1; unit /= 2) {
    bool ok = true;
    for (int i = 0; i < count; ++i) ok = ok && (vals[i] % unit == 0);
    if (ok) return unit;
  }
  return 1;
}

template <typename U>
void launch_store(const void* key, const void* value, void* k_cache, void* v_cache, const int64_t* slot_mapping,
                  int64_t n_tokens, int64_t heads, int64_t row_bytes, int64_t ks0, int64_t ks1, int64_t vs0,
                  int64_t vs1, cudaStream_t stream) {
  const int64_t u = sizeof(U);
  const int64_t total = heads * row_bytes / u;
  const int threads = total >= 256 ? 256 : (total >= 64 ? 128 : 32);
  store_kv_kernel<U><<<(unsigned)n_tokens, threads, 0, stream>>>(
      static_cast<const U*>(key), static_cast<const U*>(value), static_cast<U*>(k_cache), static_cast<U*>(v_cache),
      slot_mapping, heads, row_bytes / u, ks0 / u, ks1 / u, vs0 / u, vs1 / u);
}

template <typename U>
void launch_copy(void* cache, const int64_t* src, const int64_t* dst, int64_t pairs, int64_t planes,
                 int64_t block_bytes, int64_t num_blocks, cudaStream_t stream) {
  const int64_t units = block_bytes / (int64_t)sizeof(U);
  const int threads = 256;
  // A block of 16 tokens x 8 heads x 128 x bf16 is 32 KiB = 2,048 uint4: split it over a few CTAs.
  int64_t chunks = (units + threads * 4 - 1) / (threads * 4);
  if (chunks < 1) chunks = 1;
  if (chunks > 64) chunks = 64;
  dim3 grid((unsigned)pairs, (unsigned)planes, (unsigned)chunks);
  copy_blocks_kernel<U><<<grid, threads, 0, stream>>>(static_cast<U*>(cache), src, dst, units, units * num_blocks);
}

}  // namespace

// The launchers (common.h): strides and lengths in bytes; each returns the launch error (cudaSuccess if none).
cudaError_t mrt_store_kv_cuda(const void* key, const void* value, void* k_cache, void* v_cache,
                              const int64_t* slot_mapping, int64_t n_tokens, int64_t heads, int64_t row_bytes,
                              int64_t ks0, int64_t ks1, int64_t vs0, int64_t vs1, cudaStream_t stream) {
  if (n_tokens == 0) return cudaSuccess;
  const int64_t vals[] = {(int64_t)(uintptr_t)key, (int64_t)(uintptr_t)value, (int64_t)(uintptr_t)k_cache,
                          (int64_t)(uintptr_t)v_cache, row_bytes, ks0, ks1, vs0, vs1};
  switch (copy_unit(vals, 9)) {
    case 16: launch_store<uint4>(key, value, k_cache, v_cache, slot_mapping, n_tokens, heads, row_bytes, ks0, ks1, vs0, vs1, stream); break;
    case 8: launch_store<uint2>(key, value, k_cache, v_cache, slot_mapping, n_tokens, heads, row_bytes, ks0, ks1, vs0, vs1, stream); break;
    case 4: launch_store<uint32_t>(key, value, k_cache, v_cache, slot_mapping, n_tokens, heads, row_bytes, ks0, ks1, vs0, vs1, stream); break;
    case 2: launch_store<uint16_t>(key, value, k_cache, v_cache, slot_mapping, n_tokens, heads, row_bytes, ks0, ks1, vs0, vs1, stream); break;
    default: launch_store<uint8_t>(key, value, k_cache, v_cache, slot_mapping, n_tokens, heads, row_bytes, ks0, ks1, vs0, vs1, stream); break;
  }
  return cudaGetLastError();
}

cudaError_t mrt_copy_blocks_cuda(void* cache, const int64_t* src, const int64_t* dst, int64_t pairs, int64_t planes,
                                 int64_t block_bytes, int64_t num_blocks, cudaStream_t stream) {
  if (pairs == 0 || block_bytes == 0) return cudaSuccess;
  const int64_t vals[] = {(int64_t)(uintptr_t)cache, block_bytes};
  switch (copy_unit(vals, 2)) {
    case 16: launch_copy<uint4>(cache, src, dst, pairs, planes, block_bytes, num_blocks, stream); break;
    case 8: launch_copy<uint2>(cache, src, dst, pairs, planes, block_bytes, num_blocks, stream); break;
    case 4: launch_copy<uint32_t>(cache, src, dst, pairs, planes, block_bytes, num_blocks, stream); break;
    case 2: launch_copy<uint16_t>(cache, src, dst, pairs, planes, block_bytes, num_blocks, stream); break;
    default: launch_copy<uint8_t>(cache, src, dst, pairs, planes, block_bytes, num_blocks, stream); break;
  }
  return cudaGetLastError();
}
