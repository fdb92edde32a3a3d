"""A study's results: per-run rows, per-design summaries and comparisons, the printed report,
JSON and CSV.

Pure functions of the study, its tasks and their run records (as `worker.run` makes them), so
that a report of reused runs is the same as one of fresh runs.

What is compared: each design's validation loss minus the baseline's at the same level, paired
by seed; in a full factorial of two-valued switches also each switch's main effect and each
two-way interaction, per seed. When a report makes more than one such comparison, all of them
form one family and Holm's method adjusts their p-values, decisions and intervals (stats.holm).

In a learning-rate sweep (`Study.lrs`) each design is compared at its own best rate: the rate
with the lowest mean over seeds of the val loss on the selection half of the held-out documents,
its figure the val loss on the report half (`sweep.best_lr`); and its LR sensitivity
(`sweep.sensitivity`, on the val loss over all val_docs documents) is compared with the
baseline's too. Both kinds of differences, paired by seed, and the factorial effects on the
best-rate figure, form the one Holm family; the per-rate losses are shown, not tested.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import textwrap

from microgpt.ablate import sweep
from microgpt.ablate.plan import Design, Level, Study, Task
from microgpt.ablate.stats import Paired, holm, mean, mean_interval, sample_std
from microgpt.config import SWITCHES

LOSSES = ("final_loss", "mean_last_n", "val_loss")  # shown as mean ± sample std over seeds
SPEEDS = ("steps_per_s", "tokens_per_s", "wall_seconds")  # shown as means over seeds
FIGURES = ("params", *LOSSES, "last_n", "val_loss_per_token", "steps_per_s", "tokens_per_s")
FIGURES += ("train_seconds", "wall_seconds")  # the record's figures, in the CSV's order
HALVES = ("selection_loss", "report_loss")  # a sweep's run: val loss on each half
DIAGNOSTICS = ("max_attention_logit", "logit_mean", "logit_max")  # see `run_diagnostics`
ALPHA = 0.05


def csv_columns(study: Study) -> list[str]:
    """`design`, one column per varied setting (and the learning rate of a sweep), the seed,
    then the run's figures, whether and where it diverged, and its diagnostics."""
    swept = ["learning_rate", *HALVES] if study.sweep else []
    return ["design", *study.varied, *swept[:1], "seed", *FIGURES, *swept[1:], "diverged",
            "diverged_step", *DIAGNOSTICS]  # fmt: skip


def run_row(study: Study, task: Task, record: dict) -> dict:
    """One run's figures, `mean_last_n` over the study's --last-n (None: no finite loss)."""
    tail = record["losses"][-study.train.last_n :]
    row = {"design": task.design.label, **task.level.flags(), **task.design.flags()}
    row.update({k: record.get(k) for k in FIGURES}, seed=task.seed)
    ended = tail and record.get("final_loss") is not None  # a non-finite loss did not end
    row.update(mean_last_n=mean(tail) if ended else None, last_n=len(tail) if ended else 0)
    row["learning_rate"] = task.train.learning_rate
    diverged = record.get("diverged")
    row["diverged"] = diverged["reason"] if diverged else ""
    row["diverged_step"] = diverged["step"] if diverged else None
    if study.sweep:
        row.update({k: record.get(k) for k in HALVES})
    row.update(run_diagnostics(record))
    return row


def run_diagnostics(record: dict) -> dict:
    """A run's diagnostics in brief (None in scalar mode, or without a sample): the largest
    attention logit over its samples (None too if a sample was non-finite: see
    `attention_overflowed`), and the output logits' mean and max at the last sample."""
    d = record.get("diagnostics") or {}
    samples = d.get("max_attention_logit") or []
    last = {k: d[k][-1] for k in DIAGNOSTICS[1:]} if samples else {}
    largest = max(samples) if samples and None not in samples else None
    return {"max_attention_logit": largest, **{k: last.get(k) for k in DIAGNOSTICS[1:]}}


def attention_overflowed(record: dict) -> bool:
    """Whether a sample of the run's largest attention logit was non-finite (saved as null)."""
    return None in ((record.get("diagnostics") or {}).get("max_attention_logit") or [])


