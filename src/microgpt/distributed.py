"""Running under `torchrun`: which rank this process is, the process group, and the collectives.

torchrun (PyTorch's launcher) starts one process per rank and tells each, through environment
variables, its `RANK`, `WORLD_SIZE`, `LOCAL_RANK` and where to meet (`MASTER_ADDR`,
`MASTER_PORT`). Without them (or with a world of one) microgpt runs as one process and this
module does nothing. Importing it imports nothing heavy; torch comes in when a group is made.

Collectives fail rather than hang: a rank that dies closes its connections, and its peers' next
collective raises at once (gloo: "Connection closed by peer"); a rank that hangs is caught by the
group's timeout; and torchrun's agent sends SIGTERM to the other ranks on its node when one of
its workers dies. Each of these becomes one `UserError` line that names the ranks that stopped
answering, found by asking every rank to check in at the launcher's key-value store within
`CHECK_IN_S` seconds. While ranks work apart (an ablation's shares, `Group.apart`), a rank
that hangs without dying is seen through the same store: each rank counts its progress there
(`Group.beat`, called by its work), and a rank whose count stands still for `stall_timeout`
seconds is named by the rank that watches it (rank 0 watches every rank, the others rank 0).

Every rank would print the same line: the first rank to fail claims the failure at the store
(`error_line`) and alone prints it, named; the others end with the same exit status, silently.

Values travel as JSON in uint8 tensors, never pickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from microgpt.errors import PeerError, UserError
from microgpt.stall import Beat

TIMEOUT_S = 120  # default: meeting, or a collective, waiting longer than this is an error
LONG_TIMEOUT = timedelta(days=30)  # `Group.gather_json(..., patient=True)`: ranks' work differs
CHECK_IN_S = 2.0  # after a failure: how long the survivors wait for each other to check in
WATCH_EVERY_S = 0.5  # how often a rank reads the progress of the ranks it watches
POLL_S = 0.05  # how often a patient wait looks whether it is over


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def main(self) -> bool:
        """Rank 0 prints, writes files and samples."""
        return self.rank == 0

    def share(self, items: list) -> list:
        """This rank's contiguous part of `items`, in rank order: sizes differ by at most one,
        and a rank may get none (fewer items than ranks)."""
        n = len(items)
        return items[n * self.rank // self.size : n * (self.rank + 1) // self.size]


SINGLE = World(0, 1, 0)


def world_from_env() -> World:
    """This process's place, from torchrun's variables; `SINGLE` when there are none."""
    size = os.environ.get("WORLD_SIZE")
    if size is None:
        return SINGLE
    try:
        world = World(int(os.environ["RANK"]), int(size), int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError):
        raise UserError(
            "WORLD_SIZE is set but RANK is missing or not an integer: start microgpt with "
            "torchrun, or unset WORLD_SIZE"
        ) from None
    if not 0 <= world.rank < world.size:
        raise UserError(f"RANK {world.rank} is outside WORLD_SIZE {world.size}: check the launcher")
    return world


class Group:
    """The process group of a multi-rank run, and the few collectives microgpt needs.

    `device` is where the tensors to reduce live: gloo reduces CPU tensors, NCCL CUDA ones (one
    GPU per local rank). `patient=True` adds two gloo groups whose timeout is a month, for ranks
    that work apart for long (an ablation's ranks train their shares and finish at different
    times): one for a gather at the end, one for `apart()`, which watches the other ranks
    meanwhile. A rank that dies still ends them at once, since its connections close; with
    `stall_timeout`, so does one that makes no progress (`beat`) for that many seconds, from
    `apart()` to the end of the patient gather."""

    def __init__(
        self,
        world: World,
        device: str = "cpu",
        timeout_s: float = TIMEOUT_S,
        patient: bool = False,
        then: str = "run the same command again",
        stall_timeout: float | None = None,
    ):
        import torch
        import torch.distributed as dist

        self.world, self.dist, self.torch = world, dist, torch
        self.then = then  # what the user can do after a failure: the end of its message
        self.device = torch.device(device)
        backend = "gloo"
        if self.device.type == "cuda":
            backend = "nccl"
            self.device = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(self.device)
        self._failing = False
        self._cause = None  # why `apart()`'s watcher stopped this rank
        self._stalled = None  # the line of the stall watch, when it stopped this rank
        self.stall_timeout = stall_timeout
        self._apart_over = threading.Event()  # ends the stall watch
        self._beat = None
        self._on_sigterm = signal.signal(signal.SIGTERM, self._terminated)
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        try:
            if not world.main:  # a master that never comes: our line, not c10d's retry logs
                _wait_for_master(timeout_s)
            dist.init_process_group(
                backend,
                rank=world.rank,
                world_size=world.size,
                timeout=timedelta(seconds=timeout_s),
            )
            self.patient = self._watch = None
            if patient:
                self.patient = dist.new_group(backend="gloo", timeout=LONG_TIMEOUT)
                self._watch = dist.new_group(backend="gloo", timeout=LONG_TIMEOUT)
        except (RuntimeError, ValueError, OSError) as e:  # DistStoreError is a RuntimeError
            signal.signal(signal.SIGTERM, self._on_sigterm)
            raise UserError(
                f"rank {world.rank}: the {world.size} ranks did not all meet at {where} within "
                f"{timeout_s:g} s ({_first_line(e)}): start every rank (torchrun: every node, "
                "with the same --rdzv-endpoint and --nnodes)"
            ) from None
        self.store = _client_store(timeout_s)
        if self.store is not None and stall_timeout is not None:
            self._beat = Beat(self._count_progress)

    @property
    def backend(self) -> str:
        return self.dist.get_backend()

    # collectives ---------------------------------------------------------------------------------

    def sum_(self, tensor) -> None:
        """All-reduce `tensor` in place: every rank gets the sum over ranks (the same bits on
        every rank: the reduction is done once and its result shared)."""
        self._guard(self.dist.all_reduce, tensor)

    def broadcast_bytes(self, data: bytes | None = None) -> bytes:
        """Rank 0's `data` on every rank."""
        torch = self.torch
        size = torch.tensor([len(data) if self.world.main else 0], device=self.device)
        self._guard(self.dist.broadcast, size, 0)
        buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.world.main and data:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        self._guard(self.dist.broadcast, buf, 0)
        return tensor_bytes(buf)

    def broadcast_json(self, value=None):
        """Rank 0's `value` (JSON-serialisable) on every rank."""
        data = json.dumps(value).encode() if self.world.main else None
        return json.loads(self.broadcast_bytes(data).decode())

    def gather_json(self, value, patient: bool = False) -> list | None:
        """Every rank's `value` (JSON-serialisable), as a list on rank 0 (None elsewhere).
        `patient`: on the long-timeout group (see the class)."""
        torch = self.torch
        group = self.patient if patient else None
        device = torch.device("cpu") if patient else self.device
        data = json.dumps(value).encode()
        gather = self._waited(self.dist.all_gather) if patient else self.dist.all_gather
        sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(self.world.size)]
        mine = torch.tensor([len(data)], dtype=torch.int64, device=device)
        self._guard(gather, sizes, mine, group)
        longest = max(int(s.item()) for s in sizes)
        buf = torch.zeros(longest, dtype=torch.uint8, device=device)
        if data:
            buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        parts = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in sizes]
        self._guard(gather, parts, buf, group)
        if patient:
            self._apart_over.set()  # every rank is here: nothing left to watch
        if not self.world.main:
            return None
        return [json.loads(tensor_bytes(p[: int(s.item())])) for p, s in zip(parts, sizes)]

    def on_main(self, fn):
        """`fn()` on rank 0 alone, its (JSON) result on every rank; a `UserError` it raises is
        raised on every rank, so that all of them stop with rank 0's message."""
        outcome = None
        if self.world.main:
            try:
                outcome = {"value": fn()}
            except UserError as e:
                outcome = {"error": str(e)}
        outcome = self.broadcast_json(outcome)
        if "error" in outcome:
            said = outcome["error"]
            raise UserError(said if self.world.main else f"rank 0: {said}")
        return outcome["value"]

    # progress ------------------------------------------------------------------------------------

    def _count_progress(self, now: float) -> None:
        try:
            self.store.add(_key(f"progress/{self.world.rank}"), 1)
        except Exception:  # noqa: BLE001 - the store went with the launcher: the work goes on
            pass

    def beat(self) -> None:
        """This rank progressed (its work calls this: a step, an evaluated document, a stack
        handed to a worker): counted at the store now and then (`stall.Beat`), for the ranks
        that watch this one. Without a stall watch, nothing."""
        if self._beat is not None:
            self._beat()

    def _waited(self, collective):
        """`collective` (on a patient group) as a function that waits for it here, a little at
        a time, rather than inside torch: a signal (the watchers' SIGTERM) can then stop the
        wait, and the wait beats, since a rank that waits for the others is not stalled."""

        def run(*args) -> None:
            work = collective(*args, async_op=True)
            while not work.is_completed():  # a collective's work completes on its own
                time.sleep(POLL_S)
                self.beat()
            work.wait()  # raises its error, if it failed

        return run

    @contextlib.contextmanager
    def apart(self):
        """While the ranks work without collectives (for minutes or hours): a thread waits for
        a word from every other rank, which each sends when its work is done; a rank that dies
        instead closes its connections, and the thread stops this rank at once (a SIGTERM to
        itself, which raises `PeerError` in the main thread). torchrun's agent does the same for
        the ranks of the dead rank's own node; this also stops those of the other nodes."""
        torch, dist, me = self.torch, self.dist, self.world.rank
        peers = [r for r in range(self.world.size) if r != me]

        def watch() -> None:
            words = {p: torch.zeros(1, dtype=torch.uint8) for p in peers}
            pending = {p: dist.irecv(words[p], src=p, group=self._watch) for p in peers}
            for p, work in pending.items():
                try:
                    work.wait()
                except RuntimeError as e:
                    if not self._failing:
                        self._cause = f"rank {p}'s connection: {_shorten(_first_line(e))}"
                        os.kill(os.getpid(), signal.SIGTERM)
                    return

        watcher = threading.Thread(target=watch, name="microgpt-watch", daemon=True)
        watcher.start()
        if self._beat is not None:
            self.beat()
            stall = threading.Thread(target=self._watch_progress, name="microgpt-stall")
            stall.daemon = True
            stall.start()
        yield
        self._guard(self._say_done, peers)
        self._watcher = watcher  # joined by `close`, once every rank has said it is done

    def _say_done(self, peers: list[int]) -> None:
        done = self.torch.ones(1, dtype=self.torch.uint8)
        for work in [self.dist.isend(done, dst=p, group=self._watch) for p in peers]:
            work.wait()  # a byte into the socket: each peer has waited for it since `apart()`

    def _watch_progress(self) -> None:
        """The stall watch (a thread that only reads): every WATCH_EVERY_S, the progress counts
        of the ranks this one watches (rank 0 every other rank, the others rank 0); one that
        stands still for `stall_timeout` seconds stops this rank (SIGTERM to itself, which
        raises `PeerError` in the main thread) with a line naming it. It ends when every rank
        has reached the final gather (`gather_json(..., patient=True)`) or the group closes."""
        store = _client_store(self.stall_timeout)  # a client of its own: this is a thread
        if store is None:
            return
        me, size = self.world.rank, self.world.size
        watched = [r for r in range(size) if r != me] if self.world.main else [0]
        now = time.monotonic()
        seen = {r: (-1, now) for r in watched}  # rank -> (its count, when it last changed)
        last = now
        while not self._apart_over.wait(WATCH_EVERY_S):
            now = time.monotonic()
            if now - last > 10 * WATCH_EVERY_S:  # this process was stopped itself: start over
                seen = {r: (-1, now) for r in watched}
            last = now
            for r in watched:
                try:
                    count = store.add(_key(f"progress/{r}"), 0)
                except Exception:  # noqa: BLE001 - the store went with the launcher: nothing to do
                    return
                if count != seen[r][0]:
                    seen[r] = (count, now)
                elif now - seen[r][1] > self.stall_timeout and not self._failing:
                    self._stalled = (
                        f"rank {me}: rank {r} made no progress for {self.stall_timeout:g} s: it "
                        f"is stopped or hung (--stall-timeout), so the study stops; {self.then}"
                    )
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

    def close(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._apart_over.set()
        if self._failing:  # leave the broken group to the process's exit
            return
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            watcher.join(timeout=CHECK_IN_S)
        if self.dist.is_initialized():
            self.dist.destroy_process_group()

    # failures ------------------------------------------------------------------------------------

    def _guard(self, op, *args):
        if self._failing:  # a collective after a failure would only fail again
            raise UserError(f"rank {self.world.rank}: a collective after a failure")
        try:
            return op(*args)
        except RuntimeError as e:  # gloo and NCCL errors, timeouts included
            raise PeerError(self._failure(_first_line(e))) from None

    def _terminated(self, signum, frame) -> None:
        """torchrun's agent ends its other workers with SIGTERM when one fails."""
        if self._failing:  # already reporting a failure: finish that
            return
        if self._stalled:  # the stall watch's: it names the rank
            self._failing = True
            raise PeerError(self._stalled)
        raise PeerError(self._failure(self._cause or "stopped by the launcher (SIGTERM)"))

    def _failure(self, what: str) -> str:
        """One line: this rank, which ranks did not check in, what this rank saw."""
        self._failing = True
        dead = self._missing_ranks()
        who = (
            f"rank{'s' if len(dead) > 1 else ''} {', '.join(map(str, dead))} stopped answering "
            "(died or hung)"
            if dead
            else "another rank failed"
        )
        return f"rank {self.world.rank}: {who}; this rank stops too ({_shorten(what)}): {self.then}"

    def _missing_ranks(self) -> list[int]:
        """Ranks that do not check in at the store within CHECK_IN_S (every live rank that hit
        the same failure checks in)."""
        if self.store is None:
            return []
        try:
            self.store.set(_key(f"alive/{self.world.rank}"), "1")
            deadline = time.monotonic() + CHECK_IN_S
            missing = list(range(self.world.size))
            while missing and time.monotonic() < deadline:
                missing = [r for r in missing if not self.store.check([_key(f"alive/{r}")])]
                time.sleep(0.05)
            return missing
        except Exception:  # noqa: BLE001 - the store itself may be gone with the failed rank
            return []


def run_on_ranks(group: Group, command, *args) -> int:
    """`command(*args)` on this rank: rank 0 prints, the others' stdout goes nowhere (their
    errors still reach stderr, see `error_line`); the group is closed however it ends."""
    try:
        if group.world.main:
            return command(*args)
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return command(*args)
    except UserError as e:
        if not isinstance(e, PeerError):  # this rank's own failure: claimed before the others
            _first_to_fail(group.world, group.store)  # see theirs (closing the group shows it)
        raise
    finally:
        group.close()


def error_line(error: BaseException) -> str | None:
    """What this process prints for `error`: its message in one process; under torchrun,
    named after this rank, and only on the first rank to fail (None on the others), which
    claims the failure at the launcher's store. Without a store, every rank prints its own."""
    text = str(error)
    try:
        world = world_from_env()
    except UserError:
        return text
    if world.size == 1:
        return text
    if not _first_to_fail(world):
        return None
    named = text.startswith("rank ") and text.split(":", 1)[0][5:].isdigit()
    return text if named else f"rank {world.rank}: {text}"


def _first_to_fail(world: World, store=None) -> bool:
    """Whether this rank is the first to fail: the first to set the store's failure key, which
    then holds its number (asking again gives the same answer). True without a store."""
    try:
        store = store or _client_store(CHECK_IN_S, quick=True)
        if store is None:
            return True
        return store.compare_set(_key("failed"), "", str(world.rank)) == str(world.rank).encode()
    except Exception:  # noqa: BLE001 - the store may be gone with the launcher: say it anyway
        return True


def _key(name: str) -> str:
    """A store key of this launch (torchrun counts its restarts of the ranks)."""
    return f"microgpt/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{name}"


def _wait_for_master(timeout_s: float) -> None:
    """Wait until MASTER_ADDR:MASTER_PORT accepts a connection (rank 0's store, or torchrun's
    agent's); OSError after `timeout_s`."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not addr or not port:
        return  # torch reports it
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((addr, int(port)), timeout=1).close()
            return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise OSError(f"nothing answers at {addr}:{port}: {e.strerror or e}") from None
            time.sleep(0.2)


def _client_store(timeout_s: float, quick: bool = False):
    """A client of the store the ranks met at (under torchrun its agent holds it, and it
    outlives any rank); None if it cannot be reached. `quick`: None at once when nothing
    answers there (ranks started by hand whose rank 0, which holds it, is not up)."""
    try:
        addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        if quick:
            socket.create_connection((addr, port), timeout=1).close()
        import torch.distributed as dist

        return dist.TCPStore(
            addr, port, is_master=False, timeout=timedelta(seconds=min(timeout_s, 10))
        )
    except (KeyError, ValueError, RuntimeError, OSError, ImportError):
        return None


def tensor_bytes(tensor) -> bytes:
    """A tensor's bytes (a copy), without numpy and without a Python int per byte."""
    import ctypes

    tensor = tensor.cpu().contiguous()
    size = tensor.numel() * tensor.element_size()
    return ctypes.string_at(tensor.data_ptr(), size) if size else b""


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _shorten(text: str, limit: int = 120) -> str:
    """gloo's messages start with a source path and run long: keep the first sentence."""
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    text = text.split(". ", 1)[0].rstrip(".")
    return text if len(text) <= limit else text[: limit - 1] + "…"
