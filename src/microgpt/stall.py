"""Noticing work that stopped: a study's worker or rank that makes no progress for too long.

An ablation's workers and ranks work apart for minutes or hours, so a hung one (alive but
silent: a stopped process, a deadlock) would make the study wait for ever. The work itself
reports its progress, through a `Beat`: every training step, every held-out document (or chunk
of documents) an evaluation reads (`Reported`), every stack started. Nothing else beats, so
a deadlocked step or evaluation stops the beats. Who watches: the command for its worker
processes (`ablate.runner`), and the ranks for each other through the launcher's store
(`distributed.Group`); a worker or rank silent for `--stall-timeout` seconds ends the study.

The default is far above the longest silence of a healthy study on the project's machine (its
measured gaps are in docs/ablate.md): a study whose single steps or evaluated documents take
longer, a very large model in scalar mode, needs a larger `--stall-timeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

STALL_TIMEOUT_S = 300.0  # default --stall-timeout
BEAT_EVERY_S = 0.5  # a Beat passes progress on at most this often


class Beat:
    """Called by the work whenever it progresses; passes the time (`time.monotonic()`, the
    same clock in every process of a machine) on to `post` at most every BEAT_EVERY_S, so
    that calling it every step costs next to nothing."""

    def __init__(self, post: Callable[[float], None]):
        self.post = post
        self.last = -BEAT_EVERY_S

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= BEAT_EVERY_S:
            self.last = now
            self.post(now)


class Reported(list):
    """Held-out documents that call `beat()` as an evaluation reads them: one by one in scalar
    mode, a chunk (a slice, itself `Reported`) at a time in tensor mode. The same documents in
    the same order, so no figure changes; only a long evaluation now shows progress."""

    def __init__(self, docs, beat: Callable[[], None]):
        super().__init__(docs)
        self.beat = beat

    def __iter__(self):
        for doc in super().__iter__():
            self.beat()
            yield doc

    def __getitem__(self, index):
        self.beat()
        if isinstance(index, slice):
            return Reported(super().__getitem__(index), self.beat)
        return super().__getitem__(index)


def reported(docs: list, beat: Callable[[], None] | None) -> list:
    """`docs` as `Reported` when there is a `beat`, else as they are."""
    return docs if beat is None else Reported(docs, beat)