# summaries and comparisons ----------------------------------------------------------------------


def summarize(study: Study, tasks: list[Task], records: list[dict]) -> dict:
    """Per level and design: each figure's mean and sample std over seeds; the paired
    comparisons against the baseline; the factorial effects; Holm over all comparisons. In a
    sweep the figures are those at the design's best rate, and `lr_sweep` holds the sweep."""
    rows = {(t.level, t.design, t.lr, t.seed): run_row(study, t, r) for t, r in zip(tasks, records)}
    baseline, seeds = study.baseline, study.seeds
    swept = {
        (level, design): sweep_summary(study, level, design, rows)
        for level in study.levels()
        for design in study.designs()
    } if study.sweep else {}  # fmt: skip

    def vals(level: Level, design: Design) -> list[float] | None:
        if study.sweep:  # the report-half loss at the design's best rate, capped
            return list(swept[level, design]["report_per_seed"])
        v = [rows[level, design, None, s]["val_loss"] for s in seeds]
        return None if None in v else v

    designs, comparisons = [], []  # comparisons: (kind, level, name, Paired)
    for level in study.levels():
        base = vals(level, baseline)
        sensitivities = []
        for design in study.designs():
            lr = swept[level, design]["best_lr"] if study.sweep else None
            runs = [rows[level, design, lr, s] for s in seeds]
            summary = {
                "level": level.flags(),
                "design": design.label,
                "switches": design.flags(),
                "baseline": design == baseline,
                "seeds": list(seeds),
                "params": runs[0]["params"],
            }
            if study.sweep:
                summary["learning_rate"] = lr  # its best rate: the figures below are there
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
            if study.sweep and design != baseline:
                mine = swept[level, design]["sensitivity"]["per_seed"]
                theirs = swept[level, baseline]["sensitivity"]["per_seed"]
                diffs = [b - a for a, b in zip(theirs, mine)]
                sensitivities.append(("sensitivity", level, design.label, mean_interval(diffs)))
        comparisons += sensitivities
        comparisons += _effects(study, level, vals)

    family = [c[3] for c in comparisons]
    adjusted = sum(c.p is not None for c in family) > 1
    if adjusted:
        family = holm(family, ALPHA)
    out_comparisons = [
        {"kind": kind, "level": level.flags(), "name": name, **_paired_dict(p)}
        for (kind, level, name, _), p in zip(comparisons, family)
    ]
    out = {
        "designs": designs,
        "comparisons": out_comparisons,
        "adjustment": {
            "method": "holm" if adjusted else None,
            "family": sum(c.p is not None for c in family),
            "alpha": ALPHA,
        },
        "diverged": diverged_runs(tasks, records),
        "diagnostics": attention_growth(tasks, records),
    }
    if study.sweep:
        out["lr_sweep"] = {
            "learning_rates": list(study.lrs),
            "loss_at_init": sweep.loss_at_init(study.vocab_size),
            "halves": HALVES_NOTE,
            "designs": list(swept.values()),
        }
    return out


DIAGNOSTICS_NOTE = (
    "Tensor mode: every log_every steps and at the end, one forward pass on a run's first "
    "held-out documents (diagnostics.docs of them): max_attention_logit, the largest q·k/sqrt(D) "
    "before the softmax over every layer, head and real query and the keys it may see; "
    "logit_mean and logit_max, the output logits' over every real position and the vocabulary. "
    "Scalar mode: none (null)."
)
HALVES_NOTE = (
    "Each run's first val_docs held-out documents, split by sweep.split_halves(val_docs, seed) "
    "with the run's seed: every design and rate of one seed is evaluated on the same two "
    "halves. The best rate is chosen on the selection half, the figure reported on the other."
)


