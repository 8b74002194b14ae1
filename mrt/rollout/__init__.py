"""The rollout engine: paged, prefix-shared KV cache, continuous batching, branch forks for the meta-prover.

Data flow: prompt -> sequence -> scheduler / block_manager -> runner -> model -> sampler -> engine outputs.
"""
from .block_manager import BlockManager
from .engine import Engine
from .outputs import BranchOutput, CompletionOutput, RequestOutput
from .scheduler import Scheduler
from .sequence import ForkRequest, SamplingParams, Sequence, SequenceView

__all__ = ["BlockManager", "BranchOutput", "CompletionOutput", "Engine", "ForkRequest", "RequestOutput",
           "SamplingParams", "Scheduler", "Sequence", "SequenceView"]
