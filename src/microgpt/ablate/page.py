"""A study's report as one page: `report.html`, written by `microgpt ablate` and rewritten by
`microgpt report DIR` from DIR/results.json alone.

One self-contained HTML file: inline CSS, the plots as base64 PNG data URIs, no script, nothing
fetched. It is a pure function of the checked results.json (`readback.Results`) and its pictures
(`plot.draw`), so an old or copied study folder gets the same page as a fresh one. Every text
the file holds is HTML-escaped (`_e`) before it reaches the page.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import struct
from pathlib import Path

from microgpt import __version__, tensorfile
from microgpt.ablate.plan import Level
from microgpt.ablate.readback import Results
from microgpt.ablate.report import (
    RATES_NOTE,
    SWEPT,
    attention_note,
    comparison_label,
    comparison_title,
    diverged_note,
    effects_note,
    growth_note,
    logit_cell,
    scaling_question,
    speed_note,
    spread_note,
    sweep_note,
)
from microgpt.errors import UserError

PAGE = "report.html"
NO_PLOTS = (
    "matplotlib is not installed, so this page has no plots: pip install 'microgpt[plot]', "
    "then microgpt report DIR writes it again with them."
)


# the command ------------------------------------------------------------------------------------


def add_report_parser(sub) -> None:
    r = sub.add_parser(
        "report",
        help="(re)write a study's report.html from its results.json",
        description="Write DIR/report.html, one self-contained page (tables, verdicts, plots), "
        "from DIR/results.json alone: for a study folder that microgpt ablate wrote (its "
        "--out), old, copied or moved.",
    )
    r.add_argument("dir", metavar="DIR", help="a study folder: microgpt ablate's --out")
    r.set_defaults(run=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    print(f"wrote {rewrite(args.dir)}")
    return 0


def rewrite(folder: str | Path) -> Path:
    """Reads folder/results.json, draws its plots and writes folder/report.html."""
    from microgpt.ablate.plot import draw
    from microgpt.ablate.readback import read

    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{folder} {what}: give a study folder (microgpt ablate's --out)")
    results = read(folder / "results.json")
    return write_page(folder, results, draw(results))


def write_page(folder: Path, results: Results, pictures: dict[str, bytes] | None) -> Path:
    path = Path(folder) / PAGE
    try:
        tensorfile.write_atomic(path, render(results, pictures).encode())
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return path


# the page ---------------------------------------------------------------------------------------


def _e(value) -> str:
    """Any value as escaped text: strings as they are, other JSON values as JSON."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return html.escape(text, quote=True)


def render(results: Results, pictures: dict[str, bytes] | None) -> str:
    """The whole page."""
    levels = results.levels()
    name = results.baseline_name()
    body = [_header(results, name)]
    for i, level in enumerate(levels):
        body.append(_level_section(results, level, name, len(levels) > 1, first=i == 0))
    if results.numeric and any(c["kind"] == "difference" for c in results.comparisons):
        body.append(_scaling_section(results, name))
    body.append(_stability_section(results))
    body.append(_plots_section(pictures))
    body.append(_runs_section(results))
    body.append(_settings_section(results))
    body.append(
        f"<footer>Written by microgpt {_e(__version__)} from results.json alone; "
        "<code>microgpt report DIR</code> writes it again.</footer>"
    )
    title = f"microgpt ablate: {results.mode} mode, {_shape(results)}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


def _shape(results: Results) -> str:
    """'4 designs × 2 levels × 5 seeds = 40 runs'."""
    parts = [_count(len(results.design_labels()), "design")]
    if results.numeric:
        parts.append(_count(len(results.levels()), "level"))
    if results.lr_sweep:
        parts.append(_count(len(results.lr_sweep["learning_rates"]), "learning rate"))
    parts.append(_count(len(results.seeds), "seed"))
    return f"{' × '.join(parts)} = {_count(len(results.runs), 'run')}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _plain(value) -> str:
    """A settings value in words: strings as they are, lists and objects compactly."""
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    return json.dumps(value)


def _shared(results: Results, settings: dict) -> dict:
    """The settings every run shares, those a level sets shown as varied with their values."""
    varied = results.settings["varied"]
    return {
        k: f"varied: {_plain(varied.get(k, []))}" if k in varied else v for k, v in settings.items()
    }


