"""`microgpt ablate --lr-sweep`: every design at every rate, compared at its own best rate and by
its LR sensitivity. The report's figures against a hand computation on made-up runs; a forced
divergence recorded while the study goes on, and shown in the report and the page; the
selection and report halves; the errors; z-loss varied in a sweep; the dry run."""

import contextlib
import io
import json
import math
import re
import shutil
import statistics
from pathlib import Path

import pytest
from conftest import run_cli
from test_report_html import (
    Page,
    browser,
    check_every_cell,
    check_layout,
    check_printed_rows,
    look,
)

from microgpt.ablate.analysis import summarize
from microgpt.ablate.page import render
from microgpt.ablate.plan import Study, parse_vary
from microgpt.ablate.results import parse, to_json
from microgpt.ablate.text import format_report
from microgpt.cli import main
from microgpt.config import ModelConfig, TrainConfig
from microgpt.errors import UserError
from microgpt.flags import SIZE_FLAGS

TINY = ["--steps", "6", "--val-docs", "6", "--n-embd", "4", "--n-head", "1", "--block-size", "6"]
TINY += ["--last-n", "3", "--jobs", "1"]


def ablate(*argv: str) -> tuple[int, str, str]:
    return run_cli("ablate", *argv)


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


# the report against a hand computation -----------------------------------------------------------

LRS = (1e-3, 1e-2, 1e-1)
INIT = math.log(27)  # the loss at initialisation, ln V
X = None  # a diverged run (non-finite): no held-out figures
# per design, per seed, per rate: (val loss, selection-half loss, report-half loss)
RUNS = {
    "no qk-norm": [
        [(2.9, 2.9, 2.9), (2.5, 2.4, 2.6), (X, X, X)],
        [(3.0, 3.0, 3.0), (2.4, 2.5, 2.3), (2.8, 2.7, 2.9)],
        [(2.8, 2.8, 2.8), (2.6, 2.6, 2.6), (3.5, 3.4, 3.6)],  # above ln V: capped, not diverged
    ],
    "qk-norm": [
        [(2.9, 2.9, 2.9), (2.4, 2.5, 2.3), (2.5, 2.4, 2.6)],
        [(3.0, 3.0, 3.0), (2.5, 2.5, 2.5), (2.4, 2.3, 2.5)],
        [(2.8, 2.8, 2.8), (2.5, 2.4, 2.6), (2.6, 2.5, 2.7)],
    ],
}
# the best rate of each: the lowest mean over seeds of the capped selection-half loss
#   no qk-norm: 1e-3 (2.9), 1e-2 (2.5), 1e-1 ((ln V + 2.7 + ln V) / 3 = 3.097): 1e-2
#   qk-norm:    1e-3 (2.9), 1e-2 (2.4667), 1e-1 (2.4): 1e-1
BEST = {"no qk-norm": 1e-2, "qk-norm": 1e-1}
REPORT = {"no qk-norm": [2.6, 2.3, 2.6], "qk-norm": [2.6, 2.5, 2.7]}  # report half, at BEST
# LR sensitivity per seed: mean over rates of min(val, ln V) minus their lowest
SENSITIVITY = {
    "no qk-norm": [(0.4 + INIT - 2.5) / 3, (0.6 + 0.4) / 3, (0.2 + INIT - 2.6) / 3],
    "qk-norm": [(0.5 + 0.1) / 3, (0.6 + 0.1) / 3, (0.3 + 0.1) / 3],
}


