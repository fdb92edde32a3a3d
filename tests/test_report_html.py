"""report.html, as `microgpt ablate` writes it and `microgpt report DIR` rewrites it from
results.json alone: self-contained, its tables equal to results.json, its text escaped, bad
folders refused in one line, and in a real browser (headless Chromium) at a laptop's 1280 px:
every plot decodes and shows, and nothing scrolls sideways."""

import base64
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_cli

from microgpt.ablate.page import png_size
from microgpt.ablate.results import parse

TINY = ["--mode", "scalar", "--seeds", "2", "--jobs", "2", "--steps", "20", "--val-docs", "5"]
TINY += ["--n-head", "1", "--block-size", "6", "--last-n", "5"]
WIDTH = 1280  # a laptop's browser window
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


run = run_cli  # microgpt in this process: (exit status, stdout, stderr)


@pytest.fixture(scope="module")
def study(tmp_path_factory, names):
    """The seed's four designs at two widths, 2 seeds, 20 steps: every part of the page."""
    out = tmp_path_factory.mktemp("report") / "study"
    rc, stdout, stderr = run("ablate", *TINY, "--input", names, "--out", str(out),
                             "--vary", "n_embd=4,8", "--vary", "tie_lm_head",
                             "--vary", "input_rmsnorm")  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    return out, stdout


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


# reading the page as a browser's parser would -----------------------------------------------


