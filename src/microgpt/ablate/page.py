"""A study's report as one page: `report.html`, written by `microgpt ablate` and rewritten by
`microgpt report DIR` from DIR/results.json alone.

One self-contained HTML file: inline CSS, the plots as base64 PNG data URIs, no script, nothing
fetched. It is a pure function of the checked results.json (`results.Results`) and its pictures
(`plot.draw`), so an old or copied study folder gets the same page as a fresh one. Its tables
are those of `tables`, as the printed report's are, laid out here; around them the page adds a
header with the verdicts in short, the plots, every run, and the settings and environment.
Every text the file holds is HTML-escaped (`_e`) before it reaches the page.
"""

from __future__ import annotations

import base64
import html
import json
import struct
from pathlib import Path

from microgpt import __version__, tensorfile
from microgpt.ablate import tables
from microgpt.ablate.plan import Level
from microgpt.ablate.results import Results
from microgpt.ablate.tables import Row, Table
from microgpt.errors import UserError

PAGE = "report.html"
NO_PLOTS = (
    "matplotlib is not installed, so this page has no plots: pip install 'microgpt[plot]', "
    "then microgpt report DIR writes it again with them."
)


def write_page(folder: Path, results: Results, pictures: dict[str, bytes] | None) -> Path:
    """folder/report.html, written atomically."""
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
        body.append(_level_section(results, level, len(levels) > 1, first=i == 0))
    if tables.scales(results):
        body.append(_scaling_section(results))
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
        words, tone = tables.verdict(c, name)
        if tone in ("better", "worse"):
            where = f" at {Level(tuple(c['level'].items())).label}" if several else ""
            label = tables.comparison_label(c)
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


def _level_section(results: Results, level: Level, several: bool, first: bool) -> str:
    """One level's figures and comparisons; the first explains them, the others refer back
    to it."""
    heading = f"Results at {level.label}" if several else "Results"
    out = [f"<section><h2>{_e(heading)}</h2>"]
    out += [_html(table, first) for table in tables.figure_tables(results, level)]
    comparisons = tables.comparison_tables(results, level)
    if comparisons is None:
        out.append(f"<p>{_e(tables.NO_VAL_LOSS)}</p>")
    out += [_html(table, first) for table in comparisons or []]
    out.append("</section>")
    return "\n".join(x for x in out if x)


def _html(table: Table, first: bool) -> str:
    """A table with its heading, and on the first level its title before it and its note
    after it (the baseline's row tagged with its name)."""
    out = [f"<h3>{_e(table.heading)}</h3>"] if table.heading else []
    if first and table.title:
        out.append(f"<p class=note>{_e(table.title)}</p>")
    if table.rows:
        body = [_html_row(row, table.verdicts) for row in table.rows]
        text = (0, len(table.header) - 1) if table.verdicts else (0,)
        out.append(_table(table.kind, list(table.header), body, text))
    if first and table.note:
        tag = next((row.tag for row in table.rows if row.tag), "")
        note = (f"{tag}: the baseline of every comparison. " if tag else "") + table.note
        note += f" Bold: {table.key_note}." if table.key_note else ""
        out.append(f"<p class=note>{_e(note)}</p>")
    if table.caveat:
        out.append(f"<p class=caveat>{_e(table.caveat)}</p>")
    return "\n".join(out)


def _html_row(row: Row, verdicts: bool) -> str:
    tag = f" <span class=tag>{_e(row.tag)}</span>" if row.tag else ""
    cells = [f"<td class=label>{_e(row.label)}{tag}</td>"]
    for cell in row.cells:
        classes = " ".join(c for c in ("num", "key" if cell.key else "", cell.tone) if c)
        quoted = classes if " " not in classes else f'"{classes}"'
        aside = f" <span class=pm>{_e(cell.aside)}</span>" if cell.aside else ""
        cells.append(f"<td class={quoted}>{_e(cell.text)}{aside}</td>")
    if verdicts:
        cells.append(f"<td class=verdict><span class='v {row.tone}'>{_e(row.verdict)}</span></td>")
    return f"<tr>{''.join(cells)}</tr>"


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


SCALING_COLUMNS = 6  # levels side by side in one table: more would not fit 1280 px


def _scaling_section(results: Results) -> str:
    """Each design's difference to the baseline at every level: one table, or with several
    numeric settings one per value of all but the last, at most SCALING_COLUMNS levels wide."""
    out = []
    for within, levels in _level_groups(results.levels()):
        table = tables.scaling_table(results, levels, within)
        if within.values:
            out.append(f"<h3>At {_e(within.label)}</h3>")
        out.append(_html(table, first=False))  # its title is the section's note
    note = (
        f"{table.title}: the mean over seeds and, below it, the interval as in the comparisons "
        "above. Green: lower, a difference beyond seed noise; red: higher; grey: within seed "
        "noise."
    )
    return (
        f"<section><h2>{_e(tables.scaling_question(results.numeric))}</h2>\n"
        f"<p class=note>{_e(note)}</p>\n" + "\n".join(out) + "</section>"
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


def _stability_section(results: Results) -> str:
    """The diverged runs and the attention logits past the threshold, in sentences."""
    notes = tables.stability_notes(results)
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
.caveat{font-size:.86rem;padding:6px 12px;background:var(--mixed-bg);color:var(--mixed);
border-radius:6px}
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
table.scaling .pm{display:block}
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
