"""Heartbeat watchdog of a distributed run: a rank that dies ends the others within seconds, with a line naming it.

Without it, the survivors of a rank that died (killed, out of memory, a bug's traceback) block in their next
collective until the process group's timeout: minutes of a node doing nothing. Each rank runs a daemon thread that,
every BEAT_S seconds, through the run's rendezvous store (the one torchrun's agent hosts):
- bumps its own heartbeat counter, and first publishes its host and pid;
- looks at every peer: a peer that left on purpose (`stop_watchdog` at the end of the run, or after a user error,
  which mrt.cli.run_cli handles on every rank) is ignored from then on; one that left with an error, one whose process
  is gone (a peer on this host: its pid is checked, a zombie counts as gone), or one whose heartbeat stalled for
  DEAD_AFTER_S (a peer on another host) is lost.
A lost peer ends this rank at once: `error: rank R of W is gone (why); stopping rank r ...` on stderr and exit code
EXIT_CODE (not 2: it is no user error, so `torchrun --max-restarts N` restarts the group, which resumes from the last
checkpoint with `--checkpoint.resume`). A store that stays unreachable for DEAD_AFTER_S (the launcher, or rank 0
hosting the store without torchrun, is gone) ends the rank the same way.
Keys are scoped by torchrun's restart count, so a restarted group never reads the heartbeats of the last one.
Under torchrun the agent itself stops the survivors (SIGTERM) as soon as a worker dies: the SIGTERM handler checks the
peers once and names the lost one before the rank ends.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

from .errors import UserError, one_line

BEAT_S = 1.0
DEAD_AFTER_S = 30.0
EXIT_CODE = 1

_WATCHDOG: "_Watchdog | None" = None


def _host_id() -> str:
    """This machine (pids are comparable only between processes of one host and one boot)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def pid_alive(pid: int) -> bool:
    """Whether process pid runs (a zombie, dead but not yet reaped by its launcher, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


class _Watchdog(threading.Thread):
    def __init__(self, store, rank: int, world: int, *, beat_s: float = BEAT_S, dead_after_s: float = DEAD_AFTER_S,
                 on_lost=None):
        super().__init__(name="mrt-watchdog", daemon=True)
        self.store, self.rank, self.world = store, rank, world
        self.beat_s, self.dead_after_s = beat_s, dead_after_s
        self.prefix = f"mrt/watchdog/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        self.on_lost = on_lost or _end_process
        self.host = _host_id()
        self._stop = threading.Event()
        self._peers: dict[int, dict] = {}          # rank -> {"who": {...} | None, "beat": n, "seen": t}
        self._left: set[int] = set()

    def _key(self, kind: str, rank: int) -> str:
        return f"{self.prefix}{kind}/{rank}"

    def publish(self) -> None:
        self.store.set(self._key("who", self.rank), json.dumps({"host": self.host, "pid": os.getpid()}))
        self.store.add(self._key("beat", self.rank), 1)

    def run(self) -> None:
        now = time.monotonic()
        self._peers = {r: {"who": None, "beat": -1, "seen": now} for r in range(self.world) if r != self.rank}
        store_ok = now
        while not self._stop.wait(self.beat_s):
            try:
                self.store.add(self._key("beat", self.rank), 1)
                lost = self.check()
                store_ok = time.monotonic()
            except Exception as exc:  # noqa: BLE001 (the store itself is unreachable)
                if self._stop.is_set():
                    return
                if time.monotonic() - store_ok > self.dead_after_s:
                    lost = (0, f"the run's rendezvous store is unreachable for {self.dead_after_s:.0f} s "
                               f"({type(exc).__name__}): the launcher or rank 0 is gone")
                else:
                    continue
            if lost is not None and not self._stop.is_set():
                self.on_lost(self.rank, self.world, *lost)
                return

    def check(self) -> tuple[int, str] | None:
        """(lost rank, why) for the first lost peer, or None."""
        now = time.monotonic()
        for r, p in self._peers.items():
            if r in self._left:
                continue
            if self.store.check([self._key("exit", r)]):
                status = self.store.get(self._key("exit", r)).decode()
                if status.startswith("failed"):
                    return r, f"it stopped with an error: {status.removeprefix('failed: ')}"
                self._left.add(r)
                continue
            if p["who"] is None and self.store.check([self._key("who", r)]):
                p["who"] = json.loads(self.store.get(self._key("who", r)))
            who = p["who"]
            if who is not None and who["host"] == self.host and not pid_alive(int(who["pid"])):
                return r, f"its process {who['pid']} on this host ended"
            beat = self.store.add(self._key("beat", r), 0)
            if beat != p["beat"]:
                p["beat"], p["seen"] = beat, now
            elif now - p["seen"] > self.dead_after_s:
                where = f"process {who['pid']} on {who['host'].split('/')[0]}" if who else "never started"
                return r, f"no heartbeat for {now - p['seen']:.0f} s ({where})"
        return None

    def stop(self, status: str) -> None:
        self._stop.set()
        try:
            self.store.set(self._key("exit", self.rank), status)
        except Exception:  # noqa: BLE001 (the store went away: the peers find this rank gone by its pid)
            pass


def _end_process(rank: int, world: int, lost: int, why: str) -> None:
    print(f"error: rank {lost} of {world} is gone ({why}); stopping rank {rank} (resume from the last checkpoint "
          "with --checkpoint.resume; torchrun --max-restarts does so by itself)", file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)


def start_watchdog(store, rank: int, world: int) -> None:
    """Start this rank's watchdog (once per process; init_distributed calls it). MRT_WATCHDOG=0 turns it off."""
    global _WATCHDOG
    if store is None or world <= 1 or _WATCHDOG is not None or os.environ.get("MRT_WATCHDOG", "1") == "0":
        return
    wd = _Watchdog(store, rank, world)
    wd.publish()
    wd.start()
    _WATCHDOG = wd
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    import atexit
    atexit.register(stop_watchdog, "ok")     # a process that ends normally without cleanup() is no lost peer


def _on_sigterm(signum, frame) -> None:
    """torchrun stops the other workers with SIGTERM when one fails: name the lost peer first, if one is gone."""
    wd = _WATCHDOG
    lost = None
    if wd is not None:
        try:
            lost = wd.check()
        except Exception:  # noqa: BLE001 (the store is gone with the launcher)
            lost = None
    if lost is not None:
        wd._stop.set()
        _end_process(wd.rank, wd.world, *lost)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def stop_watchdog(status: str | None = None) -> None:
    """Stop this rank's watchdog and tell the peers how it leaves: by default from the exception being handled
    (none, Ctrl-C or a user error: it leaves on purpose; any other: `failed`, and the peers stop at once)."""
    global _WATCHDOG
    wd = _WATCHDOG
    if wd is None:
        return
    if status is None:
        exc = sys.exc_info()[1]
        status = "ok"
        if exc is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            if not isinstance(exc, UserError):
                status = f"failed: {type(exc).__name__}: {one_line(exc)[:300]}"
    if status.startswith("failed"):
        settle()          # the error may be a peer's death seen by a collective: name the peer, if so
    _WATCHDOG = None
    wd.stop(status)


def settle(timeout: float = 5.0) -> None:
    """After an error in this rank under a watchdog: give it up to timeout seconds to find a lost peer (a collective
    fails as soon as a peer's connection drops, before the heartbeat tells why); it ends the process if it does."""
    wd = _WATCHDOG
    if wd is None or not wd.is_alive():
        return
    deadline = time.monotonic() + timeout
    while wd.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