def _header(results: Results, name: str) -> str:
    s = results.settings
    model = _shared(results, s["model"])
    size = "; ".join(
        f"{k} {_plain(model[k])}"
        for k in ("n_layer", "n_embd", "n_head", "block_size")
        if k in model
    )
    train = _shared(results, s["train"])
    facts = [
        ("mode", results.mode),
        ("runs", _shape(results)),
        ("steps", train["steps"] if "steps" in results.numeric else f"{results.steps:,}"),
        ("batch", train.get("batch_size", "-")),
        ("model", size or "-"),
        ("data", s.get("input") or "the bundled names"),
        ("varied", "; ".join(f"{k}: {_plain(v)}" for k, v in s["varied"].items()) or "-"),
        (name, results.baseline or "-"),
    ]
    if results.lr_sweep:
        rates = ", ".join(f"{lr:g}" for lr in results.lr_sweep["learning_rates"])
        facts.insert(2, ("learning rates", f"swept: {rates}"))
    chips = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts)
    return (
        f"<header><h1>microgpt ablate: {_e(results.mode)} mode</h1>\n"
        "<p class=lead>Every design trained on the same seeds, train/validation split and data "
        f"order; each is compared with the {_e(name)} on validation loss, paired by seed. Lower "
        f"loss is better.{_sweep_lead(results)}</p>\n<dl class=facts>{chips}</dl>\n"
        f"{_in_short(results, name)}</header>"
    )


def _sweep_lead(results: Results) -> str:
    if not results.lr_sweep:
        return ""
    return _e(
        " Every design is trained at every learning rate of the sweep and compared at its own "
        "best rate, chosen on one half of the held-out documents and reported on the other, "
        "and by its LR sensitivity."
    )


def _in_short(results: Results, name: str) -> str:
    """The verdicts of the differences to the baseline, in a sentence or a short list."""
    diffs = [c for c in results.comparisons if c["kind"] in ("difference", "sensitivity")]
    if not diffs:
        return ""
    several = len(results.levels()) > 1
    called = []
    for c in diffs:
        words, tone = verdict(c, name)
        if tone in ("better", "worse"):
            where = f" at {Level(tuple(c['level'].items())).label}" if several else ""
            label = comparison_label(c)
            called.append(
                f"<li>{_e(label)}{_e(where)}: <span class='v {tone}'>{_e(words)}</span> "
                f"({c['mean_diff']:+.4f})</li>"
            )
    if results.adjustment["family"] > 1 and results.adjustment["method"] == "holm":
        family = f" ({results.adjustment['family']} comparisons, Holm-adjusted)"
    else:
        family = ""
    if not called:
        if all(c["low"] is None or c["high"] is None for c in diffs):
            text = f"One seed: no interval, so no design is called better or worse than the {name}."
        else:
            text = f"No design differs from the {name} beyond seed noise{family}."
        return f"<p class=short><b>In short:</b> {_e(text)}</p>"
    rest = len(diffs) - len(called)
    tail = f"<li>{rest} other{'s' if rest != 1 else ''}: within seed noise</li>" if rest else ""
    return f"<div class=short><b>In short</b>{_e(family)}:<ul>{''.join(called)}{tail}</ul></div>"


def _level_section(results: Results, level, name: str, several: bool, first: bool) -> str:
    """One level's design table and comparisons; the first explains them, the others refer
    back to it."""
    flags = level.flags()
    rows = [d for d in results.designs if d["level"] == flags]
    mine = [c for c in results.comparisons if c["level"] == flags]
    heading = f"Results at {level.label}" if several else "Results"
    out = [f"<section><h2>{_e(heading)}</h2>"]
    if results.lr_sweep:
        out.append(_sweep_tables(results, level, name, first))
    else:
        out.append(_design_table(results, rows, name, first))
    if rows and all(r["val_loss"] is None for r in rows) and not results.lr_sweep:
        out.append(
            "<p>No validation loss (--val-docs 0 or no held-out documents): no comparison.</p>"
        )
    else:
        out.append(f"<h3>Against the {_e(name)}</h3>")
        if first:
            sweep = results.lr_sweep is not None
            title = comparison_title(len(results.seeds), results.adjustment, name, sweep)
            out.append(f"<p class=note>{_e(title)}</p>")
        differences = [c for c in mine if c["kind"] in ("difference", "sensitivity")]
        effects = [c for c in mine if c["kind"] not in ("difference", "sensitivity")]
        out.append(_comparison_table(differences, name, "design"))
        if effects:
            out.append("<h3>Factorial effects</h3>")
            if first:
                sweep = results.lr_sweep is not None
                out.append(f"<p class=note>{_e(effects_note(sweep))}</p>")
            out.append(_comparison_table(effects, name, "effect"))
    out.append("</section>")
    return "\n".join(out)


