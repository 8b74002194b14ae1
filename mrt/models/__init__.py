"""Llama-family decoders (Llama 3.x, Qwen2/2.5, Qwen3) loaded from Hugging Face folders; one module for packed
training forwards and paged-KV-cache generation."""
from .attention_metadata import PackedMetadata, PagedMetadata
from .causal_lm import CausalLM
from .config import ARCHITECTURES, ArchConfig
from .hf_checkpoint import CheckpointError
from .packing import packed_metadata, packed_positions
from .tokenizer import LazyTokenizer, MissingTokenizerError, load_tokenizer

__all__ = ["ARCHITECTURES", "ArchConfig", "CausalLM", "CheckpointError", "LazyTokenizer", "MissingTokenizerError",
           "PackedMetadata", "PagedMetadata", "load_tokenizer", "packed_metadata", "packed_positions"]
