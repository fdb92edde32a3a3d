"""Running under `torchrun`: which rank this process is, the process group, and the collectives.

torchrun (PyTorch's launcher) starts one process per rank and tells each, through environment
variables, its `RANK`, `WORLD_SIZE`, `LOCAL_RANK` and where to meet (`MASTER_ADDR`,
`MASTER_PORT`). Without them (or with a world of one) microgpt runs as one process and this
module does nothing. Importing it imports nothing heavy; torch comes in when a group is made.

Collectives fail rather than hang: a rank that dies closes its connections, and its peers' next
collective raises at once; a rank that hangs is caught by the group's timeout. Either way the
error is turned into one `UserError` line that names the ranks that stopped answering, found by
asking every rank to check in at the launcher's key-value store within a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from datetime import timedelta

from microgpt.errors import UserError

TIMEOUT_S = 120  # a collective waiting longer than this is an error (a hung rank)
CHECK_IN_S = 5  # after a failure: how long the survivors wait for each other to check in


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def main(self) -> bool:
        """Rank 0 prints, writes files and samples."""
        return self.rank == 0


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

    `device` is where the tensors to reduce live: gloo reduces CPU tensors, NCCL CUDA ones."""

    def __init__(self, world: World, device: str = "cpu", timeout_s: float = TIMEOUT_S):
        import torch
        import torch.distributed as dist

        self.world, self.dist, self.torch = world, dist, torch
        self.device = torch.device(device)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(
                backend,
                rank=world.rank,
                world_size=world.size,
                timeout=timedelta(seconds=timeout_s),
            )
        except (RuntimeError, ValueError) as e:  # torch raises DistStoreError, a RuntimeError
            raise UserError(
                f"rank {world.rank}: the {world.size} ranks could not meet at "
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
                f"({_first_line(e)}): check that every node was started with the same "
                "--rdzv-endpoint and --nnodes"
            ) from None
        self.store = _client_store(timeout_s)
        self._on_sigterm = signal.signal(signal.SIGTERM, self._terminated)

    # collectives ---------------------------------------------------------------------------------

    def sum_(self, tensor) -> None:
        """All-reduce `tensor` in place: every rank gets the sum over ranks."""
        self._guard(self.dist.all_reduce, tensor)

    def broadcast_json(self, value=None):
        """Rank 0's `value` (JSON-serialisable) on every rank; no pickle."""
        torch = self.torch
        data = json.dumps(value).encode() if self.world.main else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        self._guard(self.dist.broadcast, size, 0)
        buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.world.main:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        self._guard(self.dist.broadcast, buf, 0)
        return json.loads(bytes(buf.cpu().tolist()).decode())

    def gather_json(self, value) -> list | None:
        """Every rank's `value` (JSON-serialisable), as a list on rank 0 (None elsewhere)."""
        torch = self.torch
        data = json.dumps(value).encode()
        sizes = [
            torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(self.world.size)
        ]
        mine = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        self._guard(self.dist.all_gather, sizes, mine)
        longest = max(int(s.item()) for s in sizes)
        buf = torch.zeros(longest, dtype=torch.uint8, device=self.device)
        buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        parts = [torch.zeros(longest, dtype=torch.uint8, device=self.device) for _ in sizes]
        self._guard(self.dist.all_gather, parts, buf)
        if not self.world.main:
            return None
        return [
            json.loads(bytes(p[: int(s.item())].cpu().tolist()).decode())
            for p, s in zip(parts, sizes)
        ]

    def close(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if self.dist.is_initialized():
            self.dist.destroy_process_group()

    # failures ------------------------------------------------------------------------------------

    def _guard(self, op, *args):
        try:
            return op(*args)
        except RuntimeError as e:  # gloo and NCCL errors, timeouts included
            raise UserError(self._failure(_first_line(e))) from None

    def _terminated(self, signum, frame) -> None:
        """torchrun ends the other ranks with SIGTERM when one fails."""
        raise UserError(self._failure("stopped by the launcher"))

    def _failure(self, what: str) -> str:
        """One line: this rank, what it saw, and which ranks did not check in."""
        dead = self._missing_ranks()
        who = (
            f"rank{'s' if len(dead) > 1 else ''} {', '.join(map(str, dead))} stopped answering "
            "(died or hung)"
            if dead
            else "another rank failed"
        )
        return (
            f"rank {self.world.rank}: {who}; this rank stops too ({what}). Finished work is "
            "kept: run the same command again"
        )

    def _missing_ranks(self) -> list[int]:
        """Ranks that do not check in at the store within CHECK_IN_S (every live rank that hit
        the same failure checks in)."""
        if self.store is None:
            return []
        try:
            self.store.set(f"microgpt/alive/{self.world.rank}", "1")
            deadline = time.monotonic() + CHECK_IN_S
            missing = list(range(self.world.size))
            while missing and time.monotonic() < deadline:
                missing = [r for r in missing if not self.store.check([f"microgpt/alive/{r}"])]
                time.sleep(0.05)
            return missing
        except Exception:  # noqa: BLE001 - the store itself may be gone with the failed rank
            return []


def _client_store(timeout_s: float):
    """A client of the store the ranks met at (torchrun's agent holds it, and it outlives any
    rank); None if it cannot be reached."""
    import torch.distributed as dist

    try:
        return dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=timedelta(seconds=min(timeout_s, 10)),
        )
    except (KeyError, ValueError, RuntimeError):
        return None


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
