// Shared by the CUDA kernels (.cu), their torch glue (*_cuda.cpp) and the C++ CPU kernels: plain C/C++/CUDA, no torch
// headers, so nvcc compiles every .cu that includes it alone (torch's CUDA headers need the CUDA math libraries'
// headers, which CI machines lack: see the .cu files). The torch-side argument checks are in torch_checks.h, which
// only .cpp files include.
//   MRT_HOST_DEVICE   marks a function that the CPU kernels and the CUDA kernels both run (__host__ __device__ under
//                     nvcc, nothing elsewhere)
//   launchers         the prototypes of the .cu files' launchers (raw pointers, sizes and a stream), seen by the .cu
//                     that defines each and by the *_cuda.cpp that calls it; declared only where CUDA is compiled
//                     (nvcc, or a build with MRT_WITH_CUDA), as they need cuda_runtime.h.
#pragma once

#include <stdint.h>

#ifdef __CUDACC__
#define MRT_HOST_DEVICE __host__ __device__
#else
#define MRT_HOST_DEVICE
#endif

#if defined(__CUDACC__) || defined(MRT_WITH_CUDA)
#include <cuda_runtime.h>

// kv_cache_kernels.cu. Strides and lengths in bytes; returns the launch error (cudaSuccess if none).
cudaError_t mrt_store_kv_cuda(const void* key, const void* value, void* k_cache, void* v_cache,
                              const int64_t* slot_mapping, int64_t n_tokens, int64_t heads, int64_t row_bytes,
                              int64_t ks0, int64_t ks1, int64_t vs0, int64_t vs1, cudaStream_t stream);
cudaError_t mrt_copy_blocks_cuda(void* cache, const int64_t* src, const int64_t* dst, int64_t pairs, int64_t planes,
                                 int64_t block_bytes, int64_t num_blocks, cudaStream_t stream);

// progress_advantages_kernels.cu: the three kernels on `stream`. scratch: 2 * B doubles (x, then base). Returns the
// first launch error.
cudaError_t progress_advantages_cuda_launch(const int64_t* token_offsets, const int64_t* episode_offsets,
                                            const int64_t* episode_ends, const double* J, const double* J_prompt,
                                            const double* rewards, const int64_t* order,
                                            const int64_t* sorted_group_ids, int64_t B, int64_t T, double alpha,
                                            int mode, bool scale_by_std, double eps, double* scratch,
                                            float* advantages, float* progress, float* regret,
                                            cudaStream_t stream);
#endif
