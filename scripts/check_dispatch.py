"""What mrt_kernels._C registered with the dispatcher, and which backend each op picks on a CUDA device; needs no GPU.

Prints the extension's build ('cpu' or 'cpu+cuda'), every torch.ops.mrt_kernels op with the dispatch keys that have a
kernel for it, and the automatic backend choice of each public op for CUDA tensors: the choice reads only what is
installed and registered (select_backend and the ops' own rules), so it can be asked on a machine without a GPU by
naming the device. With --expect-cuda it exits 1 unless the ops with CUDA sources (store_kv, copy_blocks,
progress_advantages) have CUDA kernels and pick them, and fused_linear_logprobs and paged_attention pick Triton
(paged_attention picks flash_attn instead where flash-attn imports).

    python scripts/check_dispatch.py [--expect-cuda] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import types

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CUDA_OPS = ("store_kv", "copy_blocks", "progress_advantages")
KEYS = ("CPU", "CUDA", "Meta")


def registrations() -> dict[str, list[str]]:
    """{op: [dispatch keys with a kernel]} for every mrt_kernels op the dispatcher knows."""
    ops = sorted({name.split("::")[1] for key in KEYS for name in torch._C._dispatch_get_registrations_for_dispatch_key(
        key) if name.startswith("mrt_kernels::")})
    return {op: [k for k in KEYS if torch._C._dispatch_has_kernel_for_dispatch_key(f"mrt_kernels::{op}", k)]
            for op in ops}


def cuda_choices() -> dict[str, str]:
    """The backend each public op picks for CUDA tensors (bf16, R1-Distill-Qwen-1.5B's attention shape), with the
    arguments each op passes to select_backend."""
    from mrt_kernels._backend import select_backend
    from mrt_kernels.paged_attention import _select
    cuda = torch.device("cuda")
    q = types.SimpleNamespace(device=cuda, dtype=torch.bfloat16, shape=(1, 12, 128))   # only what _select reads
    return {
        "fused_linear_logprobs": select_backend("fused_linear_logprobs", cuda, None,
                                                cpp_op="fused_linear_logprobs_fwd", triton_ok=True),
        "paged_attention (decode)": _select(q, 16, 2, 1, None),
        "paged_attention (prefill)": _select(q, 16, 2, 512, None),
        "store_kv": select_backend("store_kv", cuda, None, cpp_op="store_kv", cuda_op="store_kv", triton_ok=True),
        "copy_blocks": select_backend("copy_blocks", cuda, None, cpp_op="copy_blocks", cuda_op="copy_blocks",
                                      triton_ok=True),
        "progress_advantages": select_backend("progress_advantages", cuda, None, cpp_op="progress_advantages",
                                              cuda_op="progress_advantages", triton_ok=True),
    }


def problems(build: str | None, regs: dict, choices: dict, flash: bool) -> list[str]:
    out = []
    if build != "cpu+cuda":
        out.append(f"the extension's build is {build!r}, not 'cpu+cuda'")
    for op in CUDA_OPS:
        if "CUDA" not in regs.get(op, []):
            out.append(f"{op} has no CUDA kernel registered")
        if choices[op] != "cuda":
            out.append(f"{op} picks {choices[op]!r} on CUDA, not 'cuda'")
    want = {"fused_linear_logprobs": "triton", "paged_attention (decode)": "flash_attn" if flash else "triton",
            "paged_attention (prefill)": "flash_attn" if flash else "triton"}
    out += [f"{op} picks {choices[op]!r} on CUDA, not {w!r}" for op, w in want.items() if choices[op] != w]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--expect-cuda", action="store_true", help="exit 1 unless the CUDA build's table is as expected")
    ap.add_argument("--json", help="write the findings here")
    args = ap.parse_args()
    os.environ.pop("MRT_KERNELS_BACKEND", None)
    import mrt_kernels
    from mrt_kernels._backend import flash_attn_error
    build, error = mrt_kernels.extension_build(), mrt_kernels.extension_error()
    regs = registrations()
    choices = cuda_choices()
    flash = flash_attn_error() is None
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), GPU visible: {torch.cuda.is_available()}")
    print(f"mrt_kernels._C build: {build}" + (f" ({error})" if error else ""))
    print("registered ops (dispatch keys with a kernel):")
    for op, keys in regs.items():
        print(f"  {op:40s} {', '.join(keys) or '-'}")
    print("backend picked for CUDA tensors:")
    for op, b in choices.items():
        print(f"  {op:40s} {b}")
    found = problems(build, regs, choices, flash) if args.expect_cuda else []
    for p in found:
        print("PROBLEM:", p)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, cuda=torch.version.cuda, build=build, error=error,
                           registrations=regs, cuda_choices=choices, problems=found, ok=not found), f, indent=1)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
