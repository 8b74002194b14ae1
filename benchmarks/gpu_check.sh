#!/usr/bin/env bash
# The one script for a lent GPU machine (one H100 or H200; its image's python3 has torch 2.11, Triton 3.6,
# transformers 5.17; nvcc 13.0; no network). Every step is independent: each runs under its own time limit, and a
# step that fails or runs out of time is recorded and the next one runs. The whole stays inside GPU_CHECK_BUDGET
# seconds (default 420: with the machine's start and the transfers, under 8 minutes). Steps, in order of value:
#   build             mrt_kernels._C with its CUDA kernels for sm_90, then the dispatcher's table
#                     (scripts/check_dispatch.py --expect-cuda)
#   gpu_tests         the tests marked gpu: compiled Triton kernels, the CUDA kernels, bf16 against the float64
#                     references, CUDA-graph decode
#   engine            benchmarks/gpu_engine_check.py --size gpu: R1-Distill-Qwen-1.5B's shape in bf16, random
#                     weights: greedy tokens with and without CUDA graphs, decode tokens/s against transformers'
#                     generate, meta-prover forks against generating from each prefix
#   train_step        benchmarks/gpu_train_check.py --size gpu: one MRT step of that shape, fused kernels against
#                     the reference backend (loss, gradient norm)
#   bench_logprobs, bench_attention, bench_advantages   the kernel benchmarks at --size gpu
#   summary           benchmarks/summarize.py: their table with the roofline column
# Output: $OUT (default bench_results/gpu_check) gets gpu_check.log (everything printed) and gpu_check.json (each
# step's status, seconds, limit and results), the JSON rewritten after every step, so a call cut short still brings
# back what ran. Wheels in .whl/ (scripts/gpu_wheels.sh: math-verify and its dependencies) are installed first into
# a folder put on PYTHONPATH, and the script says what it installed.
#   bash benchmarks/gpu_check.sh             run every step (on the GPU machine)
#   bash benchmarks/gpu_check.sh --dry-run   list the steps and check that every file, flag and benchmark they call
#                                            exists and parses (no GPU; tests/test_gpu_check.py runs it)
#   GPU_CHECK_STEPS="build engine"           only these steps;  PYTHON=...  the interpreter (default python3)
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
case "${1:-}" in
  --dry-run) dry=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]"; exit 2 ;;
