"""A study's report as tables of rows, drawn from its checked results.json (`results.Results`).

Each table is a header and rows of (label, cells, verdict, tone), with the sentences that
explain it; the printed report (`text`) and the page (`page`) only lay them out. So a figure is
formatted, a missing value shown and a verdict worded here once, and a new kind of result is
added here once for both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from microgpt.ablate.plan import BUILT_IN, FILE_AXIS, Level
from microgpt.ablate.results import Results


@dataclass(frozen=True)
class Cell:
    """One figure as shown: `text`, and `aside`, what goes with it in a quieter voice (a mean's
    ± std, an interval, a count of diverged seeds). `key`: the figure its table is about;
    `tone`: the verdict of a cell that stands for a comparison (see `verdict`)."""

    text: str
    aside: str = ""
    key: bool = False
    tone: str = ""


@dataclass(frozen=True)
class Row:
    """A design or a comparison: its label, its cells, and for a comparison its verdict in
    words and the verdict's tone. `tag`: the baseline's name, on the baseline's row."""

    label: str
    cells: tuple[Cell, ...]
    verdict: str = ""
    tone: str = ""
    tag: str = ""


@dataclass(frozen=True)
class Table:
    """`kind` names the table (the page's CSS class); `header` has a title for the label, one
    per cell and, when the rows have verdicts, "verdict". `numbers`: the columns of single
    numbers, which plain text aligns on the right (labels and figures with an aside it aligns
    on the left, so that the ± line up; the page aligns every figure on the right).
    `heading`: a heading above it (the page's), `title`: what it shows, before it; `note`: how
    to read it, after it; `key_note`: which figures are its key ones (the page's bold);
    `caveat`: a warning on what it compares, after it at every level (not only the first)."""

    kind: str
    header: tuple[str, ...]
    rows: tuple[Row, ...]
    numbers: frozenset[int] = frozenset()
    heading: str = ""
    title: str = ""
    note: str = ""
    key_note: str = ""
    caveat: str = ""

    @property
    def verdicts(self) -> bool:
        return self.header[-1] == "verdict"


# figures ----------------------------------------------------------------------------------------


def figure(f: dict | None) -> Cell:
    """A mean ± sample std over seeds ('-': none; no ± with one seed)."""
    if f is None:
        return Cell("-")
    if f["std"] is None:
        return Cell(f"{f['mean']:.4f}")
    return Cell(f"{f['mean']:.4f}", f"± {f['std']:.4f}")


def _mean(f: dict | None, spec: str) -> Cell:
    return Cell("-" if f is None else format(f["mean"], spec))


def _interval(low: float | None, high: float | None, spec: str) -> str:
    return "-" if low is None or high is None else f"[{low:{spec}}, {high:{spec}}]"


def _tag(results: Results, entry: dict) -> str:
    return results.baseline_name() if entry["baseline"] else ""


# a level's figures ------------------------------------------------------------------------------


def figure_tables(results: Results, level: Level) -> list[Table]:
    """A level's figures: its designs, or a sweep's designs at their best rates, their loss at
    every rate and (with diagnostics) their largest attention logit at every rate."""
    if not results.lr_sweep:
        return [design_table(results, level)]
    tables = [sweep_table(results, level), rates_table(results, level)]
    if results.diagnostics:
        tables.append(attention_table(results, level))
    return tables


def design_table(results: Results, level: Level) -> Table:
    last_n = min(results.last_n, results.steps)
    header = ("design", "params", "final loss", f"last {last_n} mean", "val loss")
    header += ("steps/s", "tokens/s", "wall s")
    rows = tuple(
        Row(
            d["design"],
            (
                Cell(f"{d['params']:,}"),
                figure(d["final_loss"]),
                figure(d["mean_last_n"]),
                replace(figure(d["val_loss"]), key=True),
                _mean(d["steps_per_s"], ",.0f"),
                _mean(d["tokens_per_s"], ",.0f"),
                _mean(d["wall_seconds"], ".1f"),
            ),
            tag=_tag(results, d),
        )
        for d in results.at(level, results.designs)
    )
    note = spread_note(results.seeds) + speed_note(results.stack)
    return Table("designs", header, rows, frozenset({1, 5, 6, 7}), note=note)