def hand_study(folder: Path, lrs=LRS, seeds=(0, 1, 2), vary=("qk_norm",)) -> tuple:
    """A sweep study of made-up runs (RUNS, or made-up curves for other grids), its tasks and
    records, as the worker would have saved them."""
    varied = parse_vary(list(vary))
    defaults = ModelConfig(vocab_size=2)
    fixed = {k: getattr(defaults, k) for k in SIZE_FLAGS}
    fixed |= {k: v for k, v in defaults.design().items() if k not in varied}
    study = Study(mode="tensor", model_args=fixed, train=TrainConfig(steps=20), tensor=None,
                  input_path=None, fingerprint="0" * 16, vocab_size=27, seeds=tuple(seeds),
                  versions={"microgpt": "0.1.0"}, varied=varied, lrs=tuple(lrs))  # fmt: skip
    tasks, records = study.tasks(folder), []
    for task in tasks:
        k, s = lrs.index(task.lr), seeds.index(task.seed)
        if lrs == LRS:
            val, sel, rep = RUNS[task.design.label][s][k]
        else:  # a smooth made-up curve, lowest at 1e-2, diverging from 1
            val = 2.2 + 0.1 * math.log10(task.lr / 1e-2) ** 2 + 0.01 * s
            val, sel, rep = (X, X, X) if task.lr >= 1 else (val, val - 0.01, val + 0.01)
        logit = 150.0 if task.design.label == "no qk-norm" and task.lr == lrs[-1] else 2.0
        records.append({
            "losses": [3.3, 3.0, 2.8] if val else [3.3], "final_loss": 2.8 if val else None,
            "val_loss": val, "selection_loss": sel, "report_loss": rep,
            "diverged": None if val else {"step": 2, "last_loss": 3.3, "reason": "non-finite"},
            "diagnostics": {"every": 1, "docs": 4, "steps": [1], "max_attention_logit": [logit],
                            "logit_mean": [-1.0], "logit_max": [4.0]},
            "val_loss_per_token": None, "params": 4192, "steps_per_s": 300.0 if val else 0.0,
            "tokens_per_s": 2000.0, "train_seconds": 0.1, "wall_seconds": 0.2, "val_docs": 6,
            "data_order": "abc", "model_config": {}, "train_config": task.train.to_dict(),
            "environment": {},
        })  # fmt: skip
    return study, tasks, records


def test_best_lr_and_sensitivity_through_the_report_by_hand(tmp_path):
    study, tasks, records = hand_study(tmp_path)
    summary = summarize(study, tasks, records)
    sweep = {d["design"]: d for d in summary["lr_sweep"]["designs"]}
    assert summary["lr_sweep"]["loss_at_init"] == INIT
    for name in RUNS:
        assert sweep[name]["best_lr"] == BEST[name]
        assert sweep[name]["report_per_seed"] == pytest.approx(REPORT[name], rel=1e-12)
        sens = sweep[name]["sensitivity"]
        assert sens["per_seed"] == pytest.approx(SENSITIVITY[name], rel=1e-12)
        assert sens["mean"] == pytest.approx(sum(SENSITIVITY[name]) / 3, rel=1e-12)
        assert sens["low"] < sens["mean"] < sens["high"]
    base = sweep["no qk-norm"]["rates"]
    assert [r["diverged"] for r in base] == [0, 0, 1]
    assert base[2]["val_loss"]["mean"] == pytest.approx((INIT + 2.8 + INIT) / 3, rel=1e-12)
    designs = {d["design"]: d for d in summary["designs"]}  # their figures at the best rate
    assert designs["qk-norm"]["learning_rate"] == 1e-1
    assert designs["qk-norm"]["val_loss"]["mean"] == pytest.approx(2.5, rel=1e-12)

    # paired by seed, one Holm family: the best-rate difference and the sensitivity difference
    (diff, sens) = summary["comparisons"]
    assert (diff["kind"], sens["kind"]) == ("difference", "sensitivity")
    assert diff["mean_diff"] == pytest.approx(0.1, rel=1e-12)  # (0 + 0.2 + 0.1) / 3
    want = sum(b - a for a, b in zip(SENSITIVITY["no qk-norm"], SENSITIVITY["qk-norm"])) / 3
    assert sens["mean_diff"] == pytest.approx(want, rel=1e-12)
    assert summary["adjustment"] == {"method": "holm", "family": 2, "alpha": 0.05}
    assert max(diff["confidence"], sens["confidence"]) == 1 - 0.05 / 2  # Holm's first step
    assert summary["diverged"] == [{"level": {}, "design": "no qk-norm", "learning_rate": 0.1,
                                    "seed": 0, "step": 2, "last_loss": 3.3,
                                    "reason": "non-finite"}]  # fmt: skip
    growth = summary["diagnostics"]
    assert growth["threshold"] == 100 and growth["runs"] == 18
    assert growth["over"] == [{"level": {}, "design": "no qk-norm", "learning_rate": 0.1,
                               "seeds": 3, "of": 3, "largest": 150.0}]  # fmt: skip

    doc = to_json(study, tasks, records, summary, {})
    text = format_report(parse(doc, "results.json"))
    assert re.search(r"no qk-norm \*\s+0\.01\s+2\.5000 ± 0\.1732", text)  # best lr, its loss
    words = " ".join(text.split())  # the notes are wrapped at 100 characters
    assert "LR sensitivity of qk-norm" in words
    assert "Diverged: 1 of 18 runs (1 with a non-finite training loss, 0 with" in words
    assert "Attention logits past 100" in words and "no qk-norm: lr 0.1, up to 150." in words
    assert re.search(r"no qk-norm\s+2\s+2\s+150 \*", text)  # the largest logit per rate


