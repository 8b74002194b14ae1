"""The rollout engine: paged, prefix-shared KV cache, continuous batching, branch forks for the meta-prover.

Data flow: prompt -> sequence -> scheduler / block_manager -> runner -> model -> sampler -> engine outputs
(`Engine.generate` returns a Generation: the outputs and the call's GenerationStats).
"""
from .block_manager import BlockManager
from .engine import Engine
from .outputs import BranchOutput, CompletionOutput, Generation, RequestOutput
from .scheduler import Scheduler
from .sequence import ForkRequest, SamplingParams, Sequence, SequenceView
from .stats import GenerationStats

__all__ = ["BlockManager", "BranchOutput", "CompletionOutput", "Engine", "ForkRequest", "Generation",
           "GenerationStats", "RequestOutput", "SamplingParams", "Scheduler", "Sequence", "SequenceView"]