def spread_note(seeds) -> str:
    listed = ", ".join(map(str, seeds))
    if len(seeds) > 1:
        return f"± is the sample standard deviation over the {len(seeds)} seeds ({listed}). "
    return f"One seed ({listed}): no spread. "


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


def sweep_table(results: Results, level: Level) -> Table:
    """A sweep's designs at one level: best rate, its report-half loss, LR sensitivity."""
    sweep = results.lr_sweep
    runs = len(sweep["learning_rates"]) * len(results.seeds)
    rows = []
    for r in results.at(level, sweep["designs"]):
        sens = r["sensitivity"]
        diverged = sum(rate["diverged"] for rate in r["rates"])
        cells = (
            Cell(f"{r['best_lr']:g}"),
            replace(figure(r["report_loss"]), key=True),
            Cell(f"{sens['mean']:.4f}"),
            Cell(_interval(sens["low"], sens["high"], ".4f")),
            Cell(f"{diverged} of {runs}"),
        )
        rows.append(Row(r["design"], cells, tag=_tag(results, r)))
    header = ("design", "best lr", "loss at best lr", "LR sensitivity", "interval", "diverged")
    note = sweep_note(results.seeds, sweep)
    return Table("sweep", header, tuple(rows), frozenset({1, 3, 4, 5}), note=note)


def sweep_note(seeds, sweep: dict) -> str:
    """What a sweep's design table shows."""
    init, n_rates = sweep["loss_at_init"], len(sweep["learning_rates"])
    return (
        f"Best lr: of the {n_rates} rates, the lowest mean over "
        f"seeds of the val loss on the selection half of the held-out documents; loss at best "
        f"lr: the val loss on the other (report) half there, mean ± std over seeds. LR "
        f"sensitivity (Wortsman et al. 2023): per seed, the mean over the rates of min(val "
        f"loss, {init:.4f}) minus its lowest, then the mean and 95% t-interval over seeds; "
        f"{init:.4f} = ln V is the loss at initialisation, and a diverged run counts at it. "
        + spread_note(seeds)
    )


def _rate_header(results: Results, corner: str = "design") -> tuple[str, ...]:
    return (corner, *(f"lr {lr:g}" for lr in results.lr_sweep["learning_rates"]))


def rates_table(results: Results, level: Level) -> Table:
    """Each design's held-out loss at every rate of the sweep (mean ± std over seeds)."""
    rows = []
    for r in results.at(level, results.lr_sweep["designs"]):
        cells = []
        for rate in r["rates"]:
            cell = figure(rate["val_loss"])
            mark = f"({rate['diverged']}†)" if rate["diverged"] else ""
            aside = " ".join(x for x in (cell.aside, mark) if x)
            cells.append(replace(cell, aside=aside, key=rate["learning_rate"] == r["best_lr"]))
        rows.append(Row(r["design"], tuple(cells)))
    heading = "Val loss at each learning rate"
    return Table("rates", _rate_header(results), tuple(rows), heading=heading, note=RATES_NOTE,
                 key_note="the design's best lr")  # fmt: skip


RATES_NOTE = (
    "Val loss at each learning rate: min(loss, ln V), a diverged run counted at ln V, mean ± "
    "std over seeds; (n†): n seeds diverged there."
)


def attention_table(results: Results, level: Level) -> Table:
    """Each design's largest attention logit at every rate of the sweep (max over seeds)."""
    limit = results.diagnostics["threshold"]
    rows = tuple(
        Row(r["design"], tuple(Cell(logit_cell(rate, limit)) for rate in r["rates"]))
        for r in results.at(level, results.lr_sweep["designs"])
    )
    header = _rate_header(results, "largest attention logit")  # what its cells are
    heading = "Largest attention logit at each learning rate"
    numbers = frozenset(range(1, len(header)))
    return Table("attention", header, rows, numbers, heading, note=attention_note(limit))


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


# a level's comparisons --------------------------------------------------------------------------

NO_VAL_LOSS = "No validation loss (--val-docs 0 or no held-out documents): no comparison."