def test_the_page_shows_the_sweep_as_results_json_has_it(tmp_path):
    study, tasks, records = hand_study(tmp_path)
    summary = summarize(study, tasks, records)
    doc = to_json(study, tasks, records, summary, {"cpu": "a CPU"})
    page = Page(render(parse(doc, "results.json"), None))
    (best,) = page.table("sweep")
    assert best[0] == ["design", "best lr", "loss at best lr", "LR sensitivity", "interval",
                       "diverged"]  # fmt: skip
    for row, d in zip(best[1:], json.loads(doc)["lr_sweep"]["designs"]):
        assert row[0].removesuffix(" reference") == d["design"]
        assert float(row[1]) == d["best_lr"]
        mean, std = (float(x) for x in row[2].split(" ± "))
        assert (mean, std) == pytest.approx(tuple(d["report_loss"].values()), abs=5e-5)
        assert float(row[3]) == pytest.approx(d["sensitivity"]["mean"], abs=5e-5)
        assert row[5] == f"{sum(r['diverged'] for r in d['rates'])} of 9"
    (rates,) = page.table("rates")
    assert rates[0] == ["design", "lr 0.001", "lr 0.01", "lr 0.1"]
    capped = [INIT, 2.8, INIT]
    assert rates[1][3] == f"{statistics.mean(capped):.4f} ± {statistics.stdev(capped):.4f} (1†)"
    (attention,) = page.table("attention")  # the largest over seeds, * past the threshold
    assert attention[1:] == [["no qk-norm", "2", "2", "150 *"], ["qk-norm", "2", "2", "2"]]
    labels = [row[0] for table in page.table("comparisons") for row in table[1:]]
    assert labels == ["qk-norm", "LR sensitivity of qk-norm"]
    check_every_cell(page, json.loads(doc))


def test_old_results_without_a_sweep_still_read(tmp_path):
    """results.json from before sweeps and diagnostics: no lr_sweep, diverged, diagnostics."""
    study, tasks, records = hand_study(tmp_path)
    doc = json.loads(to_json(study, tasks, records, summarize(study, tasks, records), {}))
    for key in ("lr_sweep", "diverged", "diagnostics"):
        del doc[key]
    for run in doc["runs"]:
        for key in ("learning_rate", "diverged", "max_attention_logit"):
            del run[key]
    assert "<table class=designs>" in render(parse(json.dumps(doc), "old"), None)
    doc["lr_sweep"] = {"learning_rates": [1e-3]}
    with pytest.raises(UserError, match="lr_sweep.loss_at_init is missing"):
        parse(json.dumps(doc), "edited")


# a real sweep with a forced divergence ---------------------------------------------------------


