"""A study's results: per-run rows, per-design summaries and comparisons, the printed report,
JSON and CSV.

Pure functions of the study, its tasks and their run records (as `worker.run` makes them), so
that a report of reused runs is the same as one of fresh runs.

What is compared: each design's validation loss minus the baseline's at the same level, paired
by seed; in a full factorial of two-valued switches also each switch's main effect and each
two-way interaction, per seed. When a report makes more than one such comparison, all of them
form one family and Holm's method adjusts their p-values, decisions and intervals (stats.holm).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import textwrap

from microgpt.ablate.plan import Design, Level, Study, Task
from microgpt.ablate.stats import Paired, holm, mean, mean_interval, sample_std
from microgpt.config import SWITCHES

LOSSES = ("final_loss", "mean_last_n", "val_loss")  # shown as mean ± sample std over seeds
SPEEDS = ("steps_per_s", "tokens_per_s", "wall_seconds")  # shown as means over seeds
FIGURES = ("params", *LOSSES, "last_n", "val_loss_per_token", "steps_per_s", "tokens_per_s")
FIGURES += ("train_seconds", "wall_seconds")  # the record's figures, in the CSV's order
ALPHA = 0.05


def csv_columns(study: Study) -> list[str]:
    """`design`, one column per varied setting, the seed, then the run's figures."""
    return ["design", *study.varied, "seed", *FIGURES]


def run_row(study: Study, task: Task, record: dict) -> dict:
    """One run's figures, `mean_last_n` over the study's --last-n."""
    tail = record["losses"][-study.train.last_n :]
    row = {"design": task.design.label, **task.level.flags(), **task.design.flags()}
    row.update({k: record.get(k) for k in FIGURES}, seed=task.seed)
    if record.get("diverged") or not tail:  # no end figures for a run that did not end
        row.update(mean_last_n=None, last_n=0)
    else:
        row.update(mean_last_n=mean(tail), last_n=len(tail))
    return row


# summaries and comparisons ----------------------------------------------------------------------


def summarize(study: Study, tasks: list[Task], records: list[dict]) -> dict:
    """Per level and design: each figure's mean and sample std over seeds; the paired
    comparisons against the baseline; the factorial effects; Holm over all comparisons."""
    rows = {(t.level, t.design, t.seed): run_row(study, t, r) for t, r in zip(tasks, records)}
    baseline, seeds = study.baseline, study.seeds

    def vals(level: Level, design: Design) -> list[float] | None:
        v = [rows[level, design, s]["val_loss"] for s in seeds]
        return None if None in v else v

    designs, comparisons = [], []  # comparisons: (kind, level, name, Paired)
    for level in study.levels():
        base = vals(level, baseline)
        for design in study.designs():
            runs = [rows[level, design, s] for s in seeds]
            summary = {
                "level": level.flags(),
                "design": design.label,
                "switches": design.flags(),
                "baseline": design == baseline,
                "seeds": list(seeds),
                "params": runs[0]["params"],
            }
            for key in LOSSES + SPEEDS:
                values = [r[key] for r in runs]
                summary[key] = (
                    None if None in values else {"mean": mean(values), "std": sample_std(values)}
                )
            designs.append(summary)
            ours = vals(level, design)
            if design != baseline and base is not None and ours is not None:
                diffs = [b - a for a, b in zip(base, ours)]
                comparisons.append(("difference", level, design.label, mean_interval(diffs)))
        comparisons += _effects(study, level, vals)

    family = [c[3] for c in comparisons]
    adjusted = sum(c.p is not None for c in family) > 1
    if adjusted:
        family = holm(family, ALPHA)
    out_comparisons = [
        {"kind": kind, "level": level.flags(), "name": name, **_paired_dict(p)}
        for (kind, level, name, _), p in zip(comparisons, family)
    ]
    return {
        "designs": designs,
        "comparisons": out_comparisons,
        "adjustment": {
            "method": "holm" if adjusted else None,
            "family": sum(c.p is not None for c in family),
            "alpha": ALPHA,
        },
    }


def factorial(study: Study) -> bool:
    """A full factorial of two or more two-valued switches: effects are defined."""
    return (
        study.plan == "full"
        and len(study.switches) >= 2
        and all(len(study.varied[n]) == 2 for n in study.switches)
    )


