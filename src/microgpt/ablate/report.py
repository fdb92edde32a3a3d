"""The ablation's results: per-run rows, per-design summaries, the printed table, JSON and CSV.

Pure functions of the study and its run records (as `worker.run` makes them), so that a report
of reused runs is the same as one of fresh runs.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap

from microgpt.ablate.plan import DESIGNS, REFERENCE, Design, Study
from microgpt.ablate.stats import Paired, mean, paired_interval, sample_std

LOSSES = ("final_loss", "mean_last_n", "val_loss")  # shown as mean ± sample std over seeds
SPEEDS = ("steps_per_s", "tokens_per_s", "wall_seconds")  # shown as means over seeds
CSV_COLUMNS = (
    "design",
    "tie_lm_head",
    "input_rmsnorm",
    "seed",
    "params",
    "final_loss",
    "mean_last_n",
    "last_n",
    "val_loss",
    "steps_per_s",
    "tokens_per_s",
    "train_seconds",
    "wall_seconds",
)


def design_of(record: dict) -> Design:
    return Design(record["tie_lm_head"], record["input_rmsnorm"])


def run_row(study: Study, record: dict) -> dict:
    """One run's summary figures, `mean_last_n` over the study's --last-n."""
    tail = record["losses"][-study.train.last_n :]
    row = {k: record.get(k) for k in CSV_COLUMNS}
    row.update(design=design_of(record).label, mean_last_n=mean(tail), last_n=len(tail))
    return row


def summarize(study: Study, records: list[dict]) -> list[dict]:
    """Per design, in DESIGNS order: each figure's mean and sample std over seeds, and the paired
    difference of validation loss against the reference design."""
    rows = [run_row(study, r) for r in records]
    order = _seed_order(study)
    by_design = {d: sorted((r for r in rows if r["design"] == d.label), key=order) for d in DESIGNS}
    ref_val = [r["val_loss"] for r in by_design[REFERENCE]]
    out = []
    for design, runs in by_design.items():
        summary = {
            "design": design.label,
            **design.flags(),
            "reference": design == REFERENCE,
            "seeds": [r["seed"] for r in runs],
            "params": runs[0]["params"],
        }
        for key in LOSSES + SPEEDS:
            values = [r[key] for r in runs]
            if any(v is None for v in values):
                summary[key] = None
            else:
                summary[key] = {"mean": mean(values), "std": sample_std(values)}
        vals = [r["val_loss"] for r in runs]
        if design != REFERENCE and None not in vals + ref_val:
            summary["val_loss_vs_reference"] = _paired_dict(paired_interval(ref_val, vals))
        out.append(summary)
    return out


def _seed_order(study: Study):
    position = {s: i for i, s in enumerate(study.seeds)}
    return lambda row: position[row["seed"]]


def _paired_dict(p: Paired) -> dict:
    return {
        "mean_diff": p.mean_diff,
        "n": p.n,
        "df": p.df if p.n > 1 else None,
        "level": p.level,
        "low": p.low,
        "high": p.high,
        "verdict": p.verdict,
    }


# the printed table ------------------------------------------------------------------------------


def format_table(study: Study, summaries: list[dict]) -> str:
    n = len(study.seeds)
    last_n = min(study.train.last_n, study.train.steps)
    header = ["design", "params", "final loss", f"last {last_n} mean", "val loss"]
    header += ["steps/s", "tokens/s", "wall s"]
    rows = [
        [
            s["design"] + (" *" if s["reference"] else ""),
            f"{s['params']:,}",
            *(_mean_std(s[k]) for k in LOSSES),
            f"{s['steps_per_s']['mean']:,.0f}",
            f"{s['tokens_per_s']['mean']:,.0f}",
            f"{s['wall_seconds']['mean']:.1f}",
        ]
        for s in summaries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 2, 3, 4}  # text and mean ± std cells read from the left; counts from the right

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    lines = [line(header), "-" * len(line(header)), *map(line, rows)]
    seeds = ", ".join(map(str, study.seeds))
    spread = (
        f"± is the sample standard deviation over the {n} seeds ({seeds}). "
        if n > 1
        else f"One seed ({seeds}): no spread. "
    )
    note = (
        "* reference design. " + spread + "steps/s, tokens/s (training loop only) and wall s "
        "(one run: data, training, validation) are means over seeds."
    )
    lines += textwrap.wrap(note, 100)
    lines += [""] + _comparison(study, summaries)
    return "\n".join(lines)


def _mean_std(figure: dict | None) -> str:
    if figure is None:
        return "-"
    if figure["std"] is None:
        return f"{figure['mean']:.4f}"
    return f"{figure['mean']:.4f} ± {figure['std']:.4f}"


def _comparison(study: Study, summaries: list[dict]) -> list[str]:
    n = len(study.seeds)
    if summaries[0]["val_loss"] is None:
        return ["No validation loss (--val-docs 0 or no held-out documents): no comparison."]
    if n == 1:
        title = "Val loss minus the reference's, same seed (one seed: no interval, no claim)."
    else:
        df = f"{n - 1} degree{'s' if n > 2 else ''} of freedom"
        title = f"Val loss minus the reference's, paired by seed: mean and 95% t-interval ({df})."
    width = max(len(s["design"]) for s in summaries) + 2
    lines = [title]
    for s in summaries:
        p = s.get("val_loss_vs_reference")
        if p is None:
            continue
        if p["low"] is None:
            lines.append(f"{s['design']:<{width}}{p['mean_diff']:+.4f}")
            continue
        interval = f"[{p['low']:+.4f}, {p['high']:+.4f}]"
        lines.append(f"{s['design']:<{width}}{p['mean_diff']:+.4f}  {interval}  {p['verdict']}")
    return lines


# files ------------------------------------------------------------------------------------------


def results_json(study: Study, records: list[dict], summaries: list[dict], env: dict) -> bytes:
    runs = []
    for record in records:
        row = run_row(study, record)
        train_config = {**record["train_config"], "last_n": study.train.last_n}
        runs.append(
            {
                **{k: row[k] for k in CSV_COLUMNS},
                "val_docs": record["val_docs"],
                "data_order": record["data_order"],
                "model_config": record["model_config"],
                "train_config": train_config,
                "environment": record["environment"],
                "losses": record["losses"],
            }
        )
    doc = {
        "settings": {
            **study.settings(),
            "seeds": list(study.seeds),
            "last_n": study.train.last_n,
            "input": study.input_path,
        },
        "environment": env,
        "spread": "sample standard deviation over seeds (n - 1)",
        "designs": summaries,
        "runs": runs,
    }
    return (json.dumps(doc, indent=1) + "\n").encode()


def results_csv(study: Study, records: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(run_row(study, record))
    return buf.getvalue().encode()
