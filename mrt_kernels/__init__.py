"""mrt_kernels: the custom ops of mrt, each with a plain-PyTorch reference and faster backends.

`import mrt_kernels` works on any machine: without a GPU, Triton or the compiled extension the references run.
"""
from ._backend import BACKENDS, BackendError, available_backends, extension_build, extension_error

__all__ = ["BACKENDS", "BackendError", "available_backends", "extension_build", "extension_error"]