def _effects(study: Study, level: Level, vals) -> list[tuple]:
    """Main effects and two-way interactions on val loss, per seed, then over seeds.

    Main effect of X: mean val loss of the designs with X changed minus of those with X at the
    baseline. Interaction X × Y: X's effect among the designs with Y changed minus X's effect
    among those with Y at the baseline. Each averages over the other switches."""
    if not factorial(study):
        return []
    base = study.baseline.flags()
    by_design = {d: vals(level, d) for d in study.designs()}
    if any(v is None for v in by_design.values()):
        return []
    n_seeds = len(study.seeds)

    def changed(design: Design, name: str) -> bool:
        return design.flags()[name] != base[name]

    def effect(name: str, among) -> list[float]:
        on = [v for d, v in by_design.items() if among(d) and changed(d, name)]
        off = [v for d, v in by_design.items() if among(d) and not changed(d, name)]
        return [mean([v[s] for v in on]) - mean([v[s] for v in off]) for s in range(n_seeds)]

    out = []
    for x in study.switches:
        effect_x = effect(x, lambda d: True)
        out.append(("main effect", level, _change(x, base), mean_interval(effect_x)))
    for x, y in itertools.combinations(study.switches, 2):
        with_y = effect(x, lambda d, y=y: changed(d, y))
        without_y = effect(x, lambda d, y=y: not changed(d, y))
        diffs = [a - b for a, b in zip(with_y, without_y)]
        name = f"{_change(x, base)} × {_change(y, base)}"
        out.append(("interaction", level, name, mean_interval(diffs)))
    return out


def _change(name: str, base: dict) -> str:
    s = SWITCHES[name]
    other = next(v for v in s.values if v != base[name])
    return s.label(other)


def _paired_dict(p: Paired) -> dict:
    return {
        "mean_diff": p.mean_diff,
        "n": p.n,
        "df": p.df if p.n > 1 else None,
        "confidence": p.level,
        "low": p.low,
        "high": p.high,
        "p": p.p,
        "significant": p.significant,
        "verdict": p.verdict,
    }


# the printed report ------------------------------------------------------------------------------


def format_report(study: Study, summary: dict) -> str:
    """Per level: the table and the comparisons; then, when a numeric setting varies, each
    design's difference to the baseline against it."""
    lines: list[str] = []
    levels = study.levels()
    for level in levels:
        if level.values:
            lines += [f"== {level.label} ==", ""]
        rows = [d for d in summary["designs"] if d["level"] == level.flags()]
        lines += _table(study, rows)
        lines.append("")
        lines += _comparisons(study, summary, level)
        lines.append("")
    if study.numeric and summary["comparisons"]:
        lines += _scaling(study, summary)
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _table(study: Study, rows: list[dict]) -> list[str]:
    steps = rows and study.train.steps
    last_n = min(study.train.last_n, steps)
    header = ["design", "params", "final loss", f"last {last_n} mean", "val loss"]
    header += ["steps/s", "tokens/s", "wall s"]
    cells = [
        [
            r["design"] + (" *" if r["baseline"] else ""),
            f"{r['params']:,}",
            *(_mean_std(r[k]) for k in LOSSES),
            f"{r['steps_per_s']['mean']:,.0f}",
            f"{r['tokens_per_s']['mean']:,.0f}",
            f"{r['wall_seconds']['mean']:.1f}",
        ]
        for r in rows
    ]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    left = {0, 2, 3, 4}  # text and mean ± std cells read from the left; counts from the right

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
        ).rstrip()

    note = f"* {_baseline_name(study)} design. " + spread_note(study.seeds) + SPEED_NOTE
    return [line(header), "-" * len(line(header)), *map(line, cells), *textwrap.wrap(note, 100)]


SPEED_NOTE = (
    "steps/s, tokens/s (training loop only) and wall s (one run: data, training, validation) "
    "are means over seeds."
)


def spread_note(seeds) -> str:
    listed = ", ".join(map(str, seeds))
    if len(seeds) > 1:
        return f"± is the sample standard deviation over the {len(seeds)} seeds ({listed}). "
    return f"One seed ({listed}): no spread. "


def _baseline_name(study: Study) -> str:
    return baseline_name({**study.model_args, **study.baseline.flags()})


def baseline_name(design: dict) -> str:
    """ "reference" when every switch of the baseline `design` (its varied and fixed switches,
    name: value) is the reference algorithm's."""
    reference = all(design.get(n) == s.reference for n, s in SWITCHES.items())
    return "reference" if reference else "baseline"


def _mean_std(figure: dict | None) -> str:
    if figure is None:
        return "-"
    if figure["std"] is None:
        return f"{figure['mean']:.4f}"
    return f"{figure['mean']:.4f} ± {figure['std']:.4f}"


def _comparisons(study: Study, summary: dict, level: Level) -> list[str]:
    n = len(study.seeds)
    mine = [c for c in summary["comparisons"] if c["level"] == level.flags()]
    designs = [d for d in summary["designs"] if d["level"] == level.flags()]
    if designs and designs[0]["val_loss"] is None:
        return ["No validation loss (--val-docs 0 or no held-out documents): no comparison."]
    title = comparison_title(n, summary["adjustment"], _baseline_name(study))
    lines = textwrap.wrap(title, 100)
    differences = [c for c in mine if c["kind"] == "difference"]
    effects = [c for c in mine if c["kind"] != "difference"]
    lines += _comparison_rows(differences)
    if effects:
        lines += [""] + textwrap.wrap(EFFECTS_NOTE, 100)
        lines += _comparison_rows(effects)
    return lines


