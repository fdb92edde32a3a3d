"""Progress across an ablation's runs: runs done / total and an ETA.

On a terminal, one live line redrawn a few times a second; otherwise a plain line at each
quarter of the runs. The ETA comes from training steps done (workers report them as they go),
so it moves during long runs instead of jumping when one finishes.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from microgpt.progress import LiveLine


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class RunsProgress:
    def __init__(self, total: int, reused: int, steps_to_run: int, stream: TextIO | None = None):
        self.total = total  # runs in the study, reused ones included
        self.done = reused
        self.reused = reused
        self.steps_to_run = steps_to_run  # training steps of the runs still to do
        self.stream = stream or sys.stdout
        self.live = LiveLine(self.stream, 0.2) if self.stream.isatty() else None
        self._start = time.perf_counter()
        self._next_quarter = 1
        self._steps = 0

    def tick(self, steps_done: int) -> None:
        """Steps done so far by the runs of this invocation; redraws the live line."""
        self._steps = steps_done
        if self.live is not None:
            self.live.draw(self._line())

    def run_done(self, steps_done: int) -> None:
        self.done += 1
        self._steps = steps_done
        if self.live is not None:
            self.live.draw(self._line(), force=True)
            return
        quarter = 4 * (self.done - self.reused) // max(1, self.total - self.reused)
        if quarter >= self._next_quarter:
            self._next_quarter = quarter + 1
            print(self._line(), file=self.stream, flush=True)

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start
        line = f"runs {self.done}/{self.total} | {_duration(elapsed)}"
        if 0 < self._steps < self.steps_to_run:
            remaining = elapsed * (self.steps_to_run - self._steps) / self._steps
            line += f" | ETA {_duration(remaining)}"
        return line

    def close(self) -> None:
        if self.live is not None:
            self.live.clear()
