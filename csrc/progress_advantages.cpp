// progress_advantages: schema and C++ CPU kernel (OpenMP). The op is defined by progress_advantages_ref in
// mrt_kernels/progress_advantages.py; the Python launcher validates values and prepares these inputs:
//   token_offsets (B+1,) int64, episode_offsets (B+1,) int64, episode_ends (E,) int64,
//   J (E,) / J_prompt (B,) / rewards (B,) float64,
//   order (B,) int64 = traces sorted by group id (stable), sorted_group_ids (B,) int64 = group_ids[order],
//   num_tokens = token_offsets[B], alpha, mode (0 dense, 1 sum, 2 termination_baseline), scale_by_std, eps.
// Returns float32 (advantages (T,), progress (E,), regret (B,)); everything is computed in double.
#include <torch/extension.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

namespace {

constexpr int64_t kDense = 0, kSum = 1, kTerminationBaseline = 2;
// Fork threads only for work that outlasts a fork-join: ~1M float writes (phase 3) or ~1M episodes (phase 1) take
// about a millisecond on one core, and on a busy machine a parallel region can wait far longer for a descheduled thread.
constexpr int64_t kParallelTokens = int64_t{1} << 20, kParallelEpisodes = int64_t{1} << 20;

void check_input(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t numel) {
  TORCH_CHECK(t.dim() == 1 && t.numel() == numel, "progress_advantages: ", name, " must be 1-D with ", numel,
              " elements, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, "progress_advantages: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "progress_advantages: ", name, " must be contiguous");
}

// Group normalisation over one run [begin, end) of sorted positions (one group), in the reference's arithmetic:
//   mean = sum x / n;  dev = x - mean;  std = sqrt(sum dev^2 / (n - 1));  base = dev / (std + eps)  (or dev);
//   a group of one gets 0. Members are visited in sorted (= original, the sort is stable) order.
void normalise_group(const int64_t* order, int64_t begin, int64_t end, const double* x, double* base,
                     bool scale_by_std, double eps) {
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
  const double denom = scale_by_std ? std::sqrt(m2 / static_cast<double>(n - 1)) + eps : 1.0;
  for (int64_t k = begin; k < end; ++k) base[order[k]] = (x[order[k]] - mean) / denom;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> progress_advantages_cpu(
    const at::Tensor& token_offsets, const at::Tensor& episode_offsets, const at::Tensor& episode_ends,
    const at::Tensor& J, const at::Tensor& J_prompt, const at::Tensor& rewards, const at::Tensor& order,
    const at::Tensor& sorted_group_ids, int64_t num_tokens, double alpha, int64_t mode, bool scale_by_std,
    double eps) {
  const int64_t B = rewards.numel(), E = episode_ends.numel(), T = num_tokens;
  check_input(token_offsets, "token_offsets", at::kLong, B + 1);
  check_input(episode_offsets, "episode_offsets", at::kLong, B + 1);
  check_input(episode_ends, "episode_ends", at::kLong, E);
  check_input(J, "J", at::kDouble, E);
  check_input(J_prompt, "J_prompt", at::kDouble, B);
  check_input(rewards, "rewards", at::kDouble, B);
  check_input(order, "order", at::kLong, B);
  check_input(sorted_group_ids, "sorted_group_ids", at::kLong, B);
  TORCH_CHECK(mode >= kDense && mode <= kTerminationBaseline, "progress_advantages: unknown mode ", mode);
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

  // 1. Per trace: progress[e] = J[e] - J_before[e] (J_prompt before the first), regret = sum (1 - J[e]),
  //    J_last, and x = r (dense) or r + alpha * sum(progress) (sum).
#pragma omp parallel for schedule(dynamic, 64) num_threads(threads) if (E >= kParallelEpisodes)
  for (int64_t b = 0; b < B; ++b) {
    double before = jp[b], sum_progress = 0.0, sum_regret = 0.0;
    for (int64_t e = ep_off[b]; e < ep_off[b + 1]; ++e) {
      const double p = j[e] - before;
      prg[e] = static_cast<float>(p);
      sum_progress += p;
      sum_regret += 1.0 - j[e];
      before = j[e];
    }
    reg[b] = static_cast<float>(sum_regret);
    j_last[b] = before;
    x[b] = mode == kSum ? r[b] + alpha * sum_progress : r[b];
  }

  // 2. Per group (a run of equal sorted ids): normalise x. O(B) in all; serial, since B is small next to T.
  if (mode != kTerminationBaseline) {
    const int64_t* ord = order.data_ptr<int64_t>();
    const int64_t* sid = sorted_group_ids.data_ptr<int64_t>();
    for (int64_t begin = 0, end = 0; begin < B; begin = end) {
      while (end < B && sid[end] == sid[begin]) ++end;
      normalise_group(ord, begin, end, x.data(), base.data(), scale_by_std, eps);
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
