"""`loss_curves.png`: each design's smoothed training loss, mean over seeds with a ±1 sample std
band, and its validation loss marked at the end. matplotlib is optional and imported here only,
drawing with the Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import io
from pathlib import Path

from microgpt import tensorfile
from microgpt.ablate.plan import DESIGNS, REFERENCE, Study
from microgpt.ablate.report import design_of
from microgpt.ablate.stats import mean, sample_std

MISSING = "matplotlib is not installed: skipped loss_curves.png (pip install 'microgpt[plot]')"


def smoothing_window(steps: int) -> int:
    return max(1, min(50, steps // 20))


def moving_average(xs: list[float], window: int) -> list[float]:
    """Trailing mean over the last `window` values (fewer at the start)."""
    out, total = [], 0.0
    for i, x in enumerate(xs):
        total += x
        if i >= window:
            total -= xs[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(study: Study, records: list[dict], path: str | Path) -> str | None:
    """Writes the figure atomically; returns a one-line note instead when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return MISSING

    steps = study.train.steps
    window = smoothing_window(steps)
    fig = Figure(figsize=(8, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = list(range(1, steps + 1))
    for i, design in enumerate(DESIGNS):
        runs = [r for r in records if design_of(r) == design]
        curves = [moving_average(r["losses"], window) for r in runs]
        center = [mean(col) for col in zip(*curves)]
        color = f"C{i}"
        label = design.label + (" (reference)" if design == REFERENCE else "")
        ax.plot(x, center, color=color, lw=1.5, label=label)
        if len(curves) > 1:
            spread = [sample_std(col) for col in zip(*curves)]
            low = [m - s for m, s in zip(center, spread)]
            high = [m + s for m, s in zip(center, spread)]
            ax.fill_between(x, low, high, color=color, alpha=0.15, lw=0)
        vals = [r["val_loss"] for r in runs]
        if None not in vals:
            at = steps * (1.015 + 0.012 * i)  # side by side just past the last step
            ax.errorbar(
                at, mean(vals), yerr=sample_std(vals) or 0.0, fmt="D", color=color, ms=5, capsize=3
            )
    ax.plot(
        [],
        [],
        "D",
        color="gray",
        label="validation loss" + (" (mean ± std)" if len(study.seeds) > 1 else ""),
    )
    seeds = len(study.seeds)
    ax.set_title(
        f"microgpt ablate: {study.mode} mode, {seeds} seed{'s' if seeds > 1 else ''}, "
        f"{steps:,} steps, batch {study.train.batch_size}"
    )
    ax.set_xlabel("step")
    band = ", band: ±1 std over seeds" if seeds > 1 else ""
    ax.set_ylabel(f"training loss (mean of last {window} steps{band})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    tensorfile.write_atomic(path, buf.getvalue())
    return None
