// progress_advantages: the arithmetic that the C++ CPU kernel (progress_advantages.cpp) and the CUDA kernels
// (progress_advantages_kernels.cu) share, so both compute the same doubles in the same order. Plain C++ (no torch, no
// CUDA runtime; MRT_HOST_DEVICE from common.h), so nvcc compiles the .cu alone. The op is defined by
// progress_advantages_ref in mrt_kernels/progress_advantages.py.
#pragma once

#include <math.h>

#include "common.h"

namespace mrt {

// The mode codes of mrt_kernels.progress_advantages.MODES.
constexpr int kDense = 0, kSum = 1, kTerminationBaseline = 2;

// Pass 1, over trace b: progress[e] = J[e] - J_before[e] (J_before = J[e-1] within the trace, J_prompt[b] before
// its first episode), regret[b] = sum (1 - J[e]), and x[b] = r[b] (dense) or r[b] + alpha * sum(progress) (sum),
// the value pass 2 normalises. Returns J_last of b (J of its last episode, J_prompt[b] without episodes).
MRT_HOST_DEVICE inline double trace_pass(int64_t b, const int64_t* ep_off, const double* J, const double* J_prompt,
                                         const double* rewards, double alpha, int64_t mode, float* progress,
                                         float* regret, double* x) {
  double before = J_prompt[b], sum_progress = 0.0, sum_regret = 0.0;
  for (int64_t e = ep_off[b]; e < ep_off[b + 1]; ++e) {
    const double p = J[e] - before;
    progress[e] = static_cast<float>(p);
    sum_progress += p;
    sum_regret += 1.0 - J[e];
    before = J[e];
  }
  regret[b] = static_cast<float>(sum_regret);
  x[b] = mode == kSum ? rewards[b] + alpha * sum_progress : rewards[b];
  return before;
}

// Pass 2, over one group: the run [begin, end) of sorted positions, members visited in sorted (= original, the
// sort is stable) order, in the reference's arithmetic:
//   mean = sum x / n;  dev = x - mean;  std = sqrt(sum dev^2 / (n - 1));  base = dev / (std + eps)  (or dev);
//   a group of one gets 0. sqrt and / of doubles are IEEE even under --use_fast_math.
MRT_HOST_DEVICE inline void normalise_group(const int64_t* order, int64_t begin, int64_t end, const double* x,
                                            double* base, bool scale_by_std, double eps) {
  const int64_t n = end - begin;
  if (n == 1) {
    base[order[begin]] = 0.0;
    return;
  }
  double sum = 0.0;
  for (int64_t k = begin; k < end; ++k) sum += x[order[k]];
  const double mean = sum / static_cast<double>(n);
  double m2 = 0.0;
  for (int64_t k = begin; k < end; ++k) {
    const double d = x[order[k]] - mean;
    m2 += d * d;
  }
  const double denom = scale_by_std ? sqrt(m2 / static_cast<double>(n - 1)) + eps : 1.0;
  for (int64_t k = begin; k < end; ++k) base[order[k]] = (x[order[k]] - mean) / denom;
}

}  // namespace mrt