def sweep_summary(study: Study, level: Level, design: Design, rows: dict) -> dict:
    """One design's sweep at one level: per rate, the held-out loss over seeds (min(loss,
    loss at init), a diverged run counted at it), the diverged seeds and the largest attention
    logit; its best rate (`sweep.best_lr`) and LR sensitivity (`sweep.sensitivity`)."""
    lrs, seeds = study.lrs, study.seeds
    init = sweep.loss_at_init(study.vocab_size)  # held-out losses leave the z term out
    runs = [[rows[level, design, lr, s] for lr in lrs] for s in seeds]  # [seed][rate]

    def loss(row: dict, key: str) -> float | None:  # a diverged run: loss at init (None)
        return None if row["diverged"] else row[key]

    curves = [[loss(r, "val_loss") for r in by_rate] for by_rate in runs]
    selection = [[loss(r, "selection_loss") for r in by_rate] for by_rate in runs]
    report = [[loss(r, "report_loss") for r in by_rate] for by_rate in runs]
    best = sweep.best_lr(lrs, selection, report, init)
    sens = sweep.sensitivity(curves, init)
    per_rate = []
    for k in range(len(lrs)):
        capped = [sweep.capped(curve[k], init) for curve in curves]
        logits = [r[k]["max_attention_logit"] for r in runs]
        logits = [x for x in logits if x is not None]
        per_rate.append(
            {
                "learning_rate": lrs[k],
                "val_loss": {"mean": mean(capped), "std": sample_std(capped)},
                "diverged": sum(bool(r[k]["diverged"]) for r in runs),
                "max_attention_logit": max(logits) if logits else None,
            }
        )
    return {
        "level": level.flags(),
        "design": design.label,
        "baseline": design == study.baseline,
        "rates": per_rate,
        "best_lr": best.lr,
        "selection_means": list(best.selection_means),
        "report_loss": {"mean": mean(best.report), "std": sample_std(list(best.report))},
        "report_per_seed": list(best.report),
        "sensitivity": {
            "mean": sens.mean,
            "low": sens.low,
            "high": sens.high,
            "confidence": sens.level,
            "per_seed": list(sens.per_seed),
        },
    }


def diverged_runs(tasks: list[Task], records: list[dict]) -> list[dict]:
    """Every diverged run: where, and how (see `worker.record`)."""
    out = []
    for task, record in zip(tasks, records):
        d = record.get("diverged")
        if d:
            where = {"level": task.level.flags(), "design": task.design.label}
            out.append({**where, "learning_rate": task.train.learning_rate, "seed": task.seed,
                        **d})  # fmt: skip
    return out


def attention_growth(tasks: list[Task], records: list[dict]) -> dict | None:
    """The runs whose largest attention logit passed `sweep.ATTENTION_LOGIT_LIMIT` (or became
    non-finite), by level, design and learning rate: how many seeds, and the largest logit
    (None: non-finite). None when no run has diagnostics (scalar mode)."""
    measured, over, of = 0, {}, {}
    for task, record in zip(tasks, records):
        if record.get("diagnostics") is None:
            continue
        measured += 1
        key = (task.level, task.design, task.train.learning_rate)
        of[key] = of.get(key, 0) + 1
        largest = run_diagnostics(record)["max_attention_logit"]
        overflowed = attention_overflowed(record)
        if overflowed or (largest is not None and largest > sweep.ATTENTION_LOGIT_LIMIT):
            seeds, top = over.get(key, (0, 0.0))
            top = None if overflowed or top is None else max(top, largest)
            over[key] = (seeds + 1, top)
    if not measured:
        return None
    return {
        "threshold": sweep.ATTENTION_LOGIT_LIMIT,
        "runs": measured,
        "over": [
            {
                "level": lv.flags(),
                "design": d.label,
                "learning_rate": lr,
                "seeds": n,
                "of": of[lv, d, lr],
                "largest": top,
            }
            for (lv, d, lr), (n, top) in over.items()
        ],
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
    for i, level in enumerate(levels):
        if level.values:
            lines += [f"== {level.label} ==", ""]
        if study.sweep:
            rows = [d for d in summary["lr_sweep"]["designs"] if d["level"] == level.flags()]
            lines += _sweep_table(study, summary, rows, first=i == 0)
            lines.append("")
            lines += _rates_table(summary, rows, first=i == 0)
            if summary.get("diagnostics"):
                lines.append("")
                lines += _attention_table(summary, rows, first=i == 0)
        else:
            rows = [d for d in summary["designs"] if d["level"] == level.flags()]
            lines += _table(study, rows)
        lines.append("")
        lines += _comparisons(study, summary, level)
        lines.append("")
    if study.numeric and summary["comparisons"]:
        lines += _scaling(study, summary)
        lines.append("")
    for note in (diverged_note(summary), growth_note(summary)):
        if note:
            lines += [*textwrap.wrap(note, 100), ""]
    return "\n".join(lines).rstrip("\n")


def _grid(header: list[str], cells: list[list[str]], left: set[int]) -> list[str]:
    """A plain-text table: the `left` columns read from the left, the others from the right."""
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
        ).rstrip()

    return [line(header), "-" * len(line(header)), *map(line, cells)]


