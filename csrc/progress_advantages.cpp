// progress_advantages: schema and C++ CPU kernel (OpenMP). The op is defined by progress_advantages_ref in
// mrt_kernels/progress_advantages.py; the Python launcher validates values and prepares these inputs:
//   token_offsets (B+1,) int64, episode_offsets (B+1,) int64, episode_ends (E,) int64,
//   J (E,) / J_prompt (B,) / rewards (B,) float64,
//   order (B,) int64 = traces sorted by group id (stable), sorted_group_ids (B,) int64 = group_ids[order],
//   num_tokens = token_offsets[B], alpha, mode (0 dense, 1 sum, 2 termination_baseline), scale_by_std, eps.
// Returns float32 (advantages (T,), progress (E,), regret (B,)); everything is computed in double. Passes 1 and 2
// are those of the CUDA kernels (progress_advantages.h); pass 3 fills each episode's token range at once.
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "progress_advantages.h"
#include "torch_checks.h"

namespace {

using mrt::kDense;
using mrt::kSum;
using mrt::kTerminationBaseline;

// Fork threads only for work that outlasts a fork-join: ~1M float writes (phase 3) or ~1M episodes (phase 1) take
// about a millisecond on one core, and on a busy machine a parallel region can wait far longer for a descheduled thread.
constexpr int64_t kParallelTokens = int64_t{1} << 20, kParallelEpisodes = int64_t{1} << 20;

std::tuple<at::Tensor, at::Tensor, at::Tensor> progress_advantages_cpu(
    const at::Tensor& token_offsets, const at::Tensor& episode_offsets, const at::Tensor& episode_ends,
    const at::Tensor& J, const at::Tensor& J_prompt, const at::Tensor& rewards, const at::Tensor& order,
    const at::Tensor& sorted_group_ids, int64_t num_tokens, double alpha, int64_t mode, bool scale_by_std,
    double eps) {
  const int64_t B = rewards.numel(), E = episode_ends.numel(), T = num_tokens;
  mrt::check_progress_advantages(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, order,
                                 sorted_group_ids, mode);
  TORCH_CHECK(token_offsets[B].item<int64_t>() == T, "progress_advantages: num_tokens must equal token_offsets[-1]");

  const auto f32 = rewards.options().dtype(at::kFloat);
  at::Tensor advantages = at::empty({T}, f32), progress = at::empty({E}, f32), regret = at::empty({B}, f32);
  const int64_t* tok = token_offsets.data_ptr<int64_t>();
  const int64_t* ep_off = episode_offsets.data_ptr<int64_t>();
  const int64_t* ends = episode_ends.data_ptr<int64_t>();
  const double* j = J.data_ptr<double>();
  const double* jp = J_prompt.data_ptr<double>();
  const double* r = rewards.data_ptr<double>();
  float* adv = advantages.data_ptr<float>();
  float* prg = progress.data_ptr<float>();
  float* reg = regret.data_ptr<float>();
  std::vector<double> x(B), base(B), j_last(B);  // per trace: value to normalise, its normalised value, J_last
  const int threads = at::get_num_threads();

  // 1. Per trace: progress, regret, J_last and the value x that pass 2 normalises.
#pragma omp parallel for schedule(dynamic, 64) num_threads(threads) if (E >= kParallelEpisodes)
  for (int64_t b = 0; b < B; ++b) j_last[b] = mrt::trace_pass(b, ep_off, j, jp, r, alpha, mode, prg, reg, x.data());

  // 2. Per group (a run of equal sorted ids): normalise x. O(B) in all; serial, since B is small next to T.
  if (mode != kTerminationBaseline) {
    const int64_t* ord = order.data_ptr<int64_t>();
    const int64_t* sid = sorted_group_ids.data_ptr<int64_t>();
    for (int64_t begin = 0, end = 0; begin < B; begin = end) {
      while (end < B && sid[end] == sid[begin]) ++end;
      mrt::normalise_group(ord, begin, end, x.data(), base.data(), scale_by_std, eps);
    }
  }

  // 3. Per trace: fill each episode's token range [previous end, end) with its value, then the tail.
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads) if (T >= kParallelTokens)
  for (int64_t b = 0; b < B; ++b) {
    float* out = adv + tok[b];
    const int64_t length = tok[b + 1] - tok[b];
    if (mode == kSum) {
      std::fill(out, out + length, static_cast<float>(base[b]));
      continue;
    }
    int64_t start = 0;
    double before = jp[b];
    for (int64_t e = ep_off[b]; e < ep_off[b + 1]; ++e) {
      const double value = mode == kDense ? base[b] + alpha * (j[e] - before) : r[b] - before;
      std::fill(out + start, out + ends[e], static_cast<float>(value));
      start = ends[e];
      before = j[e];
    }
    const double tail = mode == kDense ? base[b] + alpha * (r[b] - j_last[b]) : r[b] - j_last[b];
    std::fill(out + start, out + length, static_cast<float>(tail));
  }
  return {advantages, progress, regret};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mrt_kernels, m) {
  m.def(
      "progress_advantages(Tensor token_offsets, Tensor episode_offsets, Tensor episode_ends, Tensor J, "
      "Tensor J_prompt, Tensor rewards, Tensor order, Tensor sorted_group_ids, int num_tokens, float alpha, "
      "int mode, bool scale_by_std, float eps) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mrt_kernels, CPU, m) { m.impl("progress_advantages", &progress_advantages_cpu); }
