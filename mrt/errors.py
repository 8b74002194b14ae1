"""Errors a user can cause and fix, and how an entry point reports them: one `error: ...` line, exit code 2.

A user error names what to fix (a config key, a data file and row, a model or tokenizer folder, a hub id) and ends
the run without a traceback from the project's code, on every rank: under torchrun each rank meets the same error
(the config, the data and the model are read on every rank), prints its line and exits with 2. torchrun stops the
other workers as soon as one exits, so a failing rank first waits (at most PEER_WAIT_S) for the others to report
theirs: through the process group's store once it exists, by a short pause before (config errors, met within
milliseconds of each other). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

PEER_WAIT_S = 30.0      # a failing rank waits this long at most for the others (skewed by slow model loads)
EARLY_PAUSE_S = 1.0     # before the process group exists: the ranks parse the same arguments at the same time


class ModelFolderError(ValueError):
    """A model or tokenizer folder that is missing, incomplete or unreadable; the message starts with the key."""


class HubError(ValueError):
    """A hub id that cannot be fetched (offline, unknown repository or revision); the message says which."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every exception type that is the user's to fix (imported here so that each module keeps its own class)."""
    from .checkpoint import BrokenCheckpoint, CheckpointWriteError
    from .config import ConfigError
    from .data import DataError
    from .models.hf_checkpoint import CheckpointError
    from .trainer import TrainingStopped
    return (ConfigError, DataError, CheckpointError, ModelFolderError, HubError, TrainingStopped, BrokenCheckpoint,
            CheckpointWriteError)


def one_line(exc: BaseException) -> str:
    """The message on one line (a multi-line message would look like several errors in a rank's log)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def run_cli(main: Callable[[list[str]], object], argv: list[str]) -> int:
    """main(argv), with a user error reported as `error: ...` on stderr and exit code 2; returns the exit code."""
    try:
        main(argv)
    except user_error_types() as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        wait_for_peers()
        return 2
    return 0


def wait_for_peers(timeout: float = PEER_WAIT_S) -> None:
    """Under torchrun: let the other ranks that meet the same error print it before this one exits."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return
    from .distributed import peer_store
    store = peer_store()
    if store is None:
        time.sleep(EARLY_PAUSE_S)
        return
    try:
        done = store.add("mrt/user_error", 1)
        deadline = time.monotonic() + timeout
        while done < world and time.monotonic() < deadline:
            time.sleep(0.05)
            done = store.add("mrt/user_error", 0)
    except Exception:  # noqa: BLE001 (the store went away with a peer: nothing left to wait for)
        pass
