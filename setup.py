"""Build of mrt_kernels._C: C++ CPU ops always, CUDA ops where torch has CUDA and nvcc is found.

Environment switches (as flash-attn's):
  MRT_SKIP_CUDA_BUILD=1   build the CPU ops only, even where CUDA is available
  MRT_CUDA_ARCHS="80;90"  CUDA architectures to compile for (default sm_80 and sm_90)
  MAX_JOBS=N              parallel compile jobs (read by torch's ninja builder)
Never downloads anything and never probes a GPU.
"""
import glob
import os

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def _cuda_wanted() -> bool:
    if os.environ.get("MRT_SKIP_CUDA_BUILD", "0") == "1":
        return False
    # A CPU torch reports CUDA_HOME None even where nvcc exists; both must be set to link against c10_cuda.
    return torch.version.cuda is not None and CUDA_HOME is not None


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", pattern)))


def _cuda_library_includes() -> list[str]:
    """Headers of the pip-installed CUDA libraries (cuSPARSE, cuBLAS, ...) that torch's CUDA headers include.

    A CUDA torch from pip ships them under site-packages/nvidia/*/include rather than in CUDA_HOME.
    """
    import site

    roots = site.getsitepackages() + [site.getusersitepackages()]
    found = []
    for root in roots:
        found += glob.glob(os.path.join(root, "nvidia", "cu*", "include"))
        found += glob.glob(os.path.join(root, "nvidia", "*", "include"))
    return sorted(set(p for p in found if os.path.isdir(p)))


def _extension():
    cpu_sources = [s for s in _sources("*.cpp") if not s.endswith("_cuda.cpp")]
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp"]
    if not _cuda_wanted():
        return CppExtension("mrt_kernels._C", cpu_sources, extra_compile_args={"cxx": cxx_flags},
                            extra_link_args=["-fopenmp"])
    archs = os.environ.get("MRT_CUDA_ARCHS", "80;90")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", " ".join(f"{a[0]}.{a[1:]}" for a in archs.replace(",", ";").split(";")))
    nvcc_flags = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo"]
    # The toolkit's own headers first: the pip runtime's cuda_runtime.h includes crt/ headers that only the
    # toolkit (nvcc's) has; the pip folders after it only fill in what the toolkit lacks.
    includes = [os.path.join(CUDA_HOME, "include")] + _cuda_library_includes()
    return CUDAExtension("mrt_kernels._C", cpu_sources + _sources("*_cuda.cpp") + _sources("*.cu"),
                         define_macros=[("MRT_WITH_CUDA", "1")], include_dirs=includes,
                         extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, extra_link_args=["-fopenmp"])


setup(ext_modules=[_extension()], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
