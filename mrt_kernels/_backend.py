"""Which backend runs an op: the fastest one available for the tensors' device, or the one asked for.

Backends: "cuda" (compiled CUDA kernels in mrt_kernels._C), "triton" (GPU, or the CPU under TRITON_INTERPRET=1),
"cpp" (compiled C++ CPU kernels in mrt_kernels._C) and "reference" (plain PyTorch, always there); an op may have
others of its own (paged attention: "flash_attn", "sdpa"), whose availability it tells select_backend.
`MRT_KERNELS_BACKEND` or an op's `backend=` argument forces one; forcing one that cannot run raises BackendError
with the reason. Nothing here fails at import for lack of a GPU, Triton, flash-attn or the extension.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Callable

import torch

BACKENDS = ("cuda", "triton", "cpp", "reference")


class BackendError(RuntimeError):
    """A backend was asked for that cannot run here; the message says why."""


@functools.lru_cache(maxsize=None)
def extension_error() -> str | None:
    """None if mrt_kernels._C loads, else why not."""
    try:
        importlib.import_module("mrt_kernels._C")
    except ImportError as exc:  # not built, or built against another torch
        return f"the compiled extension mrt_kernels._C is not importable ({exc}); build it with " \
               "`pip install --no-build-isolation -e .`"
    return None


@functools.lru_cache(maxsize=None)
def extension_build() -> str | None:
    """'cpu' or 'cpu+cuda' as the extension was built, None without it."""
    if extension_error() is not None:
        return None
    return torch.ops.mrt_kernels.build_info()


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def triton_error() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"triton is not importable ({exc}); `pip install triton`"
    return None


@functools.lru_cache(maxsize=None)
def flash_attn_error() -> str | None:
    """None if flash-attn imports, else why not (paged attention's "flash_attn" backend)."""
    try:
        import flash_attn  # noqa: F401  (a Python-only install fails here, at its compiled module)
    except Exception as exc:
        return f"flash_attn is not importable ({exc})"
    return None


@functools.lru_cache(maxsize=None)      # registrations are fixed once the extension is loaded; asked on every call
def has_compiled_kernel(op: str, dispatch_key: str) -> bool:
    """True if mrt_kernels._C registered a kernel for torch.ops.mrt_kernels.<op> under dispatch_key ('CPU', 'CUDA')."""
    if extension_error() is not None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"mrt_kernels::{op}", dispatch_key)


# The compiled backends: (what messages call them, the device type of their tensors, the dispatch key of their kernels).
_COMPILED = {"cpp": ("C++ CPU", "cpu", "CPU"), "cuda": ("CUDA", "cuda", "CUDA")}


def _compiled_reason(backend: str, op: str | None, device: torch.device) -> str | None:
    """Why the compiled backend "cpp" or "cuda" cannot run torch.ops.mrt_kernels.<op> on `device`, or None."""
    label, device_type, dispatch_key = _COMPILED[backend]
    if op is None:
        return f"this op has no {label} backend"
    if device.type != device_type:
        return f"the {backend} backend runs on {dispatch_key} tensors, these are on {device}"
    if extension_error() is not None:
        return extension_error()
    if has_compiled_kernel(op, dispatch_key):
        return None
    if backend == "cpp":
        return f"mrt_kernels._C has no CPU kernel for {op}; rebuild the extension"
    return f"mrt_kernels._C was built without CUDA kernels (build: {extension_build()}); rebuild with a " \
           "CUDA torch and nvcc, without MRT_SKIP_CUDA_BUILD=1"


def unavailable_reason(backend: str, device: torch.device, *, cpp_op: str | None = None,
                       cuda_op: str | None = None, triton_ok: bool = False) -> str | None:
    """Why `backend` cannot run an op on `device`, or None if it can.

    cpp_op / cuda_op: the torch.ops.mrt_kernels name whose CPU / CUDA kernel implements the backend (None: the op has
    no such backend). triton_ok: the op has a Triton implementation.
    """
    if backend == "reference":
        return None
    if backend == "cpp":
        return _compiled_reason("cpp", cpp_op, device)
    if backend == "cuda":
        return _compiled_reason("cuda", cuda_op, device)
    if backend == "triton":
        if not triton_ok:
            return "this op has no Triton backend"
        if triton_error() is not None:
            return triton_error()
        if device.type == "cpu" and not triton_interpreting():
            return "Triton runs CPU tensors only under TRITON_INTERPRET=1"
        if device.type not in ("cpu", "cuda"):
            return f"Triton does not run on {device}"
        return None
    raise BackendError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def select_backend(op_name: str, device: torch.device, requested: str | None, *, cpp_op: str | None = None,
                   cuda_op: str | None = None, triton_ok: bool = False, auto_order: tuple[str, ...] | None = None,
                   names: tuple[str, ...] = BACKENDS,
                   unavailable: Callable[[str], str | None] | None = None) -> str:
    """The backend to run `op_name` with.

    requested: the op's `backend=` argument; if None, MRT_KERNELS_BACKEND; if unset too, the first available of
    auto_order (default: cuda, triton on GPU, cpp on CPU, reference). Under TRITON_INTERPRET=1 Triton is never
    picked automatically for CPU tensors (the interpreter is for tests, and slow); ask for it by name.
    An op with backends of its own (paged attention: flash_attn, sdpa) passes names (every backend it has, reference
    included) and unavailable (backend -> why it cannot run these arguments, or None), which then replaces the
    cpp_op / cuda_op / triton_ok rules of unavailable_reason.
    """
    if requested is None:
        requested = os.environ.get("MRT_KERNELS_BACKEND") or None
    if unavailable is None:
        unavailable = functools.partial(unavailable_reason, device=device, cpp_op=cpp_op, cuda_op=cuda_op,
                                        triton_ok=triton_ok)
    if requested is not None:
        if requested not in names:
            raise BackendError(f"{op_name}: unknown backend {requested!r}; choose one of {names}")
        reason = unavailable(requested)
        if reason is not None:
            raise BackendError(f"{op_name}: backend {requested!r} is not available: {reason}")
        return requested
    order = auto_order or (("cuda", "triton", "reference") if device.type == "cuda" else ("cpp", "reference"))
    for backend in order:
        if unavailable(backend) is None:
            return backend
    return "reference"


def available_backends(device: torch.device, **kwargs) -> list[str]:
    """Every backend that can run an op (given its cpp_op / cuda_op / triton_ok) on `device`."""
    return [b for b in BACKENDS if unavailable_reason(b, device, **kwargs) is None]