def comparison_title(n: int, adjustment: dict, name: str) -> str:
    """What the comparisons of `n` seeds against the baseline called `name` are."""
    dof = f"{n - 1} degree{'s' if n > 2 else ''} of freedom"
    if n == 1:
        return f"Val loss minus the {name}'s, same seed (one seed: no interval, no claim)."
    if adjustment["method"] == "holm":
        return (
            f"Val loss minus the {name}'s, paired by seed: mean, t-interval ({dof}) and "
            f"p-value, adjusted by Holm's method over all {adjustment['family']} "
            "comparisons of this report (5% family-wise error): each interval is at the level "
            "its Holm step tests (shown), p is Holm's adjusted p-value, and a difference is "
            "called only when Holm rejects 'no difference'."
        )
    return f"Val loss minus the {name}'s, paired by seed: mean, 95% t-interval ({dof}) and p-value."


EFFECTS_NOTE = (
    "Factorial effects on val loss, per seed and averaged over the other switches: a main "
    "effect is the mean over the designs with that switch changed minus over those "
    "without; an interaction X × Y is X's effect with Y changed minus X's effect "
    "without Y changed."
)


def _comparison_rows(comparisons: list[dict]) -> list[str]:
    if not comparisons:
        return []
    names = [
        ("main effect of " if c["kind"] == "main effect" else "") + c["name"] for c in comparisons
    ]
    width = max(map(len, names)) + 2
    lines = []
    for name, c in zip(names, comparisons):
        if c["low"] is None:
            lines.append(f"{name:<{width}}{c['mean_diff']:+.4f}")
            continue
        interval = f"[{c['low']:+.4f}, {c['high']:+.4f}]"
        level = f"{100 * c['confidence']:.1f}%"
        p = f"p={c['p']:.3f}" if c["p"] >= 0.001 else "p<0.001"
        lines.append(
            f"{name:<{width}}{c['mean_diff']:+.4f}  {interval} {level:>6}  {p:<7}  {_verdict(c)}"
        )
    return lines


def _verdict(c: dict) -> str:
    if c["low"] is None or not c["significant"]:
        return c["verdict"]
    up = c["mean_diff"] > 0
    if c["kind"] == "difference":
        return "higher" if up else "lower"
    if c["kind"] == "main effect":
        return "raises val loss" if up else "lowers val loss"
    return "non-additive: higher together" if up else "non-additive: lower together"


def _scaling(study: Study, summary: dict) -> list[str]:
    """Each design's difference to the baseline (mean and interval) at every level."""
    levels = study.levels()
    diffs = [c for c in summary["comparisons"] if c["kind"] == "difference"]
    names = list(dict.fromkeys(c["name"] for c in diffs))
    header = ["design", *(lv.label for lv in levels)]
    cells = []
    for name in names:
        row = [name]
        for lv in levels:
            c = next((c for c in diffs if c["name"] == name and c["level"] == lv.flags()), None)
            if c is None:
                row.append("-")
            elif c["low"] is None:
                row.append(f"{c['mean_diff']:+.4f}")
            else:
                mark = "" if c["significant"] else " ~"
                row.append(f"{c['mean_diff']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]{mark}")
        cells.append(row)
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    lines = textwrap.wrap(
        f"{scaling_question(study.numeric)} Val loss minus the {_baseline_name(study)}'s at each "
        "level (mean and interval as above; ~ marks differences within seed noise).",
        100,
    )
    lines.append("  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip())
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return lines


def scaling_question(numeric: list[str]) -> str:
    verb = "changes" if len(numeric) == 1 else "change"
    return f"Does it hold as {' and '.join(numeric)} {verb}?"


# files ------------------------------------------------------------------------------------------


def results_json(
    study: Study, tasks: list[Task], records: list[dict], summary: dict, env: dict
) -> bytes:
    runs = []
    for task, record in zip(tasks, records):
        row = run_row(study, task, record)
        train_config = {**record["train_config"], "last_n": study.train.last_n}
        runs.append(
            {
                **row,
                "level": task.level.flags(),
                "switches": task.design.flags(),
                "val_docs": record["val_docs"],
                "data_order": record["data_order"],
                "model_config": record["model_config"],
                "train_config": train_config,
                "environment": record["environment"],
                "losses": record["losses"],
                # trained in a stack of this many runs (1: alone); null or {step, last_loss}
                "stack_size": record.get("stack_size", 1),
                "diverged": record.get("diverged"),
            }
        )
    doc = {
        "settings": {
            **study.settings(),
            "varied": {k: list(v) for k, v in study.varied.items()},
            "plan": study.plan,
            "baseline": study.baseline.flags(),
            "seeds": list(study.seeds),
            "last_n": study.train.last_n,
            "input": study.input_path,
        },
        "environment": env,
        "spread": "sample standard deviation over seeds (n - 1)",
        **summary,
        "runs": runs,
    }
    return (json.dumps(doc, indent=1) + "\n").encode()


def results_csv(study: Study, tasks: list[Task], records: list[dict]) -> bytes:
    buf = io.StringIO()
    columns = csv_columns(study)
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for task, record in zip(tasks, records):
        writer.writerow(run_row(study, task, record))
    return buf.getvalue().encode()
