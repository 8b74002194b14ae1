"""A rank of a 2-process gloo run for tests/trainer/test_faults_distributed.py: `python dist_worker.py MODE`.

Rank 1 kills itself with SIGKILL after a few all-reduces; rank 0 then is inside a collective (MODE=collective) or
busy outside any (MODE=busy: a minute of work, as in a long generation), or rank 1 raises a bug (MODE=bug)."""
import os
import signal
import sys
import time

import torch

from mrt.distributed import cleanup, init_distributed


def main(mode: str) -> None:
    d = init_distributed("gloo", "cpu")
    t = torch.ones(4)
    try:
        for i in range(1000):
            if d.rank == 1 and i == 3:
                if mode == "bug":
                    raise RuntimeError("a bug in rank 1")
                os.kill(os.getpid(), signal.SIGKILL)
            if d.rank == 0 and i == 3 and mode == "busy":
                time.sleep(120)
            torch.distributed.all_reduce(t)
            time.sleep(0.05)
    finally:
        cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