def comparison_tables(results: Results, level: Level) -> list[Table] | None:
    """The level's differences to the baseline and, in a full factorial, its effects; None
    when no design has a validation loss to compare (`NO_VAL_LOSS`)."""
    designs = results.at(level, results.designs)
    if not results.lr_sweep and designs and all(d["val_loss"] is None for d in designs):
        return None
    name, sweep = results.baseline_name(), results.lr_sweep is not None
    mine = results.at(level, results.comparisons)
    differences = [c for c in mine if c["kind"] in ("difference", "sensitivity")]
    effects = [c for c in mine if c["kind"] not in ("difference", "sensitivity")]
    title = comparison_title(len(results.seeds), results.adjustment, name, sweep)
    against = comparison_table(differences, name, "design", f"Against the {name}", title)
    tables = [replace(against, caveat=params_caveat(designs, listed=sweep))]
    if effects:
        note = effects_note(sweep)
        tables.append(comparison_table(effects, name, "effect", "Factorial effects", note))
    return tables


def comparison_table(comparisons: list[dict], name: str, first: str, heading: str,
                     title: str) -> Table:  # fmt: skip
    """Each comparison's mean difference, interval at its level, p-value and verdict."""
    rows = []
    for c in comparisons:
        interval = _interval(c["low"], c["high"], "+.4f")
        level = p = "-"
        if interval != "-":
            level = f"{100 * c['confidence']:.1f}%"
            p = "-" if c["p"] is None else f"{c['p']:.3f}" if c["p"] >= 0.001 else "<0.001"
        cells = (Cell(f"{c['mean_diff']:+.4f}"), Cell(interval), Cell(level), Cell(p))
        words, tone = verdict(c, name)
        rows.append(Row(comparison_label(c), cells, words, tone))
    header = (first, "mean diff", "interval", "level", "p", "verdict")
    numbers = frozenset({1, 3, 4})
    return Table("comparisons", header, tuple(rows), numbers, heading, title)


def params_caveat(designs: list[dict], listed: bool = False) -> str:
    """A warning when a design file's design at a level (its summary) has another parameter
    count than the built-in model with the same values of the other axes (empty when none
    has): then a comparison is not of the design alone. A built-in switch that adds or drops
    weights is not warned of (a tied head drops lm_head: those weights are the design
    question, and the params column shows them). `listed`: name each count (a sweep's tables
    have no params column)."""
    apart = []
    for d in designs:
        axes = d.get("axes") or {}  # none in a file written before design files
        file = axes.get(FILE_AXIS, BUILT_IN)
        if file == BUILT_IN:
            continue
        own = {k: v for k, v in axes.items() if k != FILE_AXIS and not k.startswith(f"{file}.")}
        twin = next((t for t in designs if t.get("axes") == {**own, FILE_AXIS: BUILT_IN}), None)
        if twin is not None and twin["params"] != d["params"]:
            apart.append((d, twin))
    if not apart:
        return ""
    if listed:
        which = "; ".join(
            f"{d['design']} {d['params']:,} against {t['design']} {t['params']:,}" for d, t in apart
        )
    else:
        which = f"{', '.join(d['design'] for d, _ in apart)}: the params column"
    return (
        f"Not like for like: the designs' parameter counts differ ({which}), so a difference "
        "may come from the weights a design file adds or drops, not from the design alone."
    )


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
        f"Factorial effects on {on}, per seed and averaged over the others: a main effect "
        "is the mean over the designs with that switch or setting changed minus over those "
        "without; an interaction X × Y is X's effect with Y changed minus X's effect "
        "without Y changed."
    )


def comparison_label(c: dict) -> str:
    """A comparison's name as the tables show it."""
    prefix = {"main effect": "main effect of ", "sensitivity": "LR sensitivity of "}
    return prefix.get(c["kind"], "") + c["name"]


def verdict(c: dict, name: str) -> tuple[str, str]:
    """A comparison's verdict in plain words (`name`: the baseline's), and its tone: better,
    worse, mixed (an interaction), noise (within seed noise) or none (one seed)."""
    if c["low"] is None or c["high"] is None:
        return "one seed: no interval, no claim", "none"
    if not c["significant"]:
        return "within seed noise: no difference shown", "noise"
    up = c["mean_diff"] > 0
    if c["kind"] == "difference":
        if up:
            return f"higher val loss than the {name}: worse", "worse"
        return f"lower val loss than the {name}: better", "better"
    if c["kind"] == "sensitivity":
        if up:
            return f"more sensitive to the lr than the {name}: worse", "worse"
        return f"less sensitive to the lr than the {name}: better", "better"
    if c["kind"] == "main effect":
        return ("raises val loss: worse", "worse") if up else ("lowers val loss: better", "better")
    if up:
        return "together, higher val loss than the two effects add up to", "mixed"
    return "together, lower val loss than the two effects add up to", "mixed"


