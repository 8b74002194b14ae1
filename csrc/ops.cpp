// The extension module mrt_kernels._C and the library's root registration.
// Each op's schema and CPU kernel live in that op's own .cpp (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL);
// CUDA kernels live in plain .cu files (no torch headers) with their torch glue in *_cuda.cpp. Shared headers:
// common.h (plain C/CUDA: host/device marker, the .cu launchers' prototypes), torch_checks.h (the glue's argument
// checks; .cpp files only) and <op>.h for arithmetic one op's CPU and CUDA kernels share (progress_advantages.h).
#include <torch/extension.h>
#include <torch/library.h>

static std::string build_info() {
#ifdef MRT_WITH_CUDA
  return "cpu+cuda";
#else
  return "cpu";
#endif
}

TORCH_LIBRARY(mrt_kernels, m) {
  // Reports how the extension was built, so Python can tell whether CUDA kernels exist without a GPU.
  m.def("build_info() -> str", &build_info);
}

// Importing mrt_kernels._C loads the shared object, which runs the registrations above.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.doc() = "mrt_kernels compiled ops (see torch.ops.mrt_kernels)"; }
