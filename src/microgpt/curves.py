"""`microgpt plot`: the training and held-out curves of one or more `--metrics` files, on one PNG.

A metrics file (JSON Lines, see `train.MetricsWriter`) holds `{"step", "loss", "lr"}` per step,
`{"step", "val_loss", "val_bpc"}` per held-out evaluation (`--eval-every`; per token) and a last
summary record. Each run is drawn in its own colour: its training loss smoothed (a trailing mean),
its evaluations as points joined by a line, and its final per-token held-out loss as a star.
matplotlib is optional and imported here only, drawing on the Agg canvas (no pyplot).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from microgpt import tensorfile
from microgpt.ablate.plot import moving_average, smoothing_window
from microgpt.errors import UserError


@dataclass
class Run:
    name: str
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    final_val: float | None = None  # the summary's val_loss_per_token


def read_run(path: str | Path) -> Run:
    """The curves of one metrics file; anything unreadable is a one-line UserError."""
    p = Path(path)
    fix = "pass a file written by microgpt train --metrics"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"metrics file {p} does not exist: {fix}") from None
    except IsADirectoryError:
        raise UserError(f"metrics file {p} is a directory: {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read metrics file {p} ({e}): {fix}") from None
    run = Run(p.stem)
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            if not isinstance(r, dict):
                raise ValueError("not a JSON object")
            if r.get("summary"):
                run.final_val = r.get("val_loss_per_token")
            elif "loss" in r:
                run.steps.append(int(r["step"]))
                run.losses.append(float(r["loss"]))
            elif "val_loss" in r:
                run.val_steps.append(int(r["step"]))
                run.val_losses.append(float(r["val_loss"]))
        except (ValueError, TypeError, KeyError) as e:
            raise UserError(
                f"metrics file {p}, line {n}: not a metrics record ({e}): {fix}"
            ) from None
    if not run.steps:
        raise UserError(f"metrics file {p} has no training steps: {fix}")
    if run.val_steps and run.val_steps[-1] == run.steps[-1]:
        run.final_val = None  # already drawn as the last evaluation
    return run


def plot_runs(runs: list[Run], path: str | Path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("matplotlib is not installed: pip install 'microgpt[plot]'") from None
    fig = Figure(figsize=(8, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        window = smoothing_window(len(run.losses))
        ax.plot(
            run.steps,
            moving_average(run.losses, window),
            color=colour,
            lw=1.2,
            label=f"{run.name}: train (mean of {window})",
        )
        if run.val_steps:
            ax.plot(
                run.val_steps,
                run.val_losses,
                "o--",
                color=colour,
                ms=4,
                lw=1,
                label=f"{run.name}: held out, per token",
            )
        if run.final_val is not None:
            ax.plot([run.steps[-1]], [run.final_val], "*", color=colour, ms=10)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.set_title("training (smoothed) and held-out loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    try:
        tensorfile.write_atomic(path, buf.getvalue())
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None
