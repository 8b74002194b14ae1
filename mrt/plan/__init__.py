"""What an MRT step costs on a GPU node, on paper: `python -m mrt.plan --config FILE --gpu h100|h200|cpu`.

The data flow, one file each: shape (config.json -> counts) -> profiles (device rates; `cpu` measured) -> memory
(weights, gradients, optimizer, activations, generation copy, the KV cache left) -> workload (the traces a rank
generates) -> sim_engine + pricing_runner (the engine's own step loop, scheduler and block manager on scripted
sequences, each step priced by costs' rooflines) -> step (rollout, update, optimizer) -> planner (MRT, its variants
and the GRPO twin from twin) -> report / cli. gpu_check predicts benchmarks/gpu_check.sh's rows.
"""
from .planner import make_plan  # noqa: F401