class Page(HTMLParser):
    """The tags, the tables (rows of cell texts, by class) and the images of a page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self.tables.append((attrs.get("class", ""), []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def table(self, cls: str) -> list[list[list[str]]]:
        return [rows for c, rows in self.tables if c == cls]

    def images(self) -> list[dict]:
        return [a for t, a in self.tags if t == "img"]


def page_of(folder: Path) -> Page:
    return Page((folder / "report.html").read_text(encoding="utf-8"))


# every cell of the page's tables against results.json -----------------------------------------

NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


@dataclass(frozen=True)
class Shows:
    """A cell that shows these numbers in this `form` (the cell with each number as #), each to
    the precision shown: within `abs`, or `rel` of it."""

    values: tuple
    form: str = "#"
    abs: float | None = None
    rel: float | None = None


def numbers_in(cell: str) -> list[float]:
    """The numbers a cell shows, in order ('2.5466 ± 0.0446 (1†)': 2.5466, 0.0446, 1)."""
    return [float(x.replace(",", "")) for x in NUMBER.findall(cell)]


def _figure(f: dict | None, diverged: int = 0) -> Shows | str:
    """A mean ± std over seeds (4 decimals), with a sweep's count of diverged seeds."""
    if f is None:
        return "-"
    values, form = (f["mean"], f["std"]), "# ± #"
    if f["std"] is None:
        values, form = (f["mean"],), "#"
    if diverged:
        values, form = (*values, diverged), form + " (#†)"
    return Shows(values, form, abs=5e-5)


def _or_dash(x: float | None, form: str = "#", **tolerance) -> Shows | str:
    return "-" if x is None else Shows((x,), form, **tolerance)


def _interval(low: float | None, high: float | None) -> Shows | str:
    return "-" if low is None or high is None else Shows((low, high), "[#, #]", abs=5e-5)


def _verdict(c: dict):
    """What a comparison's verdict must say: no claim, noise, or which way and how it is."""
    if c["low"] is None or c["high"] is None:
        return lambda words: "no claim" in words
    if not c["significant"]:
        return lambda words: "within seed noise" in words
    up = c["mean_diff"] > 0
    if c["kind"] == "interaction":
        way = "higher" if up else "lower"
    else:
        way = "worse" if up else "better"
    return lambda words: way in words and "noise" not in words


def expected_tables(doc: dict, name: str) -> dict[str, list[list[list]]]:
    """Every table the page should show, by class, from results.json alone: rows of cells,
    each a text, a `Shows` or a test of the text."""
    settings, sweep, diagnostics = doc["settings"], doc.get("lr_sweep"), doc.get("diagnostics")
    levels = list(dict.fromkeys(json.dumps(d["level"]) for d in doc["designs"]))
    numeric = list(doc["designs"][0]["level"])

    def at(entries: list[dict], level: str) -> list[dict]:
        return [e for e in entries if json.dumps(e["level"]) == level]

    def label(entry: dict) -> str:
        return entry["design"] + (f" {name}" if entry["baseline"] else "")

    out: dict[str, list] = {}
    for level in levels:
        if sweep:
            rates = [f"lr {lr:g}" for lr in sweep["learning_rates"]]
            n_runs = len(rates) * len(settings["seeds"])
            designs = at(sweep["designs"], level)
            out.setdefault("sweep", []).append(
                [["design", "best lr", "loss at best lr", "LR sensitivity", "interval",
                  "diverged"]] + [
                    [label(d), Shows((d["best_lr"],), rel=1e-5), _figure(d["report_loss"]),
                     Shows((d["sensitivity"]["mean"],), abs=5e-5),
                     _interval(d["sensitivity"]["low"], d["sensitivity"]["high"]),
                     Shows((sum(r["diverged"] for r in d["rates"]), n_runs), "# of #", abs=0)]
                    for d in designs
                ]
            )  # fmt: skip
            out.setdefault("rates", []).append(
                [["design", *rates]]
                + [
                    [d["design"], *(_figure(r["val_loss"], r["diverged"]) for r in d["rates"])]
                    for d in designs
                ]
            )
            if diagnostics:
                limit = diagnostics["threshold"]
                out.setdefault("attention", []).append(
                    [["largest attention logit", *rates]] + [
                        [d["design"], *(_or_dash(x, "# *" if x is not None and x > limit else "#",
                                                 rel=5e-3)
                                        for x in (r["max_attention_logit"] for r in d["rates"]))]
                        for d in designs
                    ]
                )  # fmt: skip
        else:
            last_n = min(settings["last_n"], settings["train"]["steps"])
            out.setdefault("designs", []).append(
                [["design", "params", "final loss", f"last {last_n} mean", "val loss", "steps/s",
                  "tokens/s", "wall s"]] + [
                    [label(d), Shows((d["params"],), abs=0),
                     *(_figure(d[k]) for k in ("final_loss", "mean_last_n", "val_loss")),
                     *(_or_dash((d[k] or {}).get("mean"), abs=tolerance) for k, tolerance in
                       (("steps_per_s", 0.5), ("tokens_per_s", 0.5), ("wall_seconds", 0.05)))]
                    for d in at(doc["designs"], level)
                ]
            )  # fmt: skip
            if all(d["val_loss"] is None for d in at(doc["designs"], level)):
                continue  # no comparisons
        mine = at(doc["comparisons"], level)
        differences = [c for c in mine if c["kind"] in ("difference", "sensitivity")]
        effects = [c for c in mine if c not in differences]
        prefix = {"main effect": "main effect of ", "sensitivity": "LR sensitivity of "}
        for first, comparisons in (("design", differences), ("effect", effects)):
            if not comparisons:
                continue
            rows = [[first, "mean diff", "interval", "level", "p", "verdict"]]
            for c in comparisons:
                p = c["p"] if c["low"] is not None and c["high"] is not None else None
                rows.append([
                    prefix.get(c["kind"], "") + c["name"],
                    Shows((c["mean_diff"],), abs=5e-5),
                    _interval(c["low"], c["high"]),
                    "-" if p is None else Shows((100 * c["confidence"],), "#%", abs=0.05),
                    "-" if p is None else "<0.001" if p < 0.001 else Shows((p,), abs=5e-4),
                    _verdict(c),
                ])  # fmt: skip
            out.setdefault("comparisons", []).append(rows)

    differences = [c for c in doc["comparisons"] if c["kind"] == "difference"]
    if numeric and differences:  # one numeric setting, at most six levels: one table
        assert len(numeric) == 1 and len(levels) <= 6, "the oracle draws one scaling table"
        rows = [["design", *(f"{numeric[0]} {json.loads(lv)[numeric[0]]:g}" for lv in levels)]]
        for design in dict.fromkeys(c["name"] for c in differences):
            cells = [design]
            for level in levels:
                mine = [c for c in at(differences, level) if c["name"] == design]
                c = mine[0] if mine else None
                if c is None:
                    cells.append("-")
                elif c["low"] is None or c["high"] is None:
                    cells.append(Shows((c["mean_diff"],), abs=5e-5))
                else:
                    values = (c["mean_diff"], c["low"], c["high"])
                    cells.append(Shows(values, "# [#, #]", abs=5e-5))
            rows.append(cells)
        out["scaling"] = [rows]

    head = [*numeric, "design", *(["lr"] if sweep else []), "seed", "params", "final loss",
            f"last {settings['last_n']} mean", "val loss", "steps/s", "wall s", "diverged",
            *(["max attn logit"] if diagnostics is not None else [])]  # fmt: skip
    rows = [head]
    for r in doc["runs"]:
        gone = r.get("diverged")
        rows.append([
            *(Shows((r["level"][k],), rel=1e-9) for k in numeric),
            r["design"],
            *([_or_dash(r.get("learning_rate"), rel=1e-5)] if sweep else []),
            Shows((r["seed"],), abs=0),
            Shows((r["params"],), abs=0),
            *(_or_dash(r[k], abs=5e-5) for k in ("final_loss", "mean_last_n", "val_loss")),
            _or_dash(r["steps_per_s"], abs=0.5),
            _or_dash(r["wall_seconds"], abs=0.05),
            f"step {gone['step']}, {gone['reason']}" if gone else "",
            *([_or_dash(r.get("max_attention_logit"), rel=5e-4)] if diagnostics is not None
              else []),
        ])  # fmt: skip
    out["runs"] = [rows]
    return out


def check_every_cell(page: Page, doc: dict, name: str = "reference") -> None:
    """Every table of the page, every row and every cell, as results.json has it."""
    want = expected_tables(doc, name)
    assert sorted({cls for cls, _ in page.tables}) == sorted(want)
    for cls, tables in want.items():
        shown = page.table(cls)
        assert len(shown) == len(tables), cls
        for t, (got, rows) in enumerate(zip(shown, tables)):
            assert len(got) == len(rows), f"{cls}[{t}]: {len(got)} rows, not {len(rows)}"
            for i, (cells, expected) in enumerate(zip(got, rows)):
                assert len(cells) == len(expected), f"{cls}[{t}] row {i}: {cells}"
                for j, (cell, want_) in enumerate(zip(cells, expected)):
                    where = f"{cls}[{t}] row {i} column {j}: {cell!r}"
                    if isinstance(want_, str):
                        assert cell == want_, where
                    elif isinstance(want_, Shows):
                        assert NUMBER.sub("#", cell) == want_.form, where
                        values = pytest.approx(want_.values, abs=want_.abs, rel=want_.rel)
                        assert numbers_in(cell) == values, where
                    else:
                        assert want_(cell), where


# what microgpt ablate writes --------------------------------------------------------------------


def test_ablate_writes_the_page_and_prints_its_path_last(study):
    out, stdout = study
    lines = stdout.splitlines()
    assert lines[-1] == f"report: {out / 'report.html'}"
    assert lines[-2].startswith("done in ")
    assert (out / "report.html").stat().st_size > 0


def test_the_page_is_self_contained(study):
    out, _ = study
    text = (out / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    tags = {t for t, _ in page.tags}
    assert "style" in tags and not tags & {"script", "link", "iframe", "object", "embed"}
    assert not re.search(r"(?i)\b(?:https?:|//)[^\s\"'<>]*\.", _attributes(page))
    assert "url(" not in text and "@import" not in text
    images = page.images()
    assert len(images) == 2  # the loss curves and, with a numeric level, the scaling plot
    assert all(img["src"].startswith("data:image/png;base64,") for img in images)
    assert all(img["alt"] for img in images)


def _attributes(page: Page) -> str:
    return " ".join(str(v) for _, attrs in page.tags for v in attrs.values() if v)


def test_every_plot_decodes_and_equals_its_file(study):
    out, _ = study
    images = page_of(out).images()
    pngs = [base64.b64decode(img["src"].split(",", 1)[1], validate=True) for img in images]
    assert pngs == [(out / "loss_curves.png").read_bytes(), (out / "scaling.png").read_bytes()]
    for img, png in zip(images, pngs):
        width, height = png_size(png)
        assert width > 100 and height > 100
        assert (int(img["width"]), int(img["height"])) == (width, height)
    Image = pytest.importorskip("PIL.Image")  # matplotlib's own dependency
    for png in pngs:
        picture = Image.open(io.BytesIO(png))
        picture.load()  # decodes every pixel
        assert picture.size == png_size(png)
        assert len(picture.convert("L").getcolors(1 << 16) or []) > 10  # not blank


def test_every_cell_of_every_table_equals_results_json(study):
    out, _ = study
    doc, page = results(out), page_of(out)
    assert len(page.table("designs")) == 2  # two levels,
    assert sum(len(t) - 1 for t in page.table("comparisons")) == 12  # 3 differences, 3 effects
    assert len(page.table("scaling")) == 1 and len(page.table("runs")[0]) == 17  # 16 runs
    check_every_cell(page, doc)


def test_the_printed_report_shows_the_rows_of_the_page(study):
    out, stdout = study
    check_printed_rows(page_of(out), stdout, ("designs", "comparisons", "scaling"))


def check_printed_rows(page: Page, printed: str, classes: tuple[str, ...]) -> None:
    """Each row of the page's tables of `classes` is a line of the printed report, every cell
    the same text (the baseline tagged * there)."""
    lines = printed.splitlines()
    for cls in classes:
        assert page.table(cls), cls
        for table in page.table(cls):
            for row in table[1:]:
                label = re.sub(" (reference|baseline)$", " *", row[0])
                shown = [line for line in lines if line.startswith(label + " ")]
                assert any(all(c in line for c in row[1:]) for line in shown), (cls, row, shown)


def test_settings_and_environment_are_shown(study):
    out, _ = study
    doc, text = results(out), (out / "report.html").read_text(encoding="utf-8")
    for value in (doc["environment"]["python"], doc["environment"]["cpu"],
                  doc["settings"]["versions"]["code"], doc["settings"]["data"]):  # fmt: skip
        assert f">{value}<" in text
    assert ">varied: 4, 8<" in text  # n_embd in the model card: the levels set it


# microgpt report DIR ---------------------------------------------------------------------------


def test_report_rewrites_the_same_page_from_results_json_alone(study, tmp_path):
    out, _ = study
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(out / "results.json", copy / "results.json")
    rc, stdout, stderr = run("report", str(copy))
    assert (rc, stderr) == (0, ""), stderr
    assert stdout == f"wrote {copy / 'report.html'}\n"
    assert (copy / "report.html").read_bytes() == (out / "report.html").read_bytes()
    assert sorted(p.name for p in copy.iterdir()) == ["report.html", "results.json"]
    rc, _, _ = run("report", str(copy))  # and again, over its own page
    assert rc == 0 and (copy / "report.html").read_bytes() == (out / "report.html").read_bytes()


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _delete(*keys):
    def change(doc):
        for key in keys[:-1]:
            doc = doc[key]
        del doc[keys[-1]]

    return change


def _set(value, *keys):
    def change(doc):
        for key in keys[:-1]:
            doc = doc[key]
        doc[keys[-1]] = value

    return change


BAD = {
    "missing folder": (None, "does not exist"),
    "folder is a file": ("file", "is not a folder"),
    "no results.json": ("empty", "results.json does not exist"),
    "results.json is a folder": ("dir", "cannot read"),
    "not JSON": (b'{"settings": {', "is not JSON"),
    "not UTF-8": (b'{"settings": "\xff\xfe"}', "is not JSON"),
    "empty file": (b"", "is not JSON"),
    "a list": (b"[1, 2]", "the file is a list, not an object"),
    "deeply nested": (b"[" * 100000 + b"]" * 100000, "results.json"),
    "no settings": (_delete("settings"), "settings is missing"),
    "no seeds": (_delete("settings", "seeds"), "settings.seeds is missing"),
    "seed a string": (_set(["0"], "settings", "seeds"), "settings.seeds[0] is a string"),
    "steps true": (_set(True, "settings", "train", "steps"), "not an integer"),
    "stack a string": (_set("5", "settings", "stack"), "settings.stack is a string"),
    "designs an object": (_set({}, "designs"), "designs is an object, not a list"),
    "no designs": (_set([], "designs"), "designs is empty"),
    "params a string": (_set("432", "designs", 0, "params"), "designs[0].params is a string"),
    "val mean true": (_set(True, "designs", 1, "val_loss", "mean"), "not a number"),
    "level value NaN": (_set({"n_embd": float("nan")}, "designs", 2, "level"), "finite number"),
    "label a number": (_set(7, "designs", 0, "design"), "designs[0].design is a number"),
    "kind unknown": (_set("x", "comparisons", 0, "kind"), 'not one of "difference"'),
    "losses a string": (_set("1.0", "runs", 3, "losses"), "runs[3].losses is a string"),
    "a loss null": (_set([1.0, None], "runs", 3, "losses"), "runs[3].losses[1] is null"),
    "run of no design": (_set("nobody", "runs", 5, "design"), "runs[5] is of a design"),
    "comparison level": (_set({"n_embd": 99}, "comparisons", 0, "level"), "comparisons[0].level"),
    "no adjustment": (_delete("adjustment"), "adjustment is missing"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_study_folders_give_one_line_errors(case, study, tmp_path):
    out, _ = study
    what, words = BAD[case]
    folder = tmp_path / "study"
    if what == "file":
        folder.write_text("")
    elif what is not None:
        folder.mkdir()
    if callable(what):
        shutil.copy(out / "results.json", folder / "results.json")
        _edit(folder / "results.json", what)
    elif isinstance(what, bytes):
        (folder / "results.json").write_bytes(what)
    elif what == "dir":
        (folder / "results.json").mkdir()
    rc, stdout, stderr = run("report", str(folder))
    assert rc == 2 and stdout == ""
    assert stderr.startswith("microgpt: error: ") and stderr.count("\n") == 1, stderr
    assert words in stderr
    assert not (folder / "report.html").exists() if folder.is_dir() else True


def test_a_bad_folder_fails_in_one_line_without_a_traceback(tmp_path):
    (tmp_path / "results.json").write_text('{"settings": 3}')
    proc = subprocess.run([sys.executable, "-m", "microgpt", "report", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("microgpt: error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and "settings is a number, not an object" in proc.stderr


ODD = {
    "diverged runs": _set([3.3, float("nan"), float("inf"), 1e308], "runs", 0, "losses"),
    "no validation loss": lambda doc: [
        doc.update(comparisons=[]),
        [d.update(val_loss=None) for d in doc["designs"]],
        [r.update(val_loss=None) for r in doc["runs"]],
    ],
    "no runs": _set([], "runs"),
    "one seed": lambda doc: [
        c.update(low=None, high=None, p=None, significant=None, df=None) for c in doc["comparisons"]
    ],
    "a wrong interval": _set(5.0, "comparisons", 0, "low"),
    "extra fields": _set({"anything": [1, {"x": None}]}, "settings", "future"),
    "odd labels": lambda doc: [
        item.update(design=item["design"].replace("tied", "$\\frac$ \ud800 \x00 tied"))
        for item in doc["designs"] + doc["runs"]
    ],
    "odd level names": lambda doc: [
        item.update(level={"$\\frac{": item["level"]["n_embd"]})
        for item in doc["designs"] + doc["runs"] + doc["comparisons"]
    ],
    "settings shown as they are": _set([1, 2], "settings", "model", "n_layer"),
}


@pytest.mark.parametrize("case", ODD)
def test_odd_but_readable_results_still_give_a_page(case, study, tmp_path):
    out, _ = study
    shutil.copy(out / "results.json", tmp_path / "results.json")
    _edit(tmp_path / "results.json", ODD[case])
    rc, _, stderr = run("report", str(tmp_path))
    assert (rc, stderr) == (0, ""), stderr
    assert "</html>" in (tmp_path / "report.html").read_text(encoding="utf-8")
    checked = parse((tmp_path / "results.json").read_bytes(), "results.json").doc  # as shown
    check_every_cell(page_of(tmp_path), checked)


def test_every_text_is_escaped(study, tmp_path):
    out, _ = study
    shutil.copy(out / "results.json", tmp_path / "results.json")
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
    doc = results(tmp_path)
    old = doc["designs"][1]["design"]
    for item in doc["designs"] + doc["runs"]:
        if item["design"] == old:
            item["design"] = evil
    for c in doc["comparisons"]:
        c["name"] = c["name"].replace(old, evil)
    doc["environment"]["cpu"] = evil
    doc["environment"][evil] = evil
    doc["settings"]["input"] = evil
    doc["settings"]["varied"]["tie_lm_head"] = [evil, 1]
    doc["settings"]["model"]["n_embd"] = evil
    (tmp_path / "results.json").write_text(json.dumps(doc))
    rc, _, stderr = run("report", str(tmp_path))
    assert (rc, stderr) == (0, ""), stderr
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script" not in text.lower() and "<img src=x" not in text
    page = Page(text)
    assert {t for t, _ in page.tags} & {"script"} == set()
    assert len(page.images()) == 2  # ours; none from the label
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    assert text.count(escaped + "&amp;amp;") >= 8  # tables, verdicts, settings, environment
    (designs, *_) = page.table("designs")
    assert designs[2][0] == evil  # reads back as the text it was


def test_without_matplotlib_the_page_says_so(study, tmp_path, monkeypatch):
    out, _ = study
    shutil.copy(out / "results.json", tmp_path / "results.json")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    rc, _, stderr = run("report", str(tmp_path))
    assert (rc, stderr) == (0, ""), stderr
    page = page_of(tmp_path)
    assert page.images() == []
    assert "matplotlib is not installed" in (tmp_path / "report.html").read_text()


# in a browser -----------------------------------------------------------------------------------

PROBE = """<script>
addEventListener("load", () => {
  for (const d of document.querySelectorAll("details")) d.open = true;
  const root = document.documentElement, width = root.clientWidth;
  const outside = [...document.querySelectorAll("body *")].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.right > width + 0.5 && !e.parentElement.closest(".box");
  });
  const probe = {
    innerWidth, clientWidth: width, scrollWidth: root.scrollWidth,
    outside: outside.slice(0, 5).map(e => e.tagName + "." + e.className),
    images: [...document.images].map(i => {
      const r = i.getBoundingClientRect();
      return {complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
              width: r.width, height: r.height, left: r.left, right: r.right};
    }),
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(probe);
  document.body.append(pre);
});
</script>"""


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    why = "Chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: CI must look at the page in a browser (.ci/run installs it)")
    pytest.skip(f"{why}: the page is not looked at in a browser")


def chromium(tmp_path: Path, *args: str, height: int = 2000) -> str:
    """Headless Chromium with a profile of its own, at 1280 px wide; its stdout."""
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
               f"--window-size={WIDTH},{height}", *args]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def look(folder: Path, tmp_path: Path) -> dict:
    """What Chromium measures on a copy of the page with a probe script added (the page itself
    has no script): the widths, and every image's state and box."""
    probe = tmp_path / "probe.html"
    text = (folder / "report.html").read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def check_layout(seen: dict, n_images: int) -> None:
    assert seen["innerWidth"] == WIDTH
    assert seen["scrollWidth"] <= seen["clientWidth"] <= WIDTH, seen  # no sideways scrolling
    assert seen["outside"] == [], seen
    assert len(seen["images"]) == n_images
    for img in seen["images"]:  # decoded (a broken image has no natural size) and in view
        assert img["complete"] and img["naturalWidth"] > 100 and img["naturalHeight"] > 100, img
        assert img["width"] > 300 and img["height"] > 150, img
        assert img["left"] >= 0 and img["right"] <= seen["clientWidth"], img
        ratio = img["naturalWidth"] / img["naturalHeight"]
        assert img["width"] / img["height"] == pytest.approx(ratio, rel=0.02)  # not squashed


def test_the_browser_shows_the_page_at_1280_px(study, tmp_path):
    browser()  # or skip (fail under CI) before any work
    out, _ = study
    start = time.perf_counter()
    check_layout(look(out, tmp_path), n_images=2)
    shot = tmp_path / "report.png"
    chromium(tmp_path, "--hide-scrollbars", f"--screenshot={shot}", (out / "report.html").as_uri())
    assert png_size(shot.read_bytes()) == (WIDTH, 2000)
    Image = pytest.importorskip("PIL.Image")
    colors = Image.open(shot).convert("L").getcolors(1 << 16)
    assert colors is not None and len(colors) > 20  # text and pictures, not a blank page
    print(f"browser checks: {time.perf_counter() - start:.1f} s")


# a wide study: many designs and levels, long labels ---------------------------------------------


def synthetic_study(folder: Path, vary: list[str], seeds=(0, 1, 2), steps=40) -> None:
    """results.json of made-up runs, through the real summary and JSON of `microgpt ablate`."""
    from microgpt.ablate.analysis import summarize
    from microgpt.ablate.plan import Study, parse_vary
    from microgpt.ablate.results import to_json
    from microgpt.config import ModelConfig, TrainConfig
    from microgpt.flags import SIZE_FLAGS

    varied = parse_vary(vary)
    defaults = ModelConfig(vocab_size=2)
    fixed = {k: getattr(defaults, k) for k in SIZE_FLAGS}
    fixed |= {k: v for k, v in defaults.design().items() if k not in varied}
    study = Study(mode="tensor", model_args=fixed, train=TrainConfig(steps=steps), tensor=None,
                  input_path="a/rather/long/path/to/some/data/set/of/names/that/goes/on.txt",
                  fingerprint="0123456789abcdef" * 4, vocab_size=27, seeds=tuple(seeds),
                  versions={"microgpt": "0.1.0"}, varied=varied)  # fmt: skip
    rng = random.Random(0)
    tasks, records, designs = study.tasks(folder), [], study.designs()
    for task in tasks:
        shift = 0.02 * (designs.index(task.design) % 5)
        losses = [3.3 - 1.1 * i / steps + rng.gauss(0, 0.05) + shift for i in range(steps)]
        val_loss = 2.2 + shift + rng.gauss(0, 0.01)
        records.append({
            "losses": losses, "final_loss": losses[-1], "val_loss": val_loss,
            "val_loss_per_token": None, "params": 10_000, "steps_per_s": 90.0 + rng.random(),
            "tokens_per_s": 900.0, "train_seconds": 1.0, "wall_seconds": 1.2, "val_docs": 5,
            "data_order": "abc", "model_config": {}, "train_config": task.train.to_dict(),
            "environment": {},
        })  # fmt: skip
    summary = summarize(study, tasks, records)
    env = {"microgpt": "0.1.0", "platform": "Linux-" + "x" * 120, "cpu": "a CPU"}
    (folder / "results.json").write_bytes(to_json(study, tasks, records, summary, env))


def test_a_wide_study_does_not_scroll_sideways(tmp_path):
    browser()
    folder = tmp_path / "wide"
    folder.mkdir()
    vary = ["mlp_activation", "qk_norm", "position", "n_embd=16,32,64", "n_layer=1,2,4"]
    synthetic_study(folder, vary)  # 12 designs × 9 levels
    rc, _, stderr = run("report", str(folder))
    assert (rc, stderr) == (0, ""), stderr
    page = page_of(folder)
    assert len(page.table("designs")) == 9
    scaling = page.table("scaling")  # one table per width, a column per depth
    assert [table[0] for table in scaling] == [
        ["design", "n_layer 1", "n_layer 2", "n_layer 4"]
    ] * 3
    check_layout(look(folder, tmp_path), n_images=2)
