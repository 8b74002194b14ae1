#!/usr/bin/env bash
# mrt_kernels._C built with its CUDA kernels against the lent GPU machine's torch (2.11.0+cu130, the venv of
# scripts/check_versions.sh) on this machine, which has nvcc 13.0 and no GPU: a clean build for sm_90, its link
# (every library resolved), the sm_90 machine code inside it, then the import without a GPU and the dispatcher's
# table (scripts/check_dispatch.py --expect-cuda: store_kv, copy_blocks and progress_advantages with CUDA kernels,
# Triton picked for fused_linear_logprobs and paged_attention on a CUDA device). Prints the build's time.
#   DEVICE_VENV     the venv (default /work/venv-device; made by scripts/check_versions.sh --no-tests if missing)
#   MRT_CUDA_ARCHS  default 90;  MAX_JOBS  parallel compiles (default: torch's, all cores)
#   --no-build      check the extension already built in place (the link, the machine code, the table) only
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DEVICE_VENV:-/work/venv-device}"
py="$venv/bin/python"
[ -x "$py" ] && "$py" -c "import torch, mrt_kernels" 2>/dev/null || DEVICE_VENV="$venv" bash scripts/check_versions.sh --no-tests
# The toolkit that nvcc belongs to (here /usr/local/bin/nvcc is a wrapper script; see scripts/bootstrap.sh).
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
torch_cuda="$("$py" -c 'import torch; print(torch.version.cuda or "")')"
[ -n "$torch_cuda" ] || { echo "torch in $venv is a CPU build: no CUDA extension can be built"; exit 1; }
nvcc_cuda="$(nvcc --version | grep -o 'release [0-9.]*' | cut -d' ' -f2)"
echo "torch CUDA $torch_cuda, nvcc $nvcc_cuda, CUDA_HOME ${CUDA_HOME:-unset, torch guesses}"
[ "${torch_cuda%%.*}" = "${nvcc_cuda%%.*}" ] || { echo "CUDA major versions differ: torch $torch_cuda, nvcc $nvcc_cuda"; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ "${1:-}" != "--no-build" ]; then
  t0=$SECONDS
  # A fresh build folder: every source compiles (timed); --inplace puts _C next to the package, where the venv's
  # editable install imports it.
  MRT_CUDA_ARCHS="${MRT_CUDA_ARCHS:-90}" "$py" setup.py -q build_ext --inplace --build-temp "$tmp" \
    > "$tmp/build.log" 2>&1 || { tail -60 "$tmp/build.log"; echo "BUILD FAILED"; exit 1; }
  took=$(( SECONDS - t0 ))
  cores="$(nproc)"
  echo "build: ${took} s, MAX_JOBS=${MAX_JOBS:-unset}, ${cores} cores"
fi
so="$(ls mrt_kernels/_C.cpython-312-*.so)"
echo "$so: $(du -h "$so" | cut -f1)"
# torch's own libraries (libc10, libtorch, libc10_cuda) are found through torch's folder, as its import finds them;
# Python's C API (Py*) is the interpreter's: anything else unresolved would fail the import there.
torch_lib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
if LD_LIBRARY_PATH="$torch_lib" ldd -r "$so" 2>&1 | grep -E "not found|undefined symbol" | grep -v -E "symbol: _?Py"; then
  echo "LINK PROBLEM: unresolved libraries or symbols above"; exit 1
fi
echo "link: every library and symbol resolved"
# cuobjdump: the toolkit's, else the one Triton ships (this machine's minimal toolkit has none).
cuobjdump="$(command -v cuobjdump || echo "${CUDA_HOME:-/usr/local/cuda}/bin/cuobjdump")"
[ -x "$cuobjdump" ] || cuobjdump="$("$py" -c 'import os, triton; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))')"
if [ -x "$cuobjdump" ]; then
  archs="$("$cuobjdump" --list-elf "$so" | grep -o 'sm_[0-9a-z]*' | sort | uniq -c | tr -s ' ' | paste -sd,)"
  echo "machine code in it (count per arch): $archs"
  case "$archs" in *sm_90*) ;; *) echo "no sm_90 machine code"; exit 1;; esac
else
  echo "no cuobjdump found: the machine code is not checked"
fi
CUDA_VISIBLE_DEVICES="" "$py" scripts/check_dispatch.py --expect-cuda
