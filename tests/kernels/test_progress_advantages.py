"""progress_advantages: every backend on this machine against the float64 reference, the reference against a literal
per-episode Python loop and a hand-worked batch, odd shapes, every bad input the launcher must reject, the CUDA
kernels' logic run on the CPU (host emulation of csrc/progress_advantages_kernels.cu), and on a GPU the real CUDA and
Triton kernels (marked gpu)."""
from __future__ import annotations

import importlib.util
import math
import pathlib

import pytest
import torch

from mrt_kernels._backend import BackendError, available_backends, extension_error
from mrt_kernels.progress_advantages import MODES, progress_advantages, progress_advantages_ref

OP = "progress_advantages"
CPU_BACKENDS = available_backends(torch.device("cpu"), cpp_op=OP, cuda_op=OP, triton_ok=True)
FIELDS = ("advantages", "progress", "regret")


def _bench_module():
    """benchmarks/bench_advantages.py: its plain Python loop (docs/algorithm.md read literally, a second oracle for
    the reference) and its batch of the benchmark's shape."""
    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_advantages.py"
    spec = importlib.util.spec_from_file_location("bench_advantages", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_batch(B: int, *, max_len: int = 40, max_episodes: int = 6, n_groups: int | None = None,
                 quantised: bool = True, p_no_episodes: float = 0.2, dtype=torch.float64, device="cpu") -> dict:
    """Traces of 0..max_len tokens (some empty, some without episodes, some whose last episode ends at the trace end),
    group ids arbitrary (negative, large, interleaved) with at least one group of one."""
    lengths = torch.randint(0, max_len + 1, (B,))
    ends, counts = [], []
    for L in lengths.tolist():
        k = 0 if (L == 0 or torch.rand(()) < p_no_episodes) else int(torch.randint(1, min(max_episodes, L) + 1, ()))
        ends.append(torch.randperm(L)[:k].sort().values + 1)  # distinct, in [1, L]; L itself leaves no tail
        counts.append(k)
    E = sum(counts)
    if quantised:  # J and rewards as the trainer makes them: means of 8 answers, 0/1 outcomes
        J = torch.randint(0, 9, (E,)).double() / 8
        J_prompt = torch.randint(0, 9, (B,)).double() / 8
        rewards = torch.randint(0, 2, (B,)).double()
    else:
        J, J_prompt, rewards = torch.rand(E, dtype=torch.float64), torch.rand(B, dtype=torch.float64), torch.randn(B)
    n_groups = n_groups or max(1, B // 4)
    ids = torch.randint(-10**12, 10**12, (n_groups,))
    group_ids = ids[torch.randint(0, n_groups, (B,))]
    group_ids[0] = 10**15  # a group of one
    batch = dict(token_offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
                 episode_offsets=torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(counts).cumsum(0)]),
                 episode_ends=torch.cat(ends).long() if E else torch.zeros(0, dtype=torch.long),
                 J=J.to(dtype), J_prompt=J_prompt.to(dtype), rewards=rewards.to(dtype), group_ids=group_ids)
    return {k: v.to(device) for k, v in batch.items()}


def assert_f32_close(name: str, out: torch.Tensor, ref: torch.Tensor):
    """out (float32) is the float64 reference rounded to float32, up to one float32 ulp (kernels sum in their own
    order, so the float64 values may differ in the last bits and round the other way), plus a float32-derived floor."""
    assert out.dtype == torch.float32, f"{name}: dtype {out.dtype}"
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    eps32 = torch.finfo(torch.float32).eps
    err = (out.double() - ref.double().to(out.device)).abs()
    bad = ~(err <= eps32 * ref.double().abs().to(out.device) + eps32 * 1e-2)  # NaN is bad too
    if bad.any():
        idx = bad.nonzero().flatten()[:8].tolist()
        where = ", ".join(f"[{i}] {out[i].item():.9g} vs {ref[i].item():.9g}" for i in idx)
        pytest.fail(f"{name}: {int(bad.sum())} of {out.numel()} mismatch: {where}")


def assert_matches(out, ref):
    for name, o, r in zip(FIELDS, out, ref):
        assert_f32_close(name, o, r)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("scale_by_std", [True, False])
