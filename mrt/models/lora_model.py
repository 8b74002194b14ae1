"""The trainer's handle on a LoRA run (model.lora): adapters on the model (mrt.models.lora), the model the engine runs,
the merge after each update, and the checkpoint's files in peft's format (mrt.models.lora_files).

`apply_lora` returns None when model.lora.r is 0, and the trainer then runs as it always did. The handle stands in for
the model in mrt.checkpoint: `save_pretrained` writes the adapter (and `merged/` with model.lora.save_merged),
`load_checkpoint_folder` reads it back on resume and merges it into the generation copy.
"""
from __future__ import annotations

import os

from torch import nn

from ..errors import ConfigError
from .lora import add_adapters, check_available, merge_into, merged_copy
from .lora_files import load_adapter, save_adapter, save_merged


class LoraModel:
    """The trainer's handle on an adapted model: the engine's model (`generation_model`), the merge after each
    update (`sync`), and checkpoint files in peft's format (`save_pretrained`, `load_checkpoint_folder`: what
    mrt.checkpoint calls on the model it is given)."""

    def __init__(self, model: nn.Module, settings, base_model_path: str | None):
        """model: already adapted (`add_adapters`) as settings (model.lora) say; base_model_path: its base's folder,
        named in the adapter's config."""
        self.model, self.settings, self.base_model_path = model, settings, base_model_path
        self._gen, self._pairs = None, []

    def generation_model(self, strategy: str = "none") -> nn.Module:
        """The model the engine runs: the merged copy, or the training model itself (generation: adapters)."""
        if strategy == "fsdp":
            raise ConfigError("model.lora: not supported with FSDP2 yet (distributed.strategy: fsdp); use ddp")
        if self.settings.generation == "adapters":
            return self.model
        if self._gen is None:
            self._gen, self._pairs = merged_copy(self.model)
        return self._gen

    def sync(self) -> None:
        """After an update (or a resume): the merged copy's weights, in place. Nothing to do with adapters."""
        merge_into(self._pairs)

    def save_pretrained(self, path: str) -> None:
        save_adapter(self.model, path, self.settings, self.base_model_path)
        if self.settings.save_merged:
            save_merged(self.model, os.path.join(path, "merged"))

    def load_checkpoint_folder(self, path: str) -> None:
        load_adapter(self.model, path, self.settings)
        self.sync()


def apply_lora(model: nn.Module, settings, base_model_path: str, *, seed: int | None = None) -> LoraModel | None:
    """LoRA on model as model.lora asks (None when model.lora.r is 0: the model is untouched)."""
    if settings is None or settings.r == 0:
        return None
    check_available(settings)
    add_adapters(model, settings.r, settings.alpha, list(settings.target_modules), settings.dropout, seed=seed)
    return LoraModel(model, settings, base_model_path)
