"""How an entry point (train.py, `python -m mrt.eval`, `python -m mrt.plan`) ends on a user error: one
`error: ...` line on stderr and exit code 2, on every rank, without a traceback from the project's code.

A user error is a mrt.errors.UserError; anything else is a bug and keeps its traceback. Under torchrun each rank meets
the same error (the config, the data and the model are read on every rank), prints its line and exits with 2.
torchrun stops the other workers as soon as one exits, so a failing rank first waits (at most PEER_WAIT_S) for the
others to report theirs: through the process group's store once it exists, by a short pause before (config errors,
met within milliseconds of each other).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

from .errors import ConfigError, UserError, one_line

PEER_WAIT_S = 30.0      # a failing rank waits this long at most for the others (skewed by slow model loads)
EARLY_PAUSE_S = 1.0     # before the process group exists: the ranks parse the same arguments at the same time


def run_cli(main: Callable[[list[str]], object], argv: list[str]) -> int:
    """main(argv), with a user error reported as `error: ...` on stderr and exit code 2; returns the exit code."""
    try:
        main(argv)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        wait_for_peers()
        return 2
    return 0


def wait_for_peers(timeout: float = PEER_WAIT_S) -> None:
    """Under torchrun: let the other ranks that meet the same error print it before this one exits."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return
    # Imported here, not at the top: mrt.distributed imports torch, which a single-process CLI
    # (`python -m mrt.plan`) never needs. (No circle: mrt.distributed does not import this module.)
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


def train_args(argv: list[str]) -> tuple[str | None, list[str], bool]:
    """train.py's command line -> (the --config file or None, the dotted overrides for mrt.config.parse_overrides,
    whether --check was given: validate everything, say what would run, and stop, mrt.check). `--resume` is short
    for `--checkpoint.resume`. argv is not changed."""
    argv, path = list(argv), None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config: needs a file")
        path = argv[i + 1]
        del argv[i:i + 2]
    else:
        for i, a in enumerate(argv):
            if a.startswith("--config="):
                path = a.split("=", 1)[1]
                del argv[i]
                break
    if "--resume" in argv:       # shorthand of --checkpoint.resume
        argv.remove("--resume")
        argv.append("--checkpoint.resume")
    check = "--check" in argv
    if check:
        argv.remove("--check")
    return path, argv, check
