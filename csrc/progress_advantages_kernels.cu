// progress_advantages: CUDA kernels and their launcher (raw pointers and a stream; no torch headers, so nvcc
// compiles this file alone). The torch glue is csrc/progress_advantages_cuda.cpp; the op is defined by
// progress_advantages_ref in mrt_kernels/progress_advantages.py. Inputs are those the Python launcher prepares:
// int64 offsets / episode ends, float64 J / J_prompt / rewards, traces sorted by group id (order, sorted ids).
// Everything is computed in double (IEEE division and sqrt even under --use_fast_math) and stored as float32.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"                // the launcher's prototype
#include "progress_advantages.h"   // passes 1 and 2, shared with the C++ CPU kernel

namespace {

using mrt::kDense;
using mrt::kSum;
using mrt::kTerminationBaseline;
constexpr int kThreads = 256;

// 1. One thread per trace b: progress, regret and x[b] (mrt::trace_pass).
__global__ void trace_kernel(const int64_t* __restrict__ ep_off, const double* __restrict__ J,
                             const double* __restrict__ J_prompt, const double* __restrict__ rewards, int64_t B,
                             double alpha, int mode, float* __restrict__ progress, float* __restrict__ regret,
                             double* __restrict__ x) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b < B) mrt::trace_pass(b, ep_off, J, J_prompt, rewards, alpha, mode, progress, regret, x);
}

// 2. One thread per sorted position i; the first position of each run of equal ids owns that group and normalises
//    it, walking it in order (mrt::normalise_group: deterministic, no atomics).
__global__ void group_kernel(const int64_t* __restrict__ order, const int64_t* __restrict__ sorted_ids,
                             const double* __restrict__ x, double* __restrict__ base, int64_t B, bool scale_by_std,
                             double eps) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B || (i > 0 && sorted_ids[i - 1] == sorted_ids[i])) return;
  int64_t end = i + 1;
  while (end < B && sorted_ids[end] == sorted_ids[i]) ++end;
  mrt::normalise_group(order, i, end, x, base, scale_by_std, eps);
}

// The first k in [lo, hi) with a[k] > value (a non-decreasing there), or hi.
__device__ __forceinline__ int64_t first_greater(const int64_t* __restrict__ a, int64_t lo, int64_t hi,
                                                 int64_t value) {
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (a[mid] <= value) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// 3. One thread per packed token t (grid-stride): its trace b by binary search in token_offsets, its episode e (the
//    first whose end is past the token; e == e1 for a tail token) by binary search in b's episode ends.
//    before = J[e-1] if e > e0 else J_prompt[b] is J_before[e] for an episode token and J_last in the tail, so
//      dense:                base[b] + alpha * ((J[e] or r[b] in the tail) - before)
//      sum:                  base[b]
//      termination_baseline: r[b] - before
__global__ void token_kernel(const int64_t* __restrict__ tok_off, const int64_t* __restrict__ ep_off,
                             const int64_t* __restrict__ ends, const double* __restrict__ J,
                             const double* __restrict__ J_prompt, const double* __restrict__ rewards,
                             const double* __restrict__ base, int64_t B, int64_t T, double alpha, int mode,
                             float* __restrict__ advantages) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < T; t += stride) {
    const int64_t b = first_greater(tok_off, 0, B + 1, t) - 1;  // tok_off[b] <= t < tok_off[b + 1]
    const int64_t e0 = ep_off[b], e1 = ep_off[b + 1];
    const int64_t e = first_greater(ends, e0, e1, t - tok_off[b]);
    const double before = e > e0 ? J[e - 1] : J_prompt[b];
    double value;
    if (mode == kTerminationBaseline) {
      value = rewards[b] - before;
    } else if (mode == kDense) {
      value = base[b] + alpha * ((e < e1 ? J[e] : rewards[b]) - before);
    } else {
      value = base[b];
    }
    advantages[t] = static_cast<float>(value);
  }
}

unsigned int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(blocks < (int64_t{1} << 20) ? blocks : (int64_t{1} << 20));
}

}  // namespace

// The launcher (common.h): the three kernels on `stream`. scratch: 2 * B doubles (x, then base). Returns the first
// launch error.
// trace_kernel and group_kernel walk every trace / group whole, so their grids cover B exactly (no grid-stride).
cudaError_t progress_advantages_cuda_launch(const int64_t* token_offsets, const int64_t* episode_offsets,
                                            const int64_t* episode_ends, const double* J, const double* J_prompt,
                                            const double* rewards, const int64_t* order,
                                            const int64_t* sorted_group_ids, int64_t B, int64_t T, double alpha,
                                            int mode, bool scale_by_std, double eps, double* scratch,
                                            float* advantages, float* progress, float* regret,
                                            cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  double* x = scratch;
  double* base = scratch + B;
  const int64_t trace_blocks = (B + kThreads - 1) / kThreads;
  trace_kernel<<<static_cast<unsigned int>(trace_blocks), kThreads, 0, stream>>>(
      episode_offsets, J, J_prompt, rewards, B, alpha, mode, progress, regret, x);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (mode != kTerminationBaseline) {
    group_kernel<<<static_cast<unsigned int>(trace_blocks), kThreads, 0, stream>>>(order, sorted_group_ids, x, base, B,
                                                                                  scale_by_std, eps);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (T > 0) {
    token_kernel<<<blocks_for(T), kThreads, 0, stream>>>(token_offsets, episode_offsets, episode_ends, J, J_prompt,
                                                         rewards, base, B, T, alpha, mode, advantages);
    err = cudaGetLastError();
  }
  return err;
}
