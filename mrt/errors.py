"""Errors a user can cause and fix: every one derives from `UserError`, and an entry point (mrt.cli.run_cli) reports
it as one `error: ...` line with exit code 2, where anything else is a bug and keeps its traceback.

A user error names what to fix (a config key, a data file and row, a model or tokenizer folder, a hub id, a
checkpoint) and its message says so on its own. A class raised by one module lives beside it (DataError in mrt.data,
CheckpointError in mrt.models.hf_checkpoint, BrokenCheckpoint in mrt.checkpoint, RewardError in mrt.reward_fn,
TrainingStopped in mrt.trainer, ...); the ones raised across layers live here (ConfigError, re-exported by
mrt.config; ModelFolderError; HubError). This module imports nothing from mrt, so every module may import it without
a circle. UserError is a ValueError, as the user errors were before it existed: callers that catch ValueError still
catch them.
"""
from __future__ import annotations


class UserError(ValueError):
    """An error the user caused and can fix; the message says what to fix (a key, a file and row, a folder, an id)."""


class ConfigError(UserError):
    """A bad config key or value; the message starts with the dotted key (also importable from mrt.config)."""


class ModelFolderError(UserError):
    """A model or tokenizer folder that is missing, incomplete or unreadable; the message starts with the key."""


class HubError(UserError):
    """A hub id that cannot be fetched (offline, unknown repository or revision); the message says which."""


def one_line(exc: BaseException) -> str:
    """The message on one line (a multi-line message would look like several errors in a rank's log)."""
    return " ".join(str(exc).split()) or type(exc).__name__