# across levels ----------------------------------------------------------------------------------


def scaling_table(results: Results, levels: list[Level], within: Level | None = None) -> Table:
    """Each design's difference to the baseline (mean and interval) at each of `levels`, all
    of which share the values of `within` (its columns are titled with the rest; None: all
    levels, titled in full)."""
    within = within or Level(())
    diffs = [c for c in results.comparisons if c["kind"] == "difference"]
    rows = []
    for design in dict.fromkeys(c["name"] for c in diffs):
        cells = []
        for lv in levels:
            mine = [c for c in results.at(lv, diffs) if c["name"] == design]
            if not mine:
                cells.append(Cell("-"))
                continue
            c = mine[0]
            interval = _interval(c["low"], c["high"], "+.4f")
            tone = verdict(c, results.baseline_name())[1]
            cells.append(Cell(f"{c['mean_diff']:+.4f}", "" if interval == "-" else interval,
                              tone=tone))  # fmt: skip
        rows.append(Row(design, tuple(cells)))
    header = ("design", *(Level(lv.values[len(within.values) :]).label for lv in levels))
    swept = SWEPT if results.lr_sweep else ""
    title = f"Val loss minus the {results.baseline_name()}'s at each level{swept}"
    return Table("scaling", header, tuple(rows), title=title)


SWEPT = ", each design at its own best lr, on the report half"


def scaling_question(numeric: list[str]) -> str:
    verb = "changes" if len(numeric) == 1 else "change"
    return f"Does it hold as {' and '.join(numeric)} {verb}?"


def scales(results: Results) -> bool:
    """Whether a numeric setting varies and there are differences to show across it."""
    return bool(results.numeric) and any(c["kind"] == "difference" for c in results.comparisons)


# stability --------------------------------------------------------------------------------------


def _where(entry: dict, lr: bool = True) -> str:
    """'n_embd 16, no qk-norm, lr 0.1': an entry's level, design and (with `lr`) rate."""
    level = ", ".join(f"{k} {v:g}" for k, v in entry["level"].items())
    rate = f"lr {entry['learning_rate']:g}" if lr else ""
    return ", ".join(x for x in (level, entry["design"], rate) if x)


def diverged_note(results: Results) -> str:
    """The diverged runs, in a sentence (empty when none); in a sweep only how many and how,
    the (n†) marks of its tables saying where."""
    runs = results.diverged
    if not runs:
        return ""
    how = {
        reason: sum(r["reason"] == reason for r in runs) for reason in ("non-finite", "above init")
    }
    what = (
        f"{how['non-finite']} with a non-finite training loss, {how['above init']} with a mean "
        "over the last tenth of the steps above the loss at initialisation"
    )
    if results.lr_sweep:
        rates = sum(len(d["rates"]) for d in results.lr_sweep["designs"])
        total = rates * len(results.seeds)
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


def growth_note(results: Results) -> str:
    """Where the attention logits grew past the threshold (empty without diagnostics): per
    level and design, the rates, with the seeds that did when not all did, and the largest."""
    d = results.diagnostics
    if not d:
        return ""
    limit = f"{d['threshold']:g}"
    unrecorded = d.get("unrecorded") or []
    none = ""
    if unrecorded:
        none = (
            f" {', '.join(unrecorded)} record{'s' if len(unrecorded) == 1 else ''} no "
            "attention logit: a design file's forward that calls no attention block of "
            "microgpt.tensor.blocks has none to sample ('-' in the tables)."
        )
    if not d["over"]:
        return f"Attention logits: no run's largest attention logit passed {limit}.{none}"
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
        f"every seed unless said): {'; '.join(places)}.{none}"
    )


def stability_notes(results: Results) -> list[str]:
    """The diverged runs and the attention logits past the threshold, in sentences."""
    return [n for n in (diverged_note(results), growth_note(results)) if n]
