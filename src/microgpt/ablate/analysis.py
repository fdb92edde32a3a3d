"""A study's analysis: per-run rows, per-design summaries over seeds, the comparisons against
the baseline, a sweep's best rates and LR sensitivities, the diverged runs and the attention
logits' growth. Pure functions of the study, its tasks and their run records (as `worker.run`
makes them), so that the analysis of reused runs is the same as one of fresh runs; `results`
writes it to results.json, and the reports are drawn from that file.

What is compared: each design's validation loss minus the baseline's at the same level, paired
by seed; in a full factorial of two-valued design axes (switches or settings) also each axis's
main effect and each two-way interaction, per seed. When a study makes more than one such
comparison, all of them form one family and Holm's method adjusts their p-values, decisions and
intervals (stats.holm).

In a learning-rate sweep (`Study.lrs`) each design is compared at its own best rate: the rate
with the lowest mean over seeds of the val loss on the selection half of the held-out documents,
its figure the val loss on the report half (`sweep.best_lr`); and its LR sensitivity
(`sweep.sensitivity`, on the val loss over all val_docs documents) is compared with the
baseline's too. Both kinds of differences, paired by seed, and the factorial effects on the
best-rate figure, form the one Holm family; the per-rate losses are shown, not tested.
"""

from __future__ import annotations

import itertools

from microgpt.ablate import sweep
from microgpt.ablate.plan import Design, Level, Study, Task
from microgpt.ablate.stats import Paired, holm, mean, mean_interval, sample_std

LOSSES = ("final_loss", "mean_last_n", "val_loss")  # shown as mean ± sample std over seeds
SPEEDS = ("steps_per_s", "tokens_per_s", "wall_seconds")  # shown as means over seeds
FIGURES = ("params", *LOSSES, "last_n", "val_loss_per_token", "steps_per_s", "tokens_per_s")
FIGURES += ("train_seconds", "wall_seconds")  # the record's figures, in the CSV's order
HALVES = ("selection_loss", "report_loss")  # a sweep's run: val loss on each half
DIAGNOSTICS = ("max_attention_logit", "logit_mean", "logit_max")  # see `run_diagnostics`
ALPHA = 0.05


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
    `attention_overflowed`, or if none was recorded: a design file without attention), and
    the output logits' mean and max at the last sample."""
    d = record.get("diagnostics") or {}
    samples = d.get("max_attention_logit") or []
    last = {k: d[k][-1] for k in DIAGNOSTICS[1:]} if d.get(DIAGNOSTICS[1]) else {}
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
                "switches": design.switches(),
                "axes": design.flags(),
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
    (None: non-finite); and the designs whose runs record no attention logit (`unrecorded`: a
    design file whose forward calls no attention block). None when no run has diagnostics
    (scalar mode)."""
    measured, over, of, unrecorded = 0, {}, {}, []
    for task, record in zip(tasks, records):
        if record.get("diagnostics") is None:
            continue
        measured += 1
        if record["diagnostics"].get("max_attention_logit", []) is None:
            if task.design.label not in unrecorded:
                unrecorded.append(task.design.label)
            continue
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
        **({"unrecorded": unrecorded} if unrecorded else {}),
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
    """A full factorial of two or more two-valued design axes, every design having every axis
    (none left out as unused: see `plan.designs_of`): effects are defined."""
    axes = study.axes
    return (
        study.plan == "full"
        and len(axes) >= 2
        and all(len(study.varied[n]) == 2 for n in axes)
        and len(study.designs()) == 2 ** len(axes)
    )


def _effects(study: Study, level: Level, vals) -> list[tuple]:
    """Main effects and two-way interactions on val loss, per seed, then over seeds.

    Main effect of X: mean val loss of the designs with X changed minus of those with X at the
    baseline. Interaction X × Y: X's effect among the designs with Y changed minus X's effect
    among those with Y at the baseline. Each averages over the other axes."""
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
    for x in study.axes:
        effect_x = effect(x, lambda d: True)
        out.append(("main effect", level, _change(study, x), mean_interval(effect_x)))
    for x, y in itertools.combinations(study.axes, 2):
        with_y = effect(x, lambda d, y=y: changed(d, y))
        without_y = effect(x, lambda d, y=y: not changed(d, y))
        diffs = [a - b for a, b in zip(with_y, without_y)]
        name = f"{_change(study, x)} × {_change(study, y)}"
        out.append(("interaction", level, name, mean_interval(diffs)))
    return out


def _change(study: Study, name: str) -> str:
    """The label of a two-valued axis's other value than the baseline's."""
    base = study.baseline.flags()[name]
    return study.axis_table()[name].label(next(v for v in study.varied[name] if v != base))


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
