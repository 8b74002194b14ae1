// Torch glue of the CUDA KV-cache ops (kernels in kv_cache.cu; schemas and CPU kernels in kv_cache.cpp).
// Shapes, dtypes and ranges are checked by the Python launcher; the checks here guard memory safety only.
#include <torch/extension.h>
#include <torch/library.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

cudaError_t mrt_store_kv_cuda(const void* key, const void* value, void* k_cache, void* v_cache,
                              const int64_t* slot_mapping, int64_t n_tokens, int64_t heads, int64_t row_bytes,
                              int64_t ks0, int64_t ks1, int64_t vs0, int64_t vs1, cudaStream_t stream);
cudaError_t mrt_copy_blocks_cuda(void* cache, const int64_t* src, const int64_t* dst, int64_t pairs, int64_t planes,
                                 int64_t block_bytes, int64_t num_blocks, cudaStream_t stream);

namespace {

void store_kv_cuda(const at::Tensor& key, const at::Tensor& value, at::Tensor& k_cache, at::Tensor& v_cache,
                   const at::Tensor& slot_mapping) {
  TORCH_CHECK(key.dim() == 3 && value.sizes() == key.sizes(), "store_kv: key/value must be (N, Hkv, D) and alike");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "store_kv: caches must be 4-d and alike");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "store_kv: caches must be contiguous");
  TORCH_CHECK(key.scalar_type() == k_cache.scalar_type() && value.scalar_type() == k_cache.scalar_type() &&
                  v_cache.scalar_type() == k_cache.scalar_type(), "store_kv: dtypes differ");
  TORCH_CHECK(k_cache.size(2) == key.size(1) && k_cache.size(3) == key.size(2), "store_kv: cache head shape differs");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.dim() == 1 &&
                  slot_mapping.size(0) == key.size(0), "store_kv: slot_mapping must be (N,) int64");
  for (const at::Tensor* t : {&key, &value, static_cast<const at::Tensor*>(&v_cache), &slot_mapping})
    TORCH_CHECK(t->device() == k_cache.device(), "store_kv: all tensors must be on the cache's device");
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
  TORCH_CHECK(kv_cache.dim() == 6 && kv_cache.size(1) == 2, "copy_blocks: kv_cache must be (L, 2, NB, BS, H, D)");
  TORCH_CHECK(kv_cache.is_contiguous(), "copy_blocks: kv_cache must be contiguous");
  TORCH_CHECK(src.scalar_type() == at::kLong && dst.scalar_type() == at::kLong && src.dim() == 1 &&
                  dst.sizes() == src.sizes(), "copy_blocks: src/dst must be (P,) int64 of one length");
  TORCH_CHECK(src.device() == kv_cache.device() && dst.device() == kv_cache.device(),
              "copy_blocks: src/dst must be on the cache's device");
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
