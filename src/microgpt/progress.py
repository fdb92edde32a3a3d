"""Progress display: one live line on a terminal, plain periodic lines when piped."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`update(step, loss)` after every step. On a terminal the line is redrawn at most ten
    times a second (and at the last step); otherwise a line is printed every `every` steps."""

    def __init__(self, total: int, every: int | None = None, stream: TextIO | None = None):
        self.total = total
        self.stream = stream or sys.stdout
        self.live = every is None and self.stream.isatty()
        self.every = every or max(1, total // 20)
        self.width = len(str(total))
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._updates = 0  # steps seen by this process (a resumed run starts midway)
        self._drawn = ""  # the live line now on the terminal

    def update(self, step: int, loss: float) -> None:
        self._updates += 1
        line = f"step {step:{self.width}d}/{self.total} | loss {loss:.6f}"
        if self.live:
            now = time.perf_counter()
            if now - self._last_draw >= 0.1 or step == self.total:
                self._last_draw = now
                rate = self._updates / max(now - self._start, 1e-9)
                eta = (self.total - step) / rate
                self._drawn = f"{line} | {rate:,.0f} steps/s | ETA {eta:4.0f}s"
                self.stream.write(f"\r{self._drawn}\x1b[K")
                self.stream.flush()
        elif step % self.every == 0 or step == self.total:
            print(line, file=self.stream, flush=True)

    def note(self, line: str) -> None:
        """A plain line of its own (an evaluation), kept above the live line, which is redrawn
        below it."""
        if self.live:
            self.stream.write(f"\r{line}\x1b[K\n{self._drawn}")
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