def _sweep_table(study: Study, summary: dict, rows: list[dict], first: bool) -> list[str]:
    """A sweep's designs at one level: best rate, its report-half loss, LR sensitivity."""
    n = len(study.lrs)
    header = ["design", "best lr", "loss at best lr", "LR sensitivity", "interval", "diverged"]
    cells = []
    for r in rows:
        sens = r["sensitivity"]
        interval = "-" if sens["low"] is None else f"[{sens['low']:.4f}, {sens['high']:.4f}]"
        diverged = sum(rate["diverged"] for rate in r["rates"])
        cells.append([
            r["design"] + (" *" if r["baseline"] else ""),
            f"{r['best_lr']:g}",
            _mean_std(r["report_loss"]),
            f"{sens['mean']:.4f}",
            interval,
            f"{diverged} of {n * len(study.seeds)}",
        ])  # fmt: skip
    lines = _grid(header, cells, {0, 2})
    if first:
        note = "* " + sweep_note(study.seeds, summary["lr_sweep"], _baseline_name(study))
        lines += textwrap.wrap(note, 100)
    return lines


def sweep_note(seeds, sweep_summary: dict, name: str) -> str:
    """What a sweep's design table shows (the design called `name` is the baseline)."""
    init, n_rates = sweep_summary["loss_at_init"], len(sweep_summary["learning_rates"])
    return (
        f"{name} design. Best lr: of the {n_rates} rates, the lowest mean over "
        f"seeds of the val loss on the selection half of the held-out documents; loss at best "
        f"lr: the val loss on the other (report) half there, mean ± std over seeds. LR "
        f"sensitivity (Wortsman et al. 2023): per seed, the mean over the rates of min(val "
        f"loss, {init:.4f}) minus its lowest, then the mean and 95% t-interval over seeds; "
        f"{init:.4f} = ln V is the loss at initialisation, and a diverged run counts at it. "
        + spread_note(seeds)
    )


def _rates_table(summary: dict, rows: list[dict], first: bool) -> list[str]:
    """Each design's held-out loss at every rate of the sweep (mean ± std over seeds)."""
    rates = summary["lr_sweep"]["learning_rates"]
    header = ["design", *(f"lr {lr:g}" for lr in rates)]
    cells = [
        [r["design"], *(rate_cell(rate) for rate in r["rates"])]
        for r in rows
    ]  # fmt: skip
    lines = _grid(header, cells, set(range(len(header))))
    if first:
        lines += textwrap.wrap(RATES_NOTE, 100)
    return lines


RATES_NOTE = (
    "Val loss at each learning rate: min(loss, ln V), a diverged run counted at ln V, mean ± "
    "std over seeds; (n†): n seeds diverged there."
)


def _attention_table(summary: dict, rows: list[dict], first: bool) -> list[str]:
    """Each design's largest attention logit at every rate of the sweep (max over seeds)."""
    rates = summary["lr_sweep"]["learning_rates"]
    header = ["largest attention logit", *(f"lr {lr:g}" for lr in rates)]
    limit = summary["diagnostics"]["threshold"]
    cells = [[r["design"], *(logit_cell(rate, limit) for rate in r["rates"])] for r in rows]
    lines = _grid(header, cells, {0})
    if first:
        lines += textwrap.wrap(attention_note(limit), 100)
    return lines


