"""Prices of the ops a step runs: each a roofline, max(FLOPs / rate, bytes / bandwidth), tallied by part.

A `Part` accumulates what a part of the step (trace decode, branch prefill, the update's forward and backward, ...)
costs: its FLOPs, bytes, and its seconds split by what bound them: compute (FLOPs / rate was the larger), memory
(bytes / bandwidth was) or launches (the host: kernel launches and the engine's Python, when the device waited on
them). `bound` names the largest of the three.

Ops of one forward over R rows (tokens), in a model of L layers (shape.py has the counts):
- layers' products: 2 * matmul_params * R FLOPs; the weights are streamed once per forward (L * matmul_params
  elements), plus the rows' activations in and out;
- elementwise work (norms, rope, SiLU, residual sums) and the products' inputs and outputs: about 26*d + 6*I
  elements per row and layer, read or written (free when they fit the profile's cache);
- attention: 4*H*D FLOPs per (query, key) pair and layer; a decode query reads its whole context's K/V once
  (kv_bytes_per_token per key); a prefill chunk of p queries over c + p keys re-reads the keys once per 128-query
  tile on a GPU (flash-attention's outer loop);
- lm head for the rows that are sampled (2*d*V FLOPs each, the V x d weight once) and the sampler (about 8 passes
  over a (rows, V) fp32 block: temperature, softmax, top-p sort and cumsum, draw).
Launches per forward: profile.launches_per_layer * L + profile.launches_per_step (on a GPU ~15 kernels a layer, as
mrt/rollout/cuda_graphs.py counts them, and ~30 a step for the embedding, final norm, head, sampler and metadata
copies; on the CPU every ATen op dispatched, counted by the probe on the tiny model's forward).
"""
from __future__ import annotations

from dataclasses import dataclass

from .profiles import DeviceProfile
from .shape import ModelShape

SAMPLER_PASSES = 8
Q_TILE = 128


@dataclass
class Part:
    flops: float = 0.0
    bytes: float = 0.0
    compute_s: float = 0.0
    memory_s: float = 0.0
    launch_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.compute_s + self.memory_s + self.launch_s

    @property
    def bound(self) -> str:
        if self.seconds == 0:
            return "-"
        return max((("compute", self.compute_s), ("memory", self.memory_s), ("launches", self.launch_s)),
                   key=lambda kv: kv[1])[0]

    def add_op(self, flops: float, nbytes: float, profile: DeviceProfile, dtype_bytes: int, *,
               weight_bytes: float = 0.0) -> float:
        """One op: its roofline time goes to compute or memory by which side was larger -> the seconds.
        `weight_bytes` (a product's weight, among nbytes) stream at the profile's weight rate."""
        tc = flops / profile.flop_rate(dtype_bytes)
        tm = (nbytes - weight_bytes) / profile.byte_rate + weight_bytes / profile.weight_byte_rate
        self.flops += flops
        self.bytes += nbytes
        if tc >= tm:
            self.compute_s += tc
        else:
            self.memory_s += tm
        return max(tc, tm)

    def __iadd__(self, other: "Part") -> "Part":
        self.flops += other.flops
        self.bytes += other.bytes
        self.compute_s += other.compute_s
        self.memory_s += other.memory_s
        self.launch_s += other.launch_s
        return self

    def scaled(self, k: float) -> "Part":
        return Part(self.flops * k, self.bytes * k, self.compute_s * k, self.memory_s * k, self.launch_s * k)

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "flops": self.flops, "bytes": self.bytes, "compute_s": self.compute_s,
                "memory_s": self.memory_s, "launch_s": self.launch_s, "bound": self.bound}


def launches_per_forward(shape: ModelShape, profile: DeviceProfile) -> float:
    return profile.launches_per_layer * shape.layers + profile.launches_per_step


def elementwise_bytes(shape: ModelShape, rows: float, profile: DeviceProfile) -> float:
    """Norms, rope, SiLU, residual sums; nothing when one op's (rows, max(d, I)) tensor fits the profile's cache
    (a CPU decode step's few rows: the ops then cost their launches, counted apart)."""
    if rows * max(shape.hidden, shape.intermediate) * shape.dtype_bytes <= profile.cache_bytes:
        return 0.0
    return rows * shape.layers * (26 * shape.hidden + 6 * shape.intermediate) * shape.dtype_bytes


def linear_op(part: Part, shape: ModelShape, profile: DeviceProfile, rows: float, *, weight_share: float = 1.0) \
        -> float:
    """The layers' products for `rows` rows; `weight_share` of the weight stream is charged here (a forward shared by
    several parts splits its one weight read among them by rows)."""
    b = shape.dtype_bytes
    w = shape.matmul_weight_bytes * weight_share
    t = part.add_op(shape.flops_per_token * rows, w, profile, b, weight_bytes=w)
    return t + part.add_op(0.0, elementwise_bytes(shape, rows, profile), profile, b)


def head_op(part: Part, shape: ModelShape, profile: DeviceProfile, rows: float, *, weight_share: float = 1.0,
            sampler: bool = True) -> float:
    """lm head (and the sampler) for `rows` sampled rows."""
    b = shape.dtype_bytes
    w = shape.head_weight_bytes * weight_share
    t = part.add_op(shape.head_flops_per_row * rows, w, profile, b, weight_bytes=w)
    if sampler:
        t += part.add_op(0.0, rows * shape.vocab * 4 * SAMPLER_PASSES, profile, b)
    return t


def attention_op(part: Part, shape: ModelShape, profile: DeviceProfile, pairs: float, kv_reads: float) -> float:
    """`pairs` (query, key) pairs, `kv_reads` keys' K/V read (each kv_bytes_per_token)."""
    return part.add_op(shape.attn_flops_per_pair * pairs, kv_reads * shape.kv_bytes_per_token, profile,
                       shape.dtype_bytes)


def prefill_kv_reads(c: int, p: int, on_gpu: bool) -> float:
    """Keys read by a prefill chunk of p queries after c cached tokens (re-read once per query tile on a GPU)."""
    tiles = -(-p // Q_TILE) if on_gpu else 1
    return tiles * (c + p)
