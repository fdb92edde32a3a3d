"""A study's pictures, drawn from its checked results.json (`results.Results`), so that
`microgpt ablate` and `microgpt report` draw the same. matplotlib is optional and imported here
only, drawing with the Agg canvas directly (no pyplot, no global backend switch).

- `loss_curves.png`: one panel per numeric level; in each, every design's smoothed training loss
  (mean over seeds, ±1 sample std band) and its validation loss marked past the last step.
- `scaling.png` (when a numeric setting varies): each design's validation loss minus the
  baseline's against the level, with the report's intervals.
- `lr_sweep.png` (a learning-rate sweep): one panel per level; in each, every design's held-out
  loss against the learning rate (log axis): min(loss, loss at init) with a diverged run at the
  loss at init, as Wortsman et al. draw them, mean over seeds and ±1 sample std band; a cross
  at the top where runs diverged, a ring at the design's best rate.
"""

from __future__ import annotations

import io
import math

from microgpt.ablate.results import Results
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


def _curve_band(losses: list[list[float]], steps: int) -> tuple[list, list | None]:
    """The mean over runs of each run's smoothed losses (`moving_average`) at every step, and
    their sample std (None for one run), as numpy arrays: numpy comes with matplotlib, and a
    study of hundreds of runs' thousands of steps is a second of Python loops."""
    import numpy as np

    window = smoothing_window(steps)
    curves = np.asarray(losses, dtype=np.float64)  # (runs, steps)
    totals = np.cumsum(curves, axis=1)
    totals[:, window:] -= totals[:, :-window].copy()  # the trailing window's sum
    smoothed = totals / np.minimum(np.arange(1, steps + 1), window)
    spread = smoothed.std(axis=0, ddof=1) if len(losses) > 1 else None
    return smoothed.mean(axis=0), spread


def figure_classes():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def draw(results: Results) -> dict[str, bytes] | None:
    """The study's pictures as PNG bytes by file name, or None when matplotlib is missing."""
    classes = figure_classes()
    if classes is None:
        return None
    pictures = {"loss_curves.png": _png(plot_curves(results, *classes))}
    if results.numeric:
        pictures["scaling.png"] = _png(plot_scaling(results, *classes))
    if results.lr_sweep:
        pictures["lr_sweep.png"] = _png(plot_lr_sweep(results, *classes))
    return pictures


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _text(label: str) -> str:
    """A label from results.json as matplotlib shows it: as written, never read as mathtext
    (an edited file's "$" would be), without control characters (no font draws them)."""
    return "".join(c for c in label if c.isprintable()).replace("$", r"\$")


def _color(i: int, n: int) -> str:
    """Distinct colours for up to 20 designs: tab10, or tab20 past ten."""
    return f"C{i}" if n <= 10 else _tab20(i)


def _tab20(i: int):
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)