def attention_note(threshold: float) -> str:
    return (
        "The largest attention logit q·k/sqrt(D) before the softmax, over the layers, heads, "
        "real query positions and the keys each sees, of each run's samples (every --log-every "
        "steps and at the end, on its first held-out documents), the max over seeds; a "
        f"diverged run's up to its divergence; '-': none, or non-finite. * past {threshold:g}."
    )


def logit_cell(rate: dict, threshold: float) -> str:
    x = rate["max_attention_logit"]
    if x is None:
        return "-"
    return f"{x:.3g}" + (" *" if x > threshold else "")


def rate_cell(rate: dict) -> str:
    cell = _mean_std(rate["val_loss"])
    return cell + (f" ({rate['diverged']}†)" if rate["diverged"] else "")


def _where(entry: dict, lr: bool = True) -> str:
    """'n_embd 16, no qk-norm, lr 0.1': an entry's level, design and (with `lr`) rate."""
    level = ", ".join(f"{k} {v:g}" for k, v in entry["level"].items())
    rate = f"lr {entry['learning_rate']:g}" if lr else ""
    return ", ".join(x for x in (level, entry["design"], rate) if x)


def diverged_note(summary: dict) -> str:
    """The diverged runs, in a sentence (empty when none); in a sweep only how many and how,
    the (n†) marks of its tables saying where."""
    runs = summary.get("diverged") or []
    if not runs:
        return ""
    how = {
        reason: sum(r["reason"] == reason for r in runs) for reason in ("non-finite", "above init")
    }
    what = (
        f"{how['non-finite']} with a non-finite training loss, {how['above init']} with a mean "
        "over the last tenth of the steps above the loss at initialisation"
    )
    if summary.get("lr_sweep"):
        rates = sum(len(d["rates"]) for d in summary["lr_sweep"]["designs"])
        total = rates * len(summary["designs"][0]["seeds"])
        return (
            f"Diverged: {len(runs)} of {total} runs ({what}); the (n†) marks of the tables "
            "above say where. The study went on."
        )
    where: dict[str, list[str]] = {}
    for r in runs:
        where.setdefault(_where(r), []).append(str(r["seed"]))
    places = "; ".join(f"{k} (seed {', '.join(v)})" for k, v in where.items())
    runs_ = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    return f"Diverged ({runs_}: {what}; the study went on): {places}."


def _some(over: dict) -> str:
    """' (3 of 5)' when not every seed at a rate passed the threshold."""
    return "" if over["seeds"] == over["of"] else f" ({over['seeds']} of {over['of']})"


def growth_note(summary: dict) -> str:
    """Where the attention logits grew past the threshold (empty without diagnostics): per
    level and design, the rates, with the seeds that did when not all did, and the largest."""
    d = summary.get("diagnostics")
    if not d:
        return ""
    limit = f"{d['threshold']:g}"
    if not d["over"]:
        return f"Attention logits: no run's largest attention logit passed {limit}."
    groups: dict[str, list[dict]] = {}
    for o in d["over"]:
        groups.setdefault(_where(o, lr=False), []).append(o)
    places = []
    for where, over in groups.items():
        rates = ", ".join(f"{o['learning_rate']:g}{_some(o)}" for o in over)
        tops = [o["largest"] for o in over]
        top = "non-finite" if None in tops else f"{max(tops):.3g}"
        places.append(f"{where + ': ' if where else ''}lr {rates}, up to {top}")
    return (
        f"Attention logits past {limit} (the largest q·k/sqrt(D) before the softmax, sampled "
        f"through training on the first held-out documents), where and at which rates (in "
        f"every seed unless said): {'; '.join(places)}."
    )


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

    note = f"* {_baseline_name(study)} design. " + spread_note(study.seeds)
    note += speed_note(study.stack)
    return [line(header), "-" * len(line(header)), *map(line, cells), *textwrap.wrap(note, 100)]


