// progress_advantages: torch glue of the CUDA kernels in csrc/progress_advantages.cu (checks, device guard, current
// stream, outputs, dispatcher registration). The schema is in csrc/progress_advantages.cpp; the Python launcher
// validates values and prepares the inputs (see there).
#include <torch/extension.h>
#include <torch/library.h>

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

cudaError_t progress_advantages_cuda_launch(const int64_t* token_offsets, const int64_t* episode_offsets,
                                            const int64_t* episode_ends, const double* J, const double* J_prompt,
                                            const double* rewards, const int64_t* order,
                                            const int64_t* sorted_group_ids, int64_t B, int64_t T, double alpha,
                                            int mode, bool scale_by_std, double eps, double* scratch,
                                            float* advantages, float* progress, float* regret,
                                            cudaStream_t stream);

namespace {

void check_cuda_input(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t numel,
                      const at::Device& device) {
  TORCH_CHECK(t.device() == device, "progress_advantages: ", name, " is on ", t.device(), ", rewards on ", device);
  TORCH_CHECK(t.dim() == 1 && t.numel() == numel, "progress_advantages: ", name, " must be 1-D with ", numel,
              " elements, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, "progress_advantages: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "progress_advantages: ", name, " must be contiguous");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> progress_advantages_cuda(
    const at::Tensor& token_offsets, const at::Tensor& episode_offsets, const at::Tensor& episode_ends,
    const at::Tensor& J, const at::Tensor& J_prompt, const at::Tensor& rewards, const at::Tensor& order,
    const at::Tensor& sorted_group_ids, int64_t num_tokens, double alpha, int64_t mode, bool scale_by_std,
    double eps) {
  const int64_t B = rewards.numel(), E = episode_ends.numel(), T = num_tokens;
  const at::Device device = rewards.device();
  TORCH_CHECK(device.is_cuda(), "progress_advantages: rewards must be a CUDA tensor here");
  check_cuda_input(token_offsets, "token_offsets", at::kLong, B + 1, device);
  check_cuda_input(episode_offsets, "episode_offsets", at::kLong, B + 1, device);
  check_cuda_input(episode_ends, "episode_ends", at::kLong, E, device);
  check_cuda_input(J, "J", at::kDouble, E, device);
  check_cuda_input(J_prompt, "J_prompt", at::kDouble, B, device);
  check_cuda_input(rewards, "rewards", at::kDouble, B, device);
  check_cuda_input(order, "order", at::kLong, B, device);
  check_cuda_input(sorted_group_ids, "sorted_group_ids", at::kLong, B, device);
  TORCH_CHECK(mode >= 0 && mode <= 2, "progress_advantages: unknown mode ", mode);
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
