// Torch glue of the CUDA KV-cache ops (kernels in kv_cache_kernels.cu; schemas and CPU kernels in kv_cache.cpp).
// Shapes, dtypes and ranges are checked by the Python launcher; the checks here (torch_checks.h, shared with the CPU
// kernels) guard memory safety only. The launchers' prototypes are in common.h.
#include <torch/extension.h>
#include <torch/library.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include "common.h"
#include "torch_checks.h"

namespace {

void store_kv_cuda(const at::Tensor& key, const at::Tensor& value, at::Tensor& k_cache, at::Tensor& v_cache,
                   const at::Tensor& slot_mapping) {
  mrt::check_store_kv(key, value, k_cache, v_cache, slot_mapping);
  const c10::cuda::CUDAGuard guard(k_cache.device());
  at::Tensor k = key.stride(2) == 1 ? key : key.contiguous();
  at::Tensor v = value.stride(2) == 1 ? value : value.contiguous();
  at::Tensor slots = slot_mapping.contiguous();
  const int64_t es = key.element_size();
  cudaError_t err = mrt_store_kv_cuda(k.data_ptr(), v.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
                                      slots.data_ptr<int64_t>(), k.size(0), k.size(1), k.size(2) * es,
                                      k.stride(0) * es, k.stride(1) * es, v.stride(0) * es, v.stride(1) * es,
                                      c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "store_kv: CUDA launch failed: ", cudaGetErrorString(err));
}

void copy_blocks_cuda(at::Tensor& kv_cache, const at::Tensor& src, const at::Tensor& dst) {
  mrt::check_copy_blocks(kv_cache, src, dst);
  const c10::cuda::CUDAGuard guard(kv_cache.device());
  at::Tensor s = src.contiguous(), d = dst.contiguous();
  cudaError_t err = mrt_copy_blocks_cuda(kv_cache.data_ptr(), s.data_ptr<int64_t>(), d.data_ptr<int64_t>(), s.size(0),
                                         kv_cache.size(0) * 2, kv_cache.stride(2) * kv_cache.element_size(),
                                         kv_cache.size(2), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "copy_blocks: CUDA launch failed: ", cudaGetErrorString(err));
}

}  // namespace

TORCH_LIBRARY_IMPL(mrt_kernels, CUDA, m) {
  m.impl("store_kv", &store_kv_cuda);
  m.impl("copy_blocks", &copy_blocks_cuda);
}