def speed_note(stack: int) -> str:
    """What the speed columns mean; `stack`: the study's stack size (1: every run alone)."""
    note = (
        "steps/s, tokens/s (training loop only) and wall s (one run: data, training, "
        "validation) are means over seeds."
    )
    if stack > 1:
        note += (
            " Runs trained in a stack share its steps: their steps/s and tokens/s are the "
            "stack's pace, and wall s the stack's wall time over its runs."
        )
    return note


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
    if not study.sweep and designs and designs[0]["val_loss"] is None:
        return ["No validation loss (--val-docs 0 or no held-out documents): no comparison."]
    title = comparison_title(n, summary["adjustment"], _baseline_name(study), study.sweep)
    lines = textwrap.wrap(title, 100)
    differences = [c for c in mine if c["kind"] in ("difference", "sensitivity")]
    effects = [c for c in mine if c["kind"] not in ("difference", "sensitivity")]
    lines += _comparison_rows(differences)
    if effects:
        lines += [""] + textwrap.wrap(effects_note(study.sweep), 100)
        lines += _comparison_rows(effects)
    return lines


def comparison_title(n: int, adjustment: dict, name: str, sweep: bool = False) -> str:
    """What the comparisons of `n` seeds against the baseline called `name` are."""
    dof = f"{n - 1} degree{'s' if n > 2 else ''} of freedom"
    what = f"Val loss minus the {name}'s"
    if sweep:
        what = (
            f"Each design at its own best lr: its report-half val loss minus the {name}'s at "
            f"the {name}'s best lr, and its LR sensitivity minus the {name}'s"
        )
    if n == 1:
        return f"{what}, same seed (one seed: no interval, no claim)."
    if adjustment["method"] == "holm":
        return (
            f"{what}, paired by seed: mean, t-interval ({dof}) and "
            f"p-value, adjusted by Holm's method over all {adjustment['family']} "
            "comparisons of this report (5% family-wise error): each interval is at the level "
            "its Holm step tests (shown), p is Holm's adjusted p-value, and a difference is "
            "called only when Holm rejects 'no difference'."
        )
    return f"{what}, paired by seed: mean, 95% t-interval ({dof}) and p-value."


def effects_note(sweep: bool) -> str:
    on = "the report-half loss at each design's best lr" if sweep else "val loss"
    return (
        f"Factorial effects on {on}, per seed and averaged over the other switches: a main "
        "effect is the mean over the designs with that switch changed minus over those "
        "without; an interaction X × Y is X's effect with Y changed minus X's effect "
        "without Y changed."
    )


def _comparison_rows(comparisons: list[dict]) -> list[str]:
    if not comparisons:
        return []
    names = [comparison_label(c) for c in comparisons]
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


def comparison_label(c: dict) -> str:
    """A comparison's name as the tables show it."""
    prefix = {"main effect": "main effect of ", "sensitivity": "LR sensitivity of "}
    return prefix.get(c["kind"], "") + c["name"]


def _verdict(c: dict) -> str:
    if c["low"] is None or not c["significant"]:
        return c["verdict"]
    up = c["mean_diff"] > 0
    if c["kind"] == "difference":
        return "higher" if up else "lower"
    if c["kind"] == "sensitivity":
        return "more sensitive" if up else "less sensitive"
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
        f"level{SWEPT if study.sweep else ''} (mean and interval as above; ~ marks differences "
        "within seed noise).",
        100,
    )
    lines.append("  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip())
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return lines


SWEPT = ", each design at its own best lr, on the report half"


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
        del row["diverged_step"]  # in "diverged", with the rest
        train_config = {**record["train_config"], "last_n": study.train.last_n}
        run = {
            **row,
            "level": task.level.flags(),
            "switches": task.design.flags(),
            "val_docs": record["val_docs"],
            "diverged": record.get("diverged"),
            "diagnostics": record.get("diagnostics"),
            "data_order": record["data_order"],
            "model_config": record["model_config"],
            "train_config": train_config,
            "environment": record["environment"],
            "losses": record["losses"],
            "stack_size": record.get("stack_size", 1),  # trained in a stack of this many runs
        }
        if study.sweep:
            run["halves"] = record.get("halves")
        runs.append(run)
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
        "diagnostics_note": DIAGNOSTICS_NOTE,
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
