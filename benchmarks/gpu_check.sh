#!/usr/bin/env bash
# The one script for a lent GPU machine (one H200; python3 there holds torch + Triton; no network, no math-verify):
#   1. builds mrt_kernels._C with its CUDA kernels (sm_90 only, to be quick),
#   2. runs the GPU tests (compiled Triton kernels, not the interpreter; CUDA kernels; bf16),
#   3. times every op and the engine at GPU sizes, each benchmark writing JSON,
#   4. prints one table of all of them.
# Meant to finish in under 8 minutes. Results land in ${OUT:-bench_results}/.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench_results}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 MRT_TEST_TRITON_GPU=1 TRITON_INTERPRET=0
status=0
step() { echo; echo "=== $* ==="; }

step "build (CUDA, sm_90)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
MRT_CUDA_ARCHS=90 MAX_JOBS="${MAX_JOBS:-16}" timeout 300 "$py" setup.py -q build_ext --inplace >"$out/build.log" 2>&1 \
  || { echo "build FAILED (tail of $out/build.log):"; tail -40 "$out/build.log"; exit 1; }
"$py" -c "import mrt_kernels; print('extension:', mrt_kernels.extension_build())"

step "GPU tests"
timeout 180 "$py" -m pytest -q -m gpu tests/kernels tests/engine -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

for bench in bench_logprobs bench_advantages bench_attention bench_rollout; do
  [ -f "benchmarks/$bench.py" ] || continue
  step "$bench --size gpu"
  extra="" limit=150   # the rollout's online rows decode 4k-token traces with transformers: too long here
  [ "$bench" = bench_rollout ] && extra="--only meta throughput --repeats 1" limit=300
  timeout "$limit" "$py" "benchmarks/$bench.py" --size gpu --out "$out/$bench.json" $extra || status=1
done

step "summary"
"$py" benchmarks/summarize.py "$out"/bench_*.json || status=1
exit $status