@pytest.mark.parametrize("quantised", [True, False])
def test_matches_reference(seed, backend, mode, scale_by_std, quantised):
    B = 60 if backend == "triton" else 150  # the Triton interpreter is slow
    batch = random_batch(B, quantised=quantised)
    alpha = float(torch.empty(()).uniform_(0.1, 2.0))
    kw = dict(alpha=alpha, mode=mode, scale_by_std=scale_by_std)
    out = progress_advantages(**batch, **kw, backend=backend)
    assert_matches(out, progress_advantages_ref(**batch, **kw))


@pytest.mark.skipif("cpp" not in CPU_BACKENDS, reason="mrt_kernels._C is not built")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_cpp_threaded_path(seed, mode):
    """Over 2^20 tokens the C++ kernel fills traces on several threads."""
    batch = _bench_module().make_batch(1024, 2048, 8, G=4)  # lengths in [1024, 3072): T >= 2^20
    assert int(batch["token_offsets"][-1]) >= 1 << 20
    out = progress_advantages(**batch, mode=mode, backend="cpp")
    assert_matches(out, progress_advantages_ref(**batch, mode=mode))


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("scale_by_std", [True, False])
def test_reference_matches_python_loop(seed, mode, scale_by_std):
    batch = random_batch(60, quantised=False)
    kw = dict(alpha=0.7, mode=mode, scale_by_std=scale_by_std)
    assert_matches(_bench_module().progress_advantages_loop(**batch, **kw), progress_advantages_ref(**batch, **kw))


def _hand_batch():
    # 4 traces: 3 episodes + a tail; no episodes (alone in its group); 1 episode + a tail; 2 episodes, no tail.
    f64 = dict(dtype=torch.float64)
    return dict(token_offsets=torch.tensor([0, 10, 15, 20, 30]), episode_offsets=torch.tensor([0, 3, 3, 4, 6]),
                episode_ends=torch.tensor([2, 5, 9, 3, 4, 10]), J=torch.tensor([.1, .5, .3, .2, .6, .9], **f64),
                J_prompt=torch.tensor([.2, .4, .1, .3], **f64), rewards=torch.tensor([1., 0., 1., 1.], **f64),
                group_ids=torch.tensor([7, 3, 7, 7]))


def _sum_mode_expected(eps):
    # r + sum(progress) = [1.1, 0, 1.1, 1.6]; group {0, 2, 3}: mean 19/15, deviations [-1/6, -1/6, 1/3], std sqrt(1/12)
    std = math.sqrt(1 / 12)
    return [-1 / 6 / (std + eps)] * 10 + [0.0] * 5 + [-1 / 6 / (std + eps)] * 5 + [1 / 3 / (std + eps)] * 10


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_hand_worked_batch(backend):
    batch = _hand_batch()
    expected = {
        # group {0, 2, 3} has rewards 1, 1, 1: norm 0; trace 1 is a group of one: norm 0
        "dense": [-.1] * 2 + [.4] * 3 + [-.2] * 4 + [.7] + [-.4] * 5 + [.1] * 3 + [.8] * 2 + [.3] * 10,
        "sum": _sum_mode_expected(1e-6),
        "termination_baseline": [.8] * 2 + [.9] * 3 + [.5] * 4 + [.7] + [-.4] * 5 + [.9] * 3 + [.8] * 2 + [.7] * 4
                                + [.4] * 6,
    }
    for mode, adv in expected.items():
        out = progress_advantages(**batch, mode=mode, backend=backend)
        assert_f32_close(f"{mode} advantages", out.advantages, torch.tensor(adv, dtype=torch.float64))
        assert_f32_close("progress", out.progress, torch.tensor([-.1, .4, -.2, .1, .3, .3], dtype=torch.float64))
        assert_f32_close("regret", out.regret, torch.tensor([2.1, 0., .8, .5], dtype=torch.float64))


