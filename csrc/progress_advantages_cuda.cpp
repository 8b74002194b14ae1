// progress_advantages: torch glue of the CUDA kernels in csrc/progress_advantages_kernels.cu (checks, device guard,
// current stream, outputs, dispatcher registration). The schema is in csrc/progress_advantages.cpp; the Python launcher
// validates values and prepares the inputs (see there).
#include <torch/extension.h>
#include <torch/library.h>

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include "common.h"        // the launcher's prototype
#include "torch_checks.h"

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> progress_advantages_cuda(
    const at::Tensor& token_offsets, const at::Tensor& episode_offsets, const at::Tensor& episode_ends,
    const at::Tensor& J, const at::Tensor& J_prompt, const at::Tensor& rewards, const at::Tensor& order,
    const at::Tensor& sorted_group_ids, int64_t num_tokens, double alpha, int64_t mode, bool scale_by_std,
    double eps) {
  const int64_t B = rewards.numel(), E = episode_ends.numel(), T = num_tokens;
  const at::Device device = rewards.device();
  TORCH_CHECK(device.is_cuda(), "progress_advantages: rewards must be a CUDA tensor here");
  mrt::check_progress_advantages(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, order,
                                 sorted_group_ids, mode);
  TORCH_CHECK(T >= 0, "progress_advantages: num_tokens must be >= 0");  // == token_offsets[-1]: the launcher's job

  const c10::cuda::CUDAGuard guard(device);
  const auto f32 = rewards.options().dtype(at::kFloat);
  at::Tensor advantages = at::empty({T}, f32), progress = at::empty({E}, f32), regret = at::empty({B}, f32);
  at::Tensor scratch = at::empty({2 * B}, rewards.options());  // (2B,) float64: x, then its normalised value
  const cudaError_t err = progress_advantages_cuda_launch(
      token_offsets.data_ptr<int64_t>(), episode_offsets.data_ptr<int64_t>(), episode_ends.data_ptr<int64_t>(),
      J.data_ptr<double>(), J_prompt.data_ptr<double>(), rewards.data_ptr<double>(), order.data_ptr<int64_t>(),
      sorted_group_ids.data_ptr<int64_t>(), B, T, alpha, static_cast<int>(mode), scale_by_std, eps,
      scratch.data_ptr<double>(), advantages.data_ptr<float>(), progress.data_ptr<float>(), regret.data_ptr<float>(),
      c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "progress_advantages: CUDA launch failed: ", cudaGetErrorString(err));
  return {advantages, progress, regret};
}

}  // namespace

TORCH_LIBRARY_IMPL(mrt_kernels, CUDA, m) { m.impl("progress_advantages", &progress_advantages_cuda); }