esac
py="${PYTHON:-python3}"
if [ $dry = 1 ] && [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then py=.venv/bin/python; fi
out="${OUT:-bench_results/gpu_check}"
budget="${GPU_CHECK_BUDGET:-420}"
parts="$(mktemp -d)"            # each step's own JSON / XML, merged into $out/gpu_check.json after every step
export PY="$py" PARTS="$parts" PYTHONUNBUFFERED=1
# The project is not installed there: every step imports mrt and mrt_kernels from the checkout.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# ---- the steps: name, time limit (s), command (run by bash -c; $PY and $PARTS come from the environment) ----------
names=() limits=() cmds=()
step() { names+=("$1"); limits+=("$2"); cmds+=("$3"); }
step build 150 'MRT_CUDA_ARCHS=90 MAX_JOBS=${MAX_JOBS:-16} $PY setup.py -q build_ext --inplace && $PY scripts/check_dispatch.py --expect-cuda --json $PARTS/build.json'
step gpu_tests 120 'MRT_TEST_TRITON_GPU=1 TRITON_INTERPRET=0 $PY -m pytest -q -rfE -m gpu tests/kernels tests/engine -p no:cacheprovider --junitxml=$PARTS/gpu_tests.xml'
step engine 120 '$PY benchmarks/gpu_engine_check.py --size gpu --out $PARTS/engine.json'
step train_step 60 '$PY benchmarks/gpu_train_check.py --size gpu --out $PARTS/train_step.json'
step bench_logprobs 60 '$PY benchmarks/bench_logprobs.py --size gpu --out $PARTS/bench_logprobs.json'
step bench_attention 30 '$PY benchmarks/bench_attention.py --size gpu --out $PARTS/bench_attention.json'
step bench_advantages 30 '$PY benchmarks/bench_advantages.py --size gpu --out $PARTS/bench_advantages.json'
step summary 20 '$PY benchmarks/summarize.py $PARTS/bench_logprobs.json $PARTS/bench_attention.json $PARTS/bench_advantages.json'
wanted="${GPU_CHECK_STEPS:-${names[*]}}"

if [ $dry = 1 ]; then
  trap 'rm -rf "$parts"' EXIT
  echo "gpu_check.sh --dry-run: ${#names[@]} steps, budget ${budget} s, output in ${out}/ (gpu_check.log, gpu_check.json)"
  total=0
  for i in "${!names[@]}"; do
    printf '  %-17s %4s s  %s\n' "${names[$i]}" "${limits[$i]}" "${cmds[$i]}"
    total=$(( total + limits[i] ))
  done
  echo "  (limits sum to ${total} s; the budget cuts the last steps short if the first ones take their whole limits)"
  if ls .whl/*.whl >/dev/null 2>&1; then echo "wheels to install: $(ls .whl/*.whl | xargs -n1 basename | paste -sd' ')"
  else echo "no .whl/ folder: math-verify will be missing there (make it with: bash scripts/gpu_wheels.sh)"; fi
  for f in setup.py scripts/check_dispatch.py tests/conftest.py; do
    [ -f "$f" ] || { echo "PROBLEM: $f is missing"; exit 1; }
  done
  # Each command with $PY and $PARTS filled in, checked by one Python process.
  for c in "${cmds[@]}"; do eval "echo \"$c\""; done | "$py" scripts/check_commands.py
  exit $?
fi

# ---- a real run ---------------------------------------------------------------------------------------------------
mkdir -p "$out"
log="$out/gpu_check.log" json="$out/gpu_check.json"
exec > >(tee "$log") 2>&1
deadline=$(( SECONDS + budget ))
printf 'name\tstatus\tseconds\tlimit\n' > "$parts/steps.tsv"

merge() {   # $parts/steps.tsv and each step's JSON -> $json
  "$py" - "$parts" "$json" "$budget" <<'PYEOF' || echo "(could not write $json)"
import json, os, sys, xml.etree.ElementTree as ET
parts, out, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(parts, "steps.tsv"))][1:]
steps = []
for name, status, seconds, limit in rows:
    step = dict(name=name, status=status, seconds=float(seconds), limit=int(limit), result=None)
    path = os.path.join(parts, name + ".json")
    if os.path.exists(path):
        try:
            step["result"] = json.load(open(path))
        except ValueError as exc:
            step["result"] = f"unreadable: {exc}"
    xml = os.path.join(parts, name + ".xml")
    if os.path.exists(xml):
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        failed = [f"{c.get('classname')}.{c.get('name')}" for c in suite.iter("testcase")
                  if c.find("failure") is not None or c.find("error") is not None]
        step["result"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        step["result"]["failed"] = failed
    steps.append(step)
env = json.load(open(os.path.join(parts, "env.json"))) if os.path.exists(os.path.join(parts, "env.json")) else None
doc = dict(budget_seconds=budget, env=env, steps=steps, ok=all(s["status"] == "ok" for s in steps))
with open(out + ".tmp", "w") as f:
    json.dump(doc, f, indent=1)
os.replace(out + ".tmp", out)
PYEOF
}

echo "=== env ($(date -u +%FT%TZ))"
timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader \
  || echo "nvidia-smi failed"
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
installed="none"
if ls .whl/*.whl >/dev/null 2>&1; then
  site=/tmp/gpu_check_site
  if timeout 60 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      .whl/*.whl; then
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    installed="$(ls .whl/*.whl | xargs -n1 basename | paste -sd' ')"
  else
    installed="FAILED to install .whl/*.whl"
  fi
fi
echo "installed from .whl/: $installed"
timeout 60 "$py" - "$parts/env.json" "$installed" <<'PYEOF' || echo "(environment report failed)"
import importlib, json, shutil, subprocess, sys
import torch
info = dict(python=sys.version.split()[0], torch=torch.__version__, torch_cuda=torch.version.cuda,
            gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None, wheels_installed=sys.argv[2])
for name in ("triton", "transformers", "math_verify", "gguf", "flash_attn"):
    try:
        info[name] = getattr(importlib.import_module(name), "__version__", "present")
    except Exception as exc:
        info[name] = f"missing ({type(exc).__name__})"
nvcc = shutil.which("nvcc")
info["nvcc"] = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-2] \
    if nvcc else None
print(json.dumps(info, indent=1))
json.dump(info, open(sys.argv[1], "w"), indent=1)
PYEOF

for i in "${!names[@]}"; do
  name="${names[$i]}" limit="${limits[$i]}"
  case " $wanted " in *" $name "*) ;; *) continue ;; esac
  left=$(( deadline - SECONDS ))
  if [ $left -lt 10 ]; then
    printf '%s\tskipped: budget spent\t0\t%s\n' "$name" "$limit" >> "$parts/steps.tsv"; merge; continue
  fi
  lim=$(( limit < left ? limit : left ))
  echo; echo "=== $name (limit ${lim} s, $(( deadline - SECONDS )) s of the budget left)"
  t0=$SECONDS
  # SIGINT first: pytest then stops cleanly, printing its summary and writing its XML; SIGKILL 10 s later.
  timeout -s INT -k 10 "$lim" bash -c "${cmds[$i]}"
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="timeout after ${lim} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  echo "=== $name: $status in $(( SECONDS - t0 )) s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( SECONDS - t0 ))" "$limit" >> "$parts/steps.tsv"
  merge
done

echo; echo "=== gpu_check: $(( budget - (deadline - SECONDS) )) s of ${budget}; results in $json"
awk -F'\t' '{ printf "  %-17s %-28s %8s %6s\n", $1, $2, $3, $4 }' "$parts/steps.tsv"
awk -F'\t' 'NR > 1 && $2 != "ok" { bad = 1 } END { exit bad }' "$parts/steps.tsv"
