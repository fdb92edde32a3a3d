"""A study's pictures. matplotlib is optional and imported here only, drawing with the Agg canvas
directly (no pyplot, no global backend switch).

- `loss_curves.png`: one panel per numeric level; in each, every design's smoothed training loss
  (mean over seeds, ±1 sample std band) and its validation loss marked past the last step.
- `scaling.png` (when a numeric setting varies): each design's validation loss minus the
  baseline's against the level, with the report's intervals.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from microgpt import tensorfile
from microgpt.ablate.plan import Study, Task
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


def _figure_classes():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def _save(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    tensorfile.write_atomic(path, buf.getvalue())


def _color(i: int, n: int) -> str:
    """Distinct colours for up to 20 designs: tab10, or tab20 past ten."""
    return f"C{i}" if n <= 10 else _tab20(i)


def _tab20(i: int):
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)


def plot_curves(
    study: Study, tasks: list[Task], records: list[dict], path: str | Path
) -> str | None:
    """Writes the figure atomically; returns a one-line note instead when matplotlib is missing."""
    classes = _figure_classes()
    if classes is None:
        return MISSING
    Figure, FigureCanvasAgg = classes
    levels, designs, seeds = study.levels(), study.designs(), len(study.seeds)
    cols = min(3, len(levels))
    rows = math.ceil(len(levels) / cols)
    fig = Figure(figsize=(5.5 * cols + 2.5, 4.2 * rows + 0.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    handles = []
    for k, level in enumerate(levels):
        ax = axes[k // cols][k % cols]
        for i, design in enumerate(designs):
            runs = [r for t, r in zip(tasks, records) if t.level == level and t.design == design]
            steps = len(runs[0]["losses"])
            window = smoothing_window(steps)
            curves = [moving_average(r["losses"], window) for r in runs]
            center = [mean(col) for col in zip(*curves)]
            x = list(range(1, steps + 1))
            color = _color(i, len(designs))
            label = design.label + (" (baseline)" if design == study.baseline else "")
            (line,) = ax.plot(x, center, color=color, lw=1.4, label=label)
            if k == 0:
                handles.append(line)
            if len(curves) > 1:
                spread = [sample_std(col) for col in zip(*curves)]
                low = [m - s for m, s in zip(center, spread)]
                high = [m + s for m, s in zip(center, spread)]
                ax.fill_between(x, low, high, color=color, alpha=0.12, lw=0)
            vals = [r["val_loss"] for r in runs]
            if None not in vals:
                at = steps * (1.015 + 0.01 * i)  # side by side just past the last step
                err = sample_std(vals) or 0.0
                ax.errorbar(at, mean(vals), yerr=err, fmt="D", color=color, ms=4, capsize=2)
        ax.set_title(level.label or "all runs", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (smoothed)")
        ax.grid(alpha=0.3)
    for k in range(len(levels), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    (marker,) = axes[0][0].plot([], [], "D", color="gray")
    band = ", band ±1 std over seeds" if seeds > 1 else ""
    fig.legend(
        [*handles, marker],
        [h.get_label() for h in handles]
        + ["validation loss" + (" (mean ± std)" if seeds > 1 else "")],
        loc="center right",
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        f"microgpt ablate: {study.mode} mode, {seeds} seed{'s' if seeds > 1 else ''}; "
        f"training loss: mean of the last {smoothing_window(study.train.steps)} steps{band}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (5.5 * cols + 2.5), 1))
    _save(fig, path)
    return None


def plot_scaling(study: Study, summary: dict, path: str | Path) -> None:
    """Each design's val-loss difference to the baseline against the numeric level."""
    classes = _figure_classes()
    if classes is None:
        return
    Figure, FigureCanvasAgg = classes
    levels = study.levels()
    diffs = [c for c in summary["comparisons"] if c["kind"] == "difference"]
    names = list(dict.fromkeys(c["name"] for c in diffs))
    one = len(study.numeric) == 1
    xs = [lv.values[0][1] for lv in levels] if one else list(range(len(levels)))
    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    log = one and min(xs) > 0 and max(xs) / min(xs) >= 2  # sizes: doubling steps read evenly
    span = (max(xs) - min(xs)) or 1
    labels = [d.label for d in study.designs()]  # colours as in loss_curves.png
    for i, name in enumerate(names):
        points = []
        for x, lv in zip(xs, levels):
            c = next((c for c in diffs if c["name"] == name and c["level"] == lv.flags()), None)
            if c is not None:
                points.append((x, c))
        shift = i - (len(names) - 1) / 2  # side by side, so that the intervals do not overlap
        px = [x * 1.025**shift if log else x + 0.012 * span * shift for x, _ in points]
        py = [c["mean_diff"] for _, c in points]
        low = [c["mean_diff"] - c["low"] if c["low"] is not None else 0 for _, c in points]
        high = [c["high"] - c["mean_diff"] if c["high"] is not None else 0 for _, c in points]
        k = labels.index(name) if name in labels else i
        color = _color(k, len(labels))
        ax.errorbar(px, py, yerr=[low, high], fmt="o-", color=color, ms=4, capsize=3, label=name)
    ax.axhline(0, color="gray", lw=1)
    if one:
        ax.set_xlabel(study.numeric[0])
        if log:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
    else:
        ax.set_xticks(xs, [lv.label for lv in levels], rotation=20, fontsize=8)
    ax.set_ylabel("val loss minus the baseline's (negative: better)")
    ax.set_title("Does it hold as the model grows? (intervals as in the report)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