def _edge_batches():
    z = torch.zeros(0, dtype=torch.long)
    f = lambda *v: torch.tensor(v, dtype=torch.float64)
    return {
        "one trace, one token, no episode": dict(token_offsets=torch.tensor([0, 1]), episode_offsets=torch.tensor([0, 0]),
                                                  episode_ends=z, J=f(), J_prompt=f(.5), rewards=f(1.),
                                                  group_ids=torch.tensor([0])),
        "no episodes anywhere": dict(token_offsets=torch.tensor([0, 3, 3, 7]), episode_offsets=torch.tensor([0, 0, 0, 0]),
                                     episode_ends=z, J=f(), J_prompt=f(.5, .25, 1.), rewards=f(1., 0., 1.),
                                     group_ids=torch.tensor([2, 2, 2])),
        "no tokens": dict(token_offsets=torch.tensor([0, 0, 0]), episode_offsets=torch.tensor([0, 0, 0]),
                          episode_ends=z, J=f(), J_prompt=f(.5, .25), rewards=f(1., 0.), group_ids=torch.tensor([1, 1])),
        "every token in an episode": dict(token_offsets=torch.tensor([0, 1, 3]), episode_offsets=torch.tensor([0, 1, 3]),
                                          episode_ends=torch.tensor([1, 1, 2]), J=f(1., 0., .5), J_prompt=f(0., 1.),
                                          rewards=f(0., 1.), group_ids=torch.tensor([-5, -5])),
        "all groups of one": random_batch(9, n_groups=10**6),
        "one group": random_batch(40, n_groups=1),
    }


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", list(_edge_batches()))
@pytest.mark.parametrize("mode", sorted(MODES))
def test_edge_shapes(seed, backend, case, mode):
    batch = _edge_batches()[case]
    out = progress_advantages(**batch, mode=mode, backend=backend)
    assert_matches(out, progress_advantages_ref(**batch, mode=mode))
    if case == "all groups of one" and mode == "sum":
        assert (out.advantages == 0).all(), "a group of one must get 0"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs(seed, backend, dtype):
    batch = random_batch(20 if backend == "triton" else 80, quantised=False, dtype=dtype)
    out = progress_advantages(**batch, backend=backend)
    as64 = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    assert_matches(out, progress_advantages_ref(**as64))


def _bad(change: dict):
    batch = _hand_batch()
    batch.update(change)
    return batch


