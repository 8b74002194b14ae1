"""Every benchmark script imports (its top-level imports name things the package still has) and builds its argument
parser: a renamed function must break a test, not a benchmark nobody ran since."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(f for f in os.listdir(os.path.join(ROOT, "benchmarks")) if f.endswith(".py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_imports_and_parses_help(script):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower()
