"""The lent GPU machine has neither math-verify nor gguf (nor flash-attn): `import mrt`, `import mrt_kernels`, the
trainer's and engine's modules and every test module with GPU tests must import without them.

A fresh interpreter (the imports must not be cached already) gets a meta path finder, first on sys.meta_path, that
raises ImportError for those packages and their submodules, as a machine without them would; the test then imports
the modules, and proves the blocker works by failing to import the blocked packages themselves.
"""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("math_verify", "gguf", "flash_attn")


def _gpu_test_modules() -> list[str]:
    """tests.x.test_y for every test file that holds a test marked gpu."""
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, "tests")):
        for f in sorted(files):
            path = os.path.join(folder, f)
            if f.startswith("test_") and f.endswith(".py") and "mark.gpu" in open(path).read():
                found.append(os.path.relpath(path, ROOT)[:-3].replace(os.sep, "."))
    return sorted(found)


PROBE = r'''
import importlib, importlib.abc, sys
BLOCKED = {blocked!r}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked (the GPU machine does not have it)")
        return None

sys.meta_path.insert(0, Blocker())
for name in BLOCKED:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:
        sys.exit(f"the blocker let {{name}} through")
for name in {modules!r}:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
if leaked:
    sys.exit(f"imported despite the blocker: {{leaked}}")
print("imported", len({modules!r}), "modules")
'''


def test_gpu_test_modules_are_found():
    mods = _gpu_test_modules()
    assert "tests.kernels.test_paged_attention" in mods and "tests.engine.test_cuda_graphs" in mods, mods


def test_imports_without_math_verify_gguf_flash_attn():
    modules = ["mrt", "mrt_kernels", "mrt.models", "mrt.rollout", "mrt.trainer", "mrt.rewards", "mrt.eval.run",
               "mrt_kernels.fused_linear_logprobs", "mrt_kernels.paged_attention", *_gpu_test_modules()]
    code = PROBE.format(blocked=BLOCKED, modules=modules)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert f"imported {len(modules)} modules" in proc.stdout