f64 = lambda *v: torch.tensor(v, dtype=torch.float64)
BAD_INPUTS = {
    "token_offsets too short": ({"token_offsets": torch.tensor([0, 10, 15, 20])}, "token_offsets"),
    "episode_offsets too long": ({"episode_offsets": torch.tensor([0, 3, 3, 4, 6, 6])}, "episode_offsets"),
    "J shorter than episode_ends": ({"J": f64(.1, .5, .3, .2, .6)}, "J"),
    "J_prompt too short": ({"J_prompt": f64(.2, .4, .1)}, "J_prompt"),
    "group_ids too long": ({"group_ids": torch.tensor([7, 3, 7, 7, 7])}, "group_ids"),
    "float token_offsets": ({"token_offsets": torch.tensor([0., 10, 15, 20, 30])}, "token_offsets"),
    "int32 episode_ends": ({"episode_ends": torch.tensor([2, 5, 9, 3, 4, 10], dtype=torch.int32)}, "episode_ends"),
    "integer J": ({"J": torch.tensor([0, 1, 0, 0, 1, 1])}, "J"),
    "float group_ids": ({"group_ids": torch.tensor([7., 3, 7, 7])}, "group_ids"),
    "2-D rewards": ({"rewards": f64(1, 0, 1, 1)[None]}, "rewards"),
    "rewards on another device": ({"rewards": torch.empty(4, dtype=torch.float64, device="meta")}, "rewards on meta"),
    "token_offsets decreasing": ({"token_offsets": torch.tensor([0, 10, 9, 20, 30])}, "token_offsets"),
    "token_offsets not from 0": ({"token_offsets": torch.tensor([1, 10, 15, 20, 30])}, "token_offsets"),
    "episode_offsets not ending at E": ({"episode_offsets": torch.tensor([0, 3, 3, 4, 5])}, "episode_offsets"),
    "episode_offsets decreasing": ({"episode_offsets": torch.tensor([0, 3, 2, 4, 6])}, "episode_offsets"),
    "episode end 0": ({"episode_ends": torch.tensor([0, 5, 9, 3, 4, 10])}, "episode_ends"),
    "episode end past the trace": ({"episode_ends": torch.tensor([2, 5, 11, 3, 4, 10])}, "episode_ends"),
    "episode ends equal": ({"episode_ends": torch.tensor([2, 5, 5, 3, 4, 10])}, "episode_ends"),
    "episode ends decreasing": ({"episode_ends": torch.tensor([2, 5, 9, 3, 10, 4])}, "episode_ends"),
    "J above 1": ({"J": f64(.1, .5, 1.01, .2, .6, .9)}, "J"),
    "J below 0": ({"J": f64(.1, -.5, .3, .2, .6, .9)}, "J"),
    "J NaN": ({"J": f64(.1, .5, .3, float("nan"), .6, .9)}, "J"),
    "J_prompt NaN": ({"J_prompt": f64(.2, float("nan"), .1, .3)}, "J_prompt"),
    "J_prompt above 1": ({"J_prompt": f64(.2, .4, 2., .3)}, "J_prompt"),
    "rewards NaN": ({"rewards": f64(1, float("nan"), 1, 1)}, "rewards"),
    "rewards inf": ({"rewards": f64(1, 0, float("inf"), 1)}, "rewards"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises(case):
    change, name = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=name):
        progress_advantages(**_bad(change))


@pytest.mark.parametrize("kw, name", [(dict(mode="mean"), "mode"), (dict(alpha=float("nan")), "alpha"),
                                      (dict(eps=0.0), "eps"), (dict(eps=-1e-6, scale_by_std=False), "eps")])
def test_bad_option_raises(kw, name):
    with pytest.raises(ValueError, match=name):
        progress_advantages(**_hand_batch(), **kw)


def test_forcing_a_missing_backend_raises(monkeypatch):
    with pytest.raises(BackendError, match="cuda"):
        progress_advantages(**_hand_batch(), backend="cuda")
    monkeypatch.setenv("MRT_KERNELS_BACKEND", "cuda")
    with pytest.raises(BackendError, match="cuda"):
        progress_advantages(**_hand_batch())


@pytest.mark.skipif(extension_error() is not None, reason="mrt_kernels._C is not built")
def test_compiled_op_registration():
    """Schema, fake (meta) kernel and dispatcher registration of torch.ops.mrt_kernels.progress_advantages."""
    from mrt_kernels.progress_advantages import _prepare

    p = _prepare(*_hand_batch().values(), 1.0, "dense", True, 1e-6)
    args = (p["token_offsets"], p["episode_offsets"], p["episode_ends"], p["J"], p["J_prompt"], p["rewards"],
            p["order"], p["sorted_group_ids"], p["num_tokens"], p["alpha"], p["mode"], p["scale_by_std"], p["eps"])
    torch.library.opcheck(torch.ops.mrt_kernels.progress_advantages.default, args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("scale_by_std", [True, False])
def test_gpu_matches_reference(seed, backend, mode, scale_by_std):
    batch = random_batch(2000, max_len=600, max_episodes=20, quantised=False, device="cuda")
    kw = dict(alpha=0.8, mode=mode, scale_by_std=scale_by_std)
    out = progress_advantages(**batch, **kw, backend=backend)
    assert all(o.is_cuda for o in out)
    assert_matches(out, progress_advantages_ref(**batch, **kw))
    for case, edge in _edge_batches().items():
        edge = {k: v.cuda() for k, v in edge.items()}
        assert_matches(progress_advantages(**edge, **kw, backend=backend), progress_advantages_ref(**edge, **kw))


# ----------------------------------------------------------------------------------------------------------------
# The CUDA kernels on the CPU: csrc/progress_advantages_kernels.cu compiled as host C++ with every thread of every
# block run in turn (its kernels use no shared memory and no barriers, so a serial run computes what the GPU computes).
# ----------------------------------------------------------------------------------------------------------------
_EMULATION_PRELUDE = r"""
#include <cmath>
#include <cstdint>
#define __global__
#define __device__
#define __forceinline__ inline
struct Dim { unsigned x = 0; };
static Dim blockIdx, threadIdx, blockDim, gridDim;
typedef int cudaError_t;
typedef void* cudaStream_t;
static const cudaError_t cudaSuccess = 0;
static cudaError_t cudaGetLastError() { return cudaSuccess; }
template <class Kernel, class... Args> void emulate(Kernel kernel, unsigned grid, unsigned block, Args... args) {
  gridDim.x = grid; blockDim.x = block;
  for (unsigned b = 0; b < grid; ++b)
    for (unsigned t = 0; t < block; ++t) { blockIdx.x = b; threadIdx.x = t; kernel(args...); }
}
"""
_EMULATION_ENTRY = r"""
extern "C" int emulated_launch(const int64_t* to, const int64_t* eo, const int64_t* ends, const double* J,
                               const double* Jp, const double* r, const int64_t* order, const int64_t* sid, int64_t B,
                               int64_t T, double alpha, int mode, int scale_by_std, double eps, double* scratch,
                               float* adv, float* progress, float* regret) {
  return progress_advantages_cuda_launch(to, eo, ends, J, Jp, r, order, sid, B, T, alpha, mode, scale_by_std != 0,
                                         eps, scratch, adv, progress, regret, nullptr);
}
"""


@pytest.fixture(scope="module")
def emulated_cuda(tmp_path_factory):
    import ctypes
    import re
    import shutil
    import subprocess

    if shutil.which("g++") is None:
        pytest.skip("no g++ to compile the host emulation")
    csrc = pathlib.Path(__file__).resolve().parents[2] / "csrc"
    src = (csrc / "progress_advantages_kernels.cu").read_text()
    src = src.replace("#include <cuda_runtime.h>", "")

    def launch(m):  # name<<<grid, block, 0, stream>>>( -> emulate(name, grid, block,
        grid, block, _, _ = m.group(2).rsplit(",", 3)
        return f"emulate({m.group(1)}, {grid.strip()}, {block.strip()}, "
    src, launches = re.subn(r"(\w+)<<<(.*?)>>>\(", launch, src, flags=re.S)
    assert launches == 3, f"expected the 3 kernel launches of the .cu, found {launches}"
    folder = tmp_path_factory.mktemp("cuda_emulation")
    (folder / "emulated.cpp").write_text(_EMULATION_PRELUDE + src + _EMULATION_ENTRY)
    # -I csrc: the headers the .cu includes (common.h, progress_advantages.h), plain C++ without nvcc.
    subprocess.run(["g++", "-O1", "-std=c++17", "-shared", "-fPIC", "-I", str(csrc), "-o",
                    str(folder / "emulated.so"), str(folder / "emulated.cpp")], check=True, capture_output=True)
    lib = ctypes.CDLL(str(folder / "emulated.so"))
    ptr = ctypes.c_void_p
    lib.emulated_launch.argtypes = [ptr] * 8 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_double, ctypes.c_int,
                                                ctypes.c_int, ctypes.c_double] + [ptr] * 4
    lib.emulated_launch.restype = ctypes.c_int

    def run(p: dict):
        B, E, T = p["rewards"].numel(), p["J"].numel(), p["num_tokens"]
        out = torch.full((T,), float("nan")), torch.full((E,), float("nan")), torch.full((B,), float("nan"))
        scratch = torch.full((2 * B,), float("nan"), dtype=torch.float64)
        names = ("token_offsets", "episode_offsets", "episode_ends", "J", "J_prompt", "rewards", "order",
                 "sorted_group_ids")
        err = lib.emulated_launch(*(p[n].data_ptr() for n in names), B, T, p["alpha"], p["mode"],
                                  int(p["scale_by_std"]), p["eps"], scratch.data_ptr(), *(o.data_ptr() for o in out))
        assert err == 0
        return out
    return run


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("scale_by_std", [True, False])
def test_cuda_kernels_emulated_on_cpu(seed, emulated_cuda, mode, scale_by_std):
    from mrt_kernels.progress_advantages import _prepare

    batches = [random_batch(150, quantised=False), random_batch(700, max_len=5, max_episodes=3)]
    batches += list(_edge_batches().values())
    for batch in batches:
        kw = dict(alpha=0.6, mode=mode, scale_by_std=scale_by_std, eps=1e-6)
        out = emulated_cuda(_prepare(*batch.values(), kw["alpha"], mode, scale_by_std, kw["eps"]))
        assert_matches(out, progress_advantages_ref(**batch, **kw))