@pytest.fixture(scope="module")
def forced(tmp_path_factory, names):
    """Tensor mode, stacked: 2 designs × 2 rates × 2 seeds, 1e30 diverging at once."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("sweep") / "forced"
    rc, stdout, stderr = ablate("--lr-sweep", "1e-2,1e30", "--vary", "qk_norm", "--seeds", "2",
                                "--input", names, "--out", str(out), *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    return out, stdout


def test_a_diverged_run_is_recorded_and_the_study_goes_on(forced):
    out, stdout = forced
    doc = results(out)
    assert "2 designs × 2 learning rates (0.01, 1e+30) × 2 seeds = 8 runs" in stdout
    runs = {(r["design"], r["learning_rate"], r["seed"]): r for r in doc["runs"]}
    assert len(runs) == 8
    for design in ("no qk-norm", "qk-norm"):
        for seed in (0, 1):
            gone = runs[design, 1e30, seed]
            assert gone["diverged"]["reason"] == "non-finite" and gone["val_loss"] is None
            assert gone["diverged"]["step"] == len(gone["losses"]) + 1
            assert gone["diverged"]["last_loss"] == gone["losses"][-1]
            kept = runs[design, 1e-2, seed]
            assert kept["val_loss"] is not None and len(kept["losses"]) == 6
    for d in doc["lr_sweep"]["designs"]:  # (at 6 steps a run at 1e-2 may end above ln V)
        assert d["rates"][1]["diverged"] == 2
        assert d["rates"][1]["val_loss"] == {"mean": doc["lr_sweep"]["loss_at_init"], "std": 0.0}
        assert d["best_lr"] == 1e-2
    assert len(doc["diverged"]) >= 4
    words = " ".join(stdout.split())  # the notes are wrapped at 100 characters
    stopped = sum(r["reason"] == "non-finite" for r in doc["diverged"])
    assert stopped == 4 and f"Diverged: {len(doc['diverged'])} of 8 runs (4 with a" in words
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "Divergence and attention logits" in text and "(4 with a non-finite" in text
    assert (out / "lr_sweep.png").read_bytes()[:4] == b"\x89PNG"
    check_printed_rows(Page(text), stdout, ("sweep", "rates", "attention", "comparisons"))
    assert len(Page(text).images()) == 2  # the loss curves and the sweep
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["design", "qk_norm", "learning_rate", "seed"]
    assert {"selection_loss", "report_loss", "diverged", "max_attention_logit"} <= set(header)


def test_the_halves_split_the_held_out_documents(forced):
    from microgpt.ablate.sweep import split_halves

    out, _ = forced
    for r in results(out)["runs"]:
        halves = r["halves"]
        assert halves == {"of": 6, "seed": r["seed"], "selection": 3, "report": 3}
        sel, rep = split_halves(halves["of"], halves["seed"])
        assert not set(sel) & set(rep) and sorted(sel + rep) == list(range(6))
        if r["val_loss"] is not None:  # together the two halves are the val loss (float32)
            joined = (3 * r["selection_loss"] + 3 * r["report_loss"]) / 6
            assert joined == pytest.approx(r["val_loss"], rel=1e-5)
            assert r["selection_loss"] != r["report_loss"]


def test_diagnostics_are_in_every_tensor_run(forced):
    out, _ = forced
    doc = results(out)
    assert doc["diagnostics"]["threshold"] == 100 and doc["diagnostics"]["runs"] == 8
    for r in doc["runs"]:
        d = r["diagnostics"]
        assert d["every"] == 1 and d["docs"] == 12  # a tenth of 6 steps; all 12 held-out docs
        if r["diverged"] and r["diverged"]["reason"] == "non-finite":
            assert len(d["steps"]) == r["diverged"]["step"] - 1
        else:
            assert d["steps"] == [1, 2, 3, 4, 5, 6]
            assert r["max_attention_logit"] == max(d["max_attention_logit"])
        if r["qk_norm"] and r["max_attention_logit"] is not None:  # bounded by sqrt(D) = 2
            assert r["max_attention_logit"] <= 2.0


def test_the_report_rewrites_the_sweep_page(forced, tmp_path):
    out, _ = forced
    shutil.copy(out / "results.json", tmp_path / "results.json")
    rc, _, stderr = main_report(tmp_path)
    assert (rc, stderr) == (0, ""), stderr
    assert (tmp_path / "report.html").read_bytes() == (out / "report.html").read_bytes()
    check_every_cell(Page((out / "report.html").read_text(encoding="utf-8")), results(out))


def main_report(folder: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["report", str(folder)])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("how", [["--no-stack"], ["--mode", "scalar"]], ids=["alone", "scalar"])
def test_a_run_alone_records_its_divergence_too(how, tmp_path, names):
    """Solo runs (scalar mode, --no-stack) diverge as results too: `train` raises only outside a
    study."""
    if "--no-stack" in how:
        pytest.importorskip("torch")
    rate = "1e200" if "scalar" in how else "1e30"  # Python floats overflow later than float32
    rc, stdout, stderr = ablate("--lr-sweep", f"1e-2,{rate}", "--vary", "qk_norm", "--seeds",
                                "1", "--input", names, "--out", str(tmp_path), *how,
                                *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    gone = [r for r in results(tmp_path)["runs"] if r["learning_rate"] > 1]
    assert len(gone) == 2 and all(r["diverged"]["reason"] == "non-finite" for r in gone)
    if "scalar" in how:
        assert all(r["diagnostics"] is None for r in results(tmp_path)["runs"])
        assert "Attention logits" not in stdout


# z-loss, the dry run, resuming ----------------------------------------------------------------


def test_z_loss_varied_in_a_sweep_stacks_and_resumes(tmp_path, names):
    pytest.importorskip("torch")
    argv = ("--lr-sweep", "1e-2,1e-1", "--vary", "z_loss=0,1e-4", "--vary", "qk_norm",
            "--seeds", "2", "--input", names, "--out", str(tmp_path), *TINY)  # fmt: skip
    rc, stdout, stderr = ablate(*argv)
    assert (rc, stderr) == (0, ""), stderr
    doc = results(tmp_path)
    assert len(doc["runs"]) == 16 and len(doc["lr_sweep"]["designs"]) == 4
    assert all(r["train_config"]["z_loss"] == r["level"]["z_loss"] for r in doc["runs"])
    records = [json.loads(p.read_text()) for p in tmp_path.glob("run-*.json")]
    assert {r["stack_size"] for r in records} == {4}  # one stack per design and level
    assert "== z_loss 0.0001 ==" in stdout and "Does it hold as z_loss changes?" in stdout
    rc, again, _ = ablate(*argv)
    assert rc == 0 and "reusing 16 finished runs" in again and "0 runs trained" in again
    assert results(tmp_path)["lr_sweep"] == doc["lr_sweep"]


def test_dry_run_shows_the_sweeps_stacks(tmp_path, names):
    pytest.importorskip("torch")
    rc, stdout, stderr = ablate("--lr-sweep", "1e-3:1e-1:3", "--vary", "qk_norm", "--seeds", "2",
                                "--input", names, "--out", str(tmp_path / "dry"), "--dry-run",
                                *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    assert not (tmp_path / "dry").exists()
    assert "3 learning rates (0.001, 0.01, 0.1) × 2 seeds = 12 runs" in stdout
    stacks = [line.split() for line in stdout.splitlines() if line.startswith("run-")]
    assert [row[:4] for row in stacks] == [
        ["run-no-qk-norm-lr0.001-seed0", "…", "lr0.1-seed1", "6"],
        ["run-qk-norm-lr0.001-seed0", "…", "lr0.1-seed1", "6"],
    ]
    assert "12 of 12 runs to train, in 2 stacks; about" in stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["--lr-sweep", "0,1e-2"],  # a rate <= 0
        ["--lr-sweep", "-1e-3:1:3"],
        ["--lr-sweep", "1e-3:1"],  # malformed ranges
        ["--lr-sweep", "1e-3:1:x"],
        ["--lr-sweep", "1:1e-3:3"],
        ["--lr-sweep", "1e-3:1:3:4"],
        ["--lr-sweep", "1e-3:1:1"],  # K < 2
        ["--lr-sweep", "1e-3"],  # one rate
        ["--lr-sweep", "1e-3,1e-3"],
        ["--lr-sweep", "1e-3,x"],
        ["--lr-sweep", "1e-3,1e-2", "--vary", "learning_rate=1e-3,1e-2"],
        ["--lr-sweep", "1e-3,1e-2", "--learning-rate", "0.1"],
        ["--lr-sweep", "1e-3,1e-2", "--val-docs", "1"],  # no two halves
        ["--lr-sweep", "1e-3,1e-2", "--min-lr", "5e-3"],  # above a rate of the grid
        ["--mode", "scalar", "--log-every", "5"],  # scalar mode has no diagnostics
        ["--log-every", "0"],
    ],
)
def test_bad_sweeps_exit_2_with_one_line_before_any_run(argv, capsys, tmp_path):
    assert main(["ablate", *argv, "--out", str(tmp_path / "never")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not (tmp_path / "never").exists()
    assert captured.err.startswith("microgpt: error:") and captured.err.count("\n") == 1


# in a browser --------------------------------------------------------------------------------


def test_a_wide_sweep_page_does_not_scroll_sideways(tmp_path):
    browser()  # or skip (fail under CI) before any work
    lrs = tuple(float(f"{10 ** (-4 + k / 2):.12g}") for k in range(11))  # 1e-4 .. 10
    vary = ("qk_norm", "n_embd=16,32,64")
    study, tasks, records = hand_study(tmp_path, lrs=lrs, vary=vary)
    summary = summarize(study, tasks, records)
    (tmp_path / "results.json").write_bytes(to_json(study, tasks, records, summary, {}))
    rc, _, stderr = main_report(tmp_path)
    assert (rc, stderr) == (0, ""), stderr
    page = Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert len(page.table("rates")) == 3 and len(page.table("rates")[0][0]) == 12
    check_layout(look(tmp_path, tmp_path), n_images=3)  # curves, scaling, sweep