def _sweep_tables(results: Results, level: Level, name: str, first: bool) -> str:
    """A sweep's two tables at one level: each design at its best rate with its LR
    sensitivity, and each design's loss at every rate."""
    sweep, flags = results.lr_sweep, level.flags()
    rows = [d for d in sweep["designs"] if d["level"] == flags]
    runs = len(sweep["learning_rates"]) * len(results.seeds)
    head = ["design", "best lr", "loss at best lr", "LR sensitivity", "interval", "diverged"]
    body = []
    for r in rows:
        tag = f" <span class=tag>{_e(name)}</span>" if r["baseline"] else ""
        sens = r["sensitivity"]
        interval = "-"
        if sens["low"] is not None and sens["high"] is not None:
            interval = f"[{sens['low']:.4f}, {sens['high']:.4f}]"
        diverged = sum(rate["diverged"] for rate in r["rates"])
        cells = [
            f"<td class=label>{_e(r['design'])}{tag}</td>",
            f"<td class=num>{r['best_lr']:g}</td>",
            f'<td class="num key">{_mean_std(r["report_loss"])}</td>',
            f"<td class=num>{sens['mean']:.4f}</td>",
            f"<td class=num>{interval}</td>",
            f"<td class=num>{diverged} of {runs}</td>",
        ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    out = [_table("sweep", head, body)]
    if first:
        note = f"{name}: the baseline of every comparison. "
        note += sweep_note(results.seeds, sweep, name).split(" design. ", 1)[1]
        out.append(f"<p class=note>{_e(note)}</p>")
    head = ["design", *(f"lr {lr:g}" for lr in sweep["learning_rates"])]
    body = []
    for r in rows:
        cells = [f"<td class=label>{_e(r['design'])}</td>"]
        for rate in r["rates"]:
            mark = f" <span class=pm>({rate['diverged']}†)</span>" if rate["diverged"] else ""
            best = " key" if rate["learning_rate"] == r["best_lr"] else ""
            cells.append(f'<td class="num{best}">{_mean_std(rate["val_loss"])}{mark}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    out.append("<h3>Val loss at each learning rate</h3>")
    out.append(_table("rates", head, body))
    if first:
        out.append(f"<p class=note>{_e(RATES_NOTE)} Bold: the design's best lr.</p>")
    diagnostics = results.diagnostics
    if diagnostics:
        body = [
            "<tr>"
            + f"<td class=label>{_e(r['design'])}</td>"
            + "".join(
                f"<td class=num>{_e(logit_cell(rate, diagnostics['threshold']))}</td>"
                for rate in r["rates"]
            )
            + "</tr>"
            for r in rows
        ]
        out.append("<h3>Largest attention logit at each learning rate</h3>")
        out.append(_table("attention", head, body))
        if first:
            note = attention_note(diagnostics["threshold"])
            out.append(f"<p class=note>{_e(note)}</p>")
    return "\n".join(out)


def _mean_std(figure: dict | None) -> str:
    if figure is None:
        return "-"
    if figure["std"] is None:
        return f"{figure['mean']:.4f}"
    return f"{figure['mean']:.4f} <span class=pm>± {figure['std']:.4f}</span>"


def _mean(figure: dict | None, spec: str) -> str:
    return "-" if figure is None else format(figure["mean"], spec)


def _design_table(results: Results, rows: list[dict], name: str, first: bool) -> str:
    last_n = min(results.last_n, results.steps)
    head = ["design", "params", "final loss", f"last {last_n} mean", "val loss"]
    head += ["steps/s", "tokens/s", "wall s"]
    body = []
    for r in rows:
        tag = f" <span class=tag>{_e(name)}</span>" if r["baseline"] else ""
        cells = [
            f"<td class=label>{_e(r['design'])}{tag}</td>",
            f"<td class=num>{r['params']:,}</td>",
            *(f"<td class=num>{_mean_std(r[k])}</td>" for k in ("final_loss", "mean_last_n")),
            f'<td class="num key">{_mean_std(r["val_loss"])}</td>',
            f"<td class=num>{_mean(r['steps_per_s'], ',.0f')}</td>",
            f"<td class=num>{_mean(r['tokens_per_s'], ',.0f')}</td>",
            f"<td class=num>{_mean(r['wall_seconds'], '.1f')}</td>",
        ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    if not first:
        return _table("designs", head, body)
    note = f"{name}: the baseline of every comparison. " + spread_note(results.seeds)
    note += speed_note(results.settings.get("stack", 1))
    return _table("designs", head, body) + f"\n<p class=note>{_e(note)}</p>"


def _table(cls: str, head: list[str], body: list[str], text: tuple[int, ...] = (0,)) -> str:
    """A table in its own box (which scrolls sideways rather than the page, should it need to);
    the `text` columns read from the left, the others are numbers."""
    ths = "".join(
        f"<th{'' if i in text else ' class=num'}>{_e(h)}</th>" for i, h in enumerate(head)
    )
    return (
        f"<div class=box><table class={cls}><thead><tr>{ths}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def verdict(c: dict, name: str) -> tuple[str, str]:
    """A comparison's verdict in plain words, and its tone (a CSS class)."""
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


def _comparison_table(comparisons: list[dict], name: str, first: str) -> str:
    if not comparisons:
        return ""
    head = [first, "mean diff", "interval", "level", "p", "verdict"]
    body = []
    for c in comparisons:
        label = comparison_label(c)
        words, tone = verdict(c, name)
        if c["low"] is None or c["high"] is None:
            interval = level = p = "-"
        else:
            interval = f"[{c['low']:+.4f}, {c['high']:+.4f}]"
            level = f"{100 * c['confidence']:.1f}%"
            p = "-" if c["p"] is None else f"{c['p']:.3f}" if c["p"] >= 0.001 else "&lt;0.001"
        cells = [
            f"<td class=label>{_e(label)}</td>",
            f"<td class=num>{c['mean_diff']:+.4f}</td>",
            f"<td class=num>{interval}</td>",
            f"<td class=num>{level}</td>",
            f"<td class=num>{p}</td>",
            f"<td class=verdict><span class='v {tone}'>{_e(words)}</span></td>",
        ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return _table("comparisons", head, body, text=(0, 5))


SCALING_COLUMNS = 6  # levels side by side in one table: more would not fit 1280 px


def _scaling_section(results: Results, name: str) -> str:
    """Each design's difference to the baseline at every level: one table, or with several
    numeric settings one per value of all but the last, at most SCALING_COLUMNS levels wide."""
    diffs = [c for c in results.comparisons if c["kind"] == "difference"]
    names = list(dict.fromkeys(c["name"] for c in diffs))
    tables = []
    for title, levels in _level_groups(results.levels()):
        body = []
        for design in names:
            cells = [f"<td class=label>{_e(design)}</td>"]
            for lv in levels:
                flags = lv.flags()
                c = next((c for c in diffs if c["name"] == design and c["level"] == flags), None)
                cells.append(_scaling_cell(c, name))
            body.append(f"<tr>{''.join(cells)}</tr>")
        head = ["design", *(Level(lv.values[len(title.values) :]).label for lv in levels)]
        if title.values:
            tables.append(f"<h3>At {_e(title.label)}</h3>")
        tables.append(_table("scaling", head, body))
    swept = SWEPT if results.lr_sweep else ""
    note = (
        f"Val loss minus the {name}'s at each level{swept}: the mean over seeds and, below it, the "
        "interval as in the comparisons above. Green: lower, a difference beyond seed noise; "
        "red: higher; grey: within seed noise."
    )
    return (
        f"<section><h2>{_e(scaling_question(results.numeric))}</h2>\n"
        f"<p class=note>{_e(note)}</p>\n" + "\n".join(tables) + "</section>"
    )


def _level_groups(levels: list[Level]) -> list[tuple[Level, list[Level]]]:
    """The levels in groups of at most SCALING_COLUMNS: with one numeric setting in order, with
    several by the values of all but the last (each group titled with those values)."""
    groups: dict[Level, list[Level]] = {}
    for lv in levels:
        groups.setdefault(Level(lv.values[:-1]), []).append(lv)
    out = []
    for title, members in groups.items():
        for i in range(0, len(members), SCALING_COLUMNS):
            out.append((title, members[i : i + SCALING_COLUMNS]))
    return out


def _scaling_cell(c: dict | None, name: str) -> str:
    if c is None:
        return "<td class=num>-</td>"
    text = f"{c['mean_diff']:+.4f}"
    if c["low"] is not None and c["high"] is not None:
        text += f"<br><span class=pm>[{c['low']:+.4f}, {c['high']:+.4f}]</span>"
    _, tone = verdict(c, name)
    return f"<td class='num {tone}'>{text}</td>"


def _stability_section(results: Results) -> str:
    """The diverged runs and the attention logits past the threshold, in sentences."""
    notes = [n for n in (diverged_note(results.doc), growth_note(results.doc)) if n]
    if not notes:
        return ""
    paragraphs = "".join(f"<p>{_e(n)}</p>" for n in notes)
    return f"<section><h2>Divergence and attention logits</h2>\n{paragraphs}</section>"


def _plots_section(pictures: dict[str, bytes] | None) -> str:
    if pictures is None:
        return f"<section><h2>Plots</h2><p class=missing>{_e(NO_PLOTS)}</p></section>"
    captions = {
        "loss_curves.png": "Training loss (smoothed; mean over seeds, band ±1 std) and, past "
        "the last step, each design's validation loss.",
        "scaling.png": "Each design's val loss minus the baseline's against the level, with "
        "the intervals of the comparisons.",
        "lr_sweep.png": "Final held-out loss against the learning rate: min(loss, ln V), a "
        "diverged run counted at ln V (crosses at the top), mean over seeds and band ±1 std; "
        "a ring marks each design's best lr.",
    }
    figures = []
    for file, png in pictures.items():
        width, height = png_size(png)
        data = base64.b64encode(png).decode("ascii")
        caption = captions.get(file, file)
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" width={width} height={height} '
            f'alt="{_e(caption)}"><figcaption>{_e(caption)} ({_e(file)} in the study folder)'
            "</figcaption></figure>"
        )
    return "<section><h2>Plots</h2>\n" + "\n".join(figures) + "</section>"


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def _runs_section(results: Results) -> str:
    numeric, sweep = results.numeric, results.lr_sweep is not None
    diagnostics = results.diagnostics is not None
    head = [*numeric, "design", *(["lr"] if sweep else []), "seed", "params", "final loss"]
    head += [f"last {results.last_n} mean", "val loss", "steps/s", "wall s", "diverged"]
    head += ["max attn logit"] if diagnostics else []

    def num(x, spec=".4f") -> str:
        return "-" if x is None else format(x, spec)

    body = []
    for r in results.runs:
        cells = [f"<td class=num>{_e(r['level'].get(k))}</td>" for k in numeric]
        cells.append(f"<td class=label>{_e(r['design'])}</td>")
        if sweep:
            cells.append(f"<td class=num>{num(r.get('learning_rate'), 'g')}</td>")
        diverged = r.get("diverged")
        gone = f"step {diverged['step']}, {diverged['reason']}" if diverged else ""
        cells += [
            f"<td class=num>{r['seed']}</td>",
            f"<td class=num>{r['params']:,}</td>",
            f"<td class=num>{num(r['final_loss'])}</td>",
            f"<td class=num>{num(r['mean_last_n'])}</td>",
            f"<td class=num>{num(r['val_loss'])}</td>",
            f"<td class=num>{num(r['steps_per_s'], ',.0f')}</td>",
            f"<td class=num>{num(r['wall_seconds'], '.1f')}</td>",
            f"<td class=label>{_e(gone)}</td>",
        ]
        if diagnostics:
            cells.append(f"<td class=num>{num(r.get('max_attention_logit'), '.4g')}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<section><details><summary>Every run ({len(results.runs):,}): "
        "its own figures</summary>\n"
        + _table("runs", head, body, text=(len(numeric), len(head) - 1 - diagnostics))
        + "</details></section>"
    )


def _settings_section(results: Results) -> str:
    s = results.settings
    study = {k: v for k, v in s.items() if k not in ("tensor", "versions")}
    cards = [("Study", {k: v for k, v in study.items() if not isinstance(v, dict)})]
    cards.append(("What varies", {**s["varied"], "baseline": s["baseline"]}))
    cards.append(("Model (every run)", _shared(results, s["model"])))
    cards.append(("Training (every run)", _shared(results, s["train"])))
    for key, title in (("tensor", "Tensor mode"), ("versions", "Code")):
        if isinstance(s.get(key), dict):
            cards.append((title, s[key]))
    cards.append(("Environment", results.environment))
    html_cards = []
    for title, items in cards:
        pairs = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_plain(v))}</dd>" for k, v in items.items())
        html_cards.append(f"<div class=card><h3>{_e(title)}</h3><dl>{pairs}</dl></div>")
    return (
        "<section><h2>Settings and environment</h2>\n<div class=cards>"
        + "".join(html_cards)
        + "</div></section>"
    )


CSS = """
:root{color-scheme:light;--fg:#1c2230;--muted:#5a6374;--line:#dde2ea;--soft:#f4f6f9;
--accent:#2d5aa8;--better:#17703a;--better-bg:#e3f4e8;--worse:#a8281f;--worse-bg:#fbe7e5;
--noise:#5a6374;--noise-bg:#eef0f3;--mixed:#7a4d00;--mixed-bg:#fbf0d9}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:#fff;font:15px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 28px 40px}
h1{font-size:1.65rem;margin:0 0 .3rem;letter-spacing:-.01em}
h2{font-size:1.25rem;margin:2.2rem 0 .7rem;padding-bottom:.3rem;border-bottom:2px solid var(--line)}
h3{font-size:1rem;margin:1.3rem 0 .3rem}
p{margin:.35rem 0 .6rem;max-width:80ch}
.lead{color:var(--muted);margin-bottom:1rem}
.note{color:var(--muted);font-size:.86rem}
code{font:.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:8px 16px;
margin:0;padding:12px 16px;background:var(--soft);border-radius:8px}
.facts div{min-width:0}
.facts dt{color:var(--muted);font-size:.75rem;text-transform:uppercase;letter-spacing:.04em}
.facts dd{margin:0;overflow-wrap:anywhere}
.box{overflow-x:auto;margin:.3rem 0 .4rem}
table{border-collapse:collapse;font-size:.9rem}
th,td{padding:.38rem .7rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:var(--soft);font-weight:600;font-size:.82rem;white-space:nowrap}
tbody tr:hover{background:#fafbfc}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.label{min-width:12em;max-width:26em;overflow-wrap:anywhere}
td.key{font-weight:600}
.pm{color:var(--muted);font-weight:400}
.tag{display:inline-block;margin-left:.4em;padding:0 .45em;border-radius:4px;font-size:.75rem;
background:#e4ebf7;color:var(--accent);vertical-align:1px}
.v{display:inline-block;padding:.05em .5em;border-radius:4px;font-size:.86rem}
.v.better{background:var(--better-bg);color:var(--better)}
.v.worse{background:var(--worse-bg);color:var(--worse)}
.v.noise,.v.none{background:var(--noise-bg);color:var(--noise)}
.v.mixed{background:var(--mixed-bg);color:var(--mixed)}
td.better{color:var(--better)}td.worse{color:var(--worse)}td.noise{color:var(--noise)}
table.scaling td.num{line-height:1.35}
figure{margin:1rem 0 1.6rem}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
figcaption{color:var(--muted);font-size:.86rem;margin-top:.35rem}
.short{margin:1rem 0 0}
.short ul{margin:.3rem 0 0;padding-left:1.2rem}
.short li{margin:.2rem 0}
.missing{padding:10px 14px;background:var(--mixed-bg);border-radius:6px}
details summary{cursor:pointer;font-weight:600}
details .box{max-height:none}
.cards{columns:3 300px;column-gap:14px}
.card{border:1px solid var(--line);border-radius:8px;padding:4px 14px 12px;margin:0 0 14px;
break-inside:avoid;min-width:0}
.card h3{margin:.7rem 0 .45rem}
.card dl{display:grid;grid-template-columns:minmax(0,max-content) minmax(0,1fr);gap:3px 14px;
margin:0;font-size:.84rem}
.card dt{color:var(--muted);overflow-wrap:anywhere}
.card dd{margin:0;overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,
monospace;font-size:.8rem;padding-top:.1em}
footer{margin-top:2.5rem;color:var(--muted);font-size:.82rem}
"""
