#!/usr/bin/env bash
# The lent GPU machine's Python stack, tested on this CPU machine: a second venv with Python 3.12, torch 2.11.0 (the
# registry's CUDA build, cu130: it runs on the CPU too), Triton 3.6.0 and transformers 5.17.0, the project installed
# in it as scripts/bootstrap.sh installs it (the extension mrt_kernels._C built against that torch, with its CUDA
# kernels when nvcc is found, as on the GPU machine), then the test suite.
#   DEVICE_VENV      the venv's folder (default /work/venv-device; outside the repo, or under .venv*/ which git ignores)
#   DEVICE_PYTHON    the interpreter that makes it (default: pyenv's 3.12.1 through python3.12)
#   TORCH_VERSION, TRITON_VERSION, TRANSFORMERS_VERSION, NUMPY_VERSION   the stack (defaults: the GPU image's)
#   MRT_CUDA_ARCHS   passed to setup.py (default 90: the H100 / H200)
#   arguments        given to pytest (default: the whole suite, -q); --no-tests alone: set up the venv only
# Idempotent: a second run reuses the venv and rebuilds only what changed. Prints the time of each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DEVICE_VENV:-/work/venv-device}"
torch_v="${TORCH_VERSION:-2.11.0}" triton_v="${TRITON_VERSION:-3.6.0}" tf_v="${TRANSFORMERS_VERSION:-5.17.0}"
numpy_v="${NUMPY_VERSION:-2.5.2}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
t0=$SECONDS
phase() { echo "[check_versions] $(( SECONDS - t0 ))s: $*"; }

if [ ! -x "$venv/bin/python" ]; then
  if [ -n "${DEVICE_PYTHON:-}" ]; then
    "$DEVICE_PYTHON" -m venv "$venv"
  else
    PYENV_VERSION=3.12.1 python3.12 -m venv "$venv"
  fi
fi
py="$venv/bin/python"
"$py" -c 'import sys; assert sys.version_info[:2] == (3, 12), f"{sys.executable} is Python {sys.version}, not 3.12"'
phase "venv $venv ($("$py" --version))"

# The pinned stack first, so the project's install (whose pins are lower bounds) keeps it.
"$py" -m pip install -q --upgrade pip setuptools wheel
"$py" -m pip install -q "torch==$torch_v" "triton==$triton_v" "transformers==$tf_v" "numpy==$numpy_v"
phase "torch $torch_v, triton $triton_v, transformers $tf_v, numpy $numpy_v installed"

# bootstrap.sh's editable install rebuilds the extension from scratch (a fresh build folder each time, minutes with
# the CUDA sources): skip it while the project imports and its extension is newer than every source.
so="$(ls mrt_kernels/_C.cpython-312-*.so 2>/dev/null || true)"
if [ -n "$so" ] && [ -z "$(find csrc setup.py pyproject.toml -newer "$so" 2>/dev/null)" ] \
    && "$py" -c "import mrt, mrt_kernels, pytest; assert mrt_kernels.extension_build()" 2>/dev/null; then
  phase "project already installed, $so up to date"
else
  MRT_VENV="$venv" TORCH_SPEC="torch==$torch_v" MRT_CUDA_ARCHS="${MRT_CUDA_ARCHS:-90}" bash scripts/bootstrap.sh
  phase "project installed (bootstrap.sh)"
fi

"$py" - "$torch_v" "$triton_v" "$tf_v" "$numpy_v" <<'EOF'
import sys
import numpy, torch, triton, transformers
want = dict(zip(("torch", "triton", "transformers", "numpy"), sys.argv[1:]))
have = {"torch": torch.__version__.split("+")[0], "triton": triton.__version__, "transformers": transformers.__version__,
        "numpy": numpy.__version__}
print("versions:", {k: v for k, v in have.items()}, "torch.version.cuda:", torch.version.cuda)
bad = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
sys.exit(f"the venv's versions differ from the pins: {bad}" if bad else 0)
EOF

[ "${1:-}" = "--no-tests" ] && exit 0
set +e
"$py" -m pytest -p no:cacheprovider "${@:--q}"
rc=$?
set -e
phase "tests done (pytest exit $rc)"
exit $rc
