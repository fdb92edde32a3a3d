"""Progress display: one live line on a terminal, plain periodic lines when piped.

`LiveLine` is the one place that redraws a line in place; `Progress` (a training run's steps)
and `ablate.progress.RunsProgress` (a study's runs) decide what the line says and when a plain
line is printed instead.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class LiveLine:
    """A line redrawn in place (carriage return, clear to the end), at most every `interval`
    seconds unless forced. Only for terminals: check `stream.isatty()` before using it."""

    def __init__(self, stream: TextIO, interval: float):
        self.stream = stream
        self.interval = interval
        self._last_draw = 0.0
        self.text = ""  # what the line shows now

    def draw(self, text: str, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self._last_draw >= self.interval:
            self._last_draw = now
            self.text = text
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()

    def above(self, line: str) -> None:
        """Print `line` on its own, keeping the live line below it."""
        self.stream.write(f"\r{line}\x1b[K\n{self.text}")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the line, leaving the cursor at its start."""
        self.stream.write("\r\x1b[K")
        self.stream.flush()

    def end(self) -> None:
        """Keep the line and move below it."""
        self.stream.write("\n")
        self.stream.flush()


class Progress:
    """`update(step, loss)` after every step. On a terminal the line is redrawn at most ten
    times a second (and at the last step); otherwise a line is printed every `every` steps."""

    def __init__(self, total: int, every: int | None = None, stream: TextIO | None = None):
        self.total = total
        self.stream = stream or sys.stdout
        self.live = LiveLine(self.stream, 0.1) if every is None and self.stream.isatty() else None
        self.every = every or max(1, total // 20)
        self.width = len(str(total))
        self._start = time.perf_counter()
        self._updates = 0  # steps seen by this process (a resumed run starts midway)

    def update(self, step: int, loss: float) -> None:
        self._updates += 1
        line = f"step {step:{self.width}d}/{self.total} | loss {loss:.6f}"
        if self.live is not None:
            rate = self._updates / max(time.perf_counter() - self._start, 1e-9)
            eta = (self.total - step) / rate
            self.live.draw(f"{line} | {rate:,.0f} steps/s | ETA {eta:4.0f}s", step == self.total)
        elif step % self.every == 0 or step == self.total:
            print(line, file=self.stream, flush=True)

    def note(self, line: str) -> None:
        """A plain line of its own (an evaluation), kept above the live line, which is redrawn
        below it."""
        if self.live is not None:
            self.live.above(line)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