def plot_curves(results: Results, Figure, FigureCanvasAgg):
    levels, designs, seeds = results.levels(), results.design_labels(), len(results.seeds)
    cols = min(3, len(levels))
    rows = math.ceil(len(levels) / cols)
    fig = Figure(figsize=(5.5 * cols + 2.5, 4.2 * rows + 0.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    handles = []
    for k, level in enumerate(levels):
        ax = axes[k // cols][k % cols]
        for i, design in enumerate(designs):
            runs = [r for r in results.runs_of(level, design) if r["losses"]]
            best = results.best_lr(level, design)
            if best is not None:  # a sweep: the runs at the design's best rate
                runs = [r for r in runs if r.get("learning_rate") == best]
            if not runs:
                continue
            steps = min(len(r["losses"]) for r in runs)
            center, spread = _curve_band([r["losses"][:steps] for r in runs], steps)
            x = list(range(1, steps + 1))
            color = _color(i, len(designs))
            label = _text(design) + (" (baseline)" if design == results.baseline else "")
            (line,) = ax.plot(x, center, color=color, lw=1.4, label=label)
            if k == 0:
                handles.append(line)
            if spread is not None:
                low = [m - s for m, s in zip(center, spread)]
                high = [m + s for m, s in zip(center, spread)]
                ax.fill_between(x, low, high, color=color, alpha=0.12, lw=0)
            vals = [r["val_loss"] for r in runs]
            if None not in vals:
                at = steps * (1.015 + 0.01 * i)  # side by side just past the last step
                err = sample_std(vals) or 0.0
                ax.errorbar(at, mean(vals), yerr=err, fmt="D", color=color, ms=4, capsize=2)
        title = _text(level.label) or "all runs"
        if results.lr_sweep:
            title += " (each design at its best lr)"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (smoothed)")
        ax.grid(alpha=0.3)
    for k in range(len(levels), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    (marker,) = axes[0][0].plot([], [], "D", color="gray")
    band = ", band ±1 std over seeds" if seeds > 1 else ""
    labels = [h.get_label() for h in handles]
    labels.append("validation loss" + (" (mean ± std)" if seeds > 1 else ""))
    what = f"training loss: mean of the last {smoothing_window(results.steps)} steps{band}"
    return _finish(fig, results, cols, [*handles, marker], labels, what)


def plot_scaling(results: Results, Figure, FigureCanvasAgg):
    """Each design's val-loss difference to the baseline against the numeric level."""
    levels, numeric = results.levels(), results.numeric
    diffs = [c for c in results.comparisons if c["kind"] == "difference"]
    names = list(dict.fromkeys(c["name"] for c in diffs))
    one = len(numeric) == 1
    xs = [lv.values[0][1] for lv in levels] if one else list(range(len(levels)))
    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    log = one and min(xs) > 0 and max(xs) / min(xs) >= 2  # sizes: doubling steps read evenly
    span = (max(xs) - min(xs)) or 1
    labels = results.design_labels()  # colours as in loss_curves.png
    for i, name in enumerate(names):
        points = []
        for x, lv in zip(xs, levels):
            c = next((c for c in diffs if c["name"] == name and c["level"] == lv.flags()), None)
            if c is not None:
                points.append((x, c))
        shift = i - (len(names) - 1) / 2  # side by side, so that the intervals do not overlap
        px = [x * 1.025**shift if log else x + 0.012 * span * shift for x, _ in points]
        py = [c["mean_diff"] for _, c in points]
        low = [_bar(c["mean_diff"], c["low"]) for _, c in points]
        high = [_bar(c["high"], c["mean_diff"]) for _, c in points]
        k = labels.index(name) if name in labels else i
        color = _color(k, len(labels))
        ax.errorbar(
            px, py, yerr=[low, high], fmt="o-", color=color, ms=4, capsize=3, label=_text(name)
        )
    ax.axhline(0, color="gray", lw=1)
    if one:
        ax.set_xlabel(_text(numeric[0]))
        if log:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
    else:
        ax.set_xticks(xs, [_text(lv.label) for lv in levels], rotation=20, fontsize=8)
    ax.set_ylabel("val loss minus the baseline's (negative: better)")
    ax.set_title("Does it hold as the model grows? (intervals as in the report)", fontsize=10)
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_lr_sweep(results: Results, Figure, FigureCanvasAgg):
    """Held-out loss against the learning rate, one panel per level (see the module's doc)."""
    sweep = results.lr_sweep
    levels, labels = results.levels(), results.design_labels()
    init, seeds = sweep["loss_at_init"], len(results.seeds)
    cols = min(3, len(levels))
    rows = math.ceil(len(levels) / cols)
    fig = Figure(figsize=(5.5 * cols + 2.5, 4.2 * rows + 0.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    handles = {}
    for k, level in enumerate(levels):
        ax = axes[k // cols][k % cols]
        mine = [d for d in sweep["designs"] if d["level"] == level.flags()]
        for d in mine:
            i = labels.index(d["design"]) if d["design"] in labels else 0
            color = _color(i, len(labels))
            lrs = [r["learning_rate"] for r in d["rates"]]
            center = [r["val_loss"]["mean"] if r["val_loss"] else init for r in d["rates"]]
            spread = [(r["val_loss"] or {}).get("std") or 0.0 for r in d["rates"]]
            label = _text(d["design"]) + (" (baseline)" if d["baseline"] else "")
            (line,) = ax.plot(lrs, center, "o-", color=color, lw=1.4, ms=3.5, label=label)
            handles.setdefault(d["design"], line)
            if seeds > 1:
                low = [m - s for m, s in zip(center, spread)]
                high = [m + s for m, s in zip(center, spread)]
                ax.fill_between(lrs, low, high, color=color, alpha=0.12, lw=0)
            failed = [(lr, r["diverged"]) for lr, r in zip(lrs, d["rates"]) if r["diverged"]]
            if failed:  # at the top, as Wortsman et al. draw a diverged run
                ax.plot([lr for lr, _ in failed], [init] * len(failed), "x", color=color,
                        ms=9, mew=2)  # fmt: skip
            if d["best_lr"] in lrs:
                j = lrs.index(d["best_lr"])
                ax.plot([lrs[j]], [center[j]], "o", ms=11, mfc="none", color=color, mew=1.5)
        ax.axhline(init, color="gray", lw=1, ls="--")
        ax.set_xscale("log")
        ax.set_title(_text(level.label) or "all runs", fontsize=10)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("held-out loss, capped at ln V")
        ax.grid(alpha=0.3)
    for k in range(len(levels), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    (cross,) = axes[0][0].plot([], [], "x", color="gray", ms=9, mew=2)
    (ring,) = axes[0][0].plot([], [], "o", ms=11, mfc="none", color="gray", mew=1.5)
    (dash,) = axes[0][0].plot([], [], color="gray", lw=1, ls="--")
    lines = list(handles.values())
    labels = [h.get_label() for h in lines]
    labels += ["diverged (counted at ln V)", "best lr (selection half)", f"ln V = {init:.3f}"]
    band = ", band ±1 std over seeds" if seeds > 1 else ""
    what = f"final held-out loss, min(loss, ln V): mean{band}"
    return _finish(fig, results, cols, [*lines, cross, ring, dash], labels, what)


def _finish(fig, results: Results, cols: int, handles: list, labels: list[str], what: str):
    """A figure of panels in `cols` columns: its legend at the right, its title (the mode, the
    seeds and `what` the panels show), and its layout, with room for the legend."""
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    seeds = len(results.seeds)
    fig.suptitle(
        f"microgpt ablate: {_text(results.mode)} mode, {seeds} seed{'s' if seeds != 1 else ''}; "
        + what,
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (5.5 * cols + 2.5), 1))
    return fig


def _bar(upper: float | None, lower: float | None) -> float:
    """An error bar's length: 0 without an interval (one seed) or for an edited, wrong one."""
    if upper is None or lower is None:
        return 0.0
    return max(0.0, upper - lower)
