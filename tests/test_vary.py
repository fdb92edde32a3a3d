"""`ablate --vary` over every design axis (the switches and the training settings, from their
declarations) and level: the designs of mixed axes, their baselines, labels and file names; a
setting a design does not use; the stacks they split, and the numbers stacked against alone;
Muon against AdamW in a sweep; factorial effects of settings; old results; the errors."""

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from microgpt.ablate.cli import make_study
from microgpt.ablate.plan import (
    AXES,
    LEVELS,
    designs_of,
    parse_vary,
    stack_key,
    stack_split,
    stacks,
)
from microgpt.cli import main, parse_args
from microgpt.config import SETTINGS, SWITCHES
from microgpt.errors import UserError

TINY = ["--steps", "6", "--val-docs", "5", "--n-embd", "4", "--n-head", "1", "--block-size", "6"]
TINY += ["--last-n", "3"]


def ablate(*argv: str) -> tuple[int, str, str]:
    return run_cli("ablate", *argv)


def study_of(*argv: str):
    """The study `microgpt ablate *argv` would run (nothing trains)."""
    return make_study(parse_args(["ablate", *argv]))


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


# what --vary takes, and the designs it makes ---------------------------------------------------


def test_every_axis_and_level_takes_its_declared_values():
    for name, axis in AXES.items():
        if axis.every is not None:  # a switch, a name or a yes/no: every value unless listed
            assert parse_vary([name]) == {name: axis.every}
            assert parse_vary([f"{name}={axis.every[1]},{axis.every[0]}"]) == {
                name: (axis.every[1], axis.every[0])
            }
        else:  # a number: its list, each value checked by the declaration
            s = SETTINGS[name]
            other = s.default / 2 if s.default else 1 if s.kind == "int" else 0.1
            assert parse_vary([f"{name}={s.default},{other}"]) == {name: (s.default, other)}
    assert parse_vary(["n_embd=8,16", "learning-rate=1e-3,1e-2"]) == {
        "n_embd": (8, 16),
        "learning_rate": (1e-3, 1e-2),
    }
    assert set(LEVELS).isdisjoint(AXES)


def test_designs_of_mixed_axes_follow_the_declarations_order():
    """Given in any order, the axes take their declaration order (the switches first); the
    first changes fastest and the baseline comes first."""
    varied = parse_vary(["weight_decay=0,0.1", "optimizer", "qk_norm"])
    designs, base = designs_of(varied, "full")
    assert [d.label for d in designs] == [
        "no qk-norm, adamw, weight decay 0",
        "qk-norm, adamw, weight decay 0",
        "no qk-norm, muon, weight decay 0",
        "qk-norm, muon, weight decay 0",
        "no qk-norm, adamw, weight decay 0.1",
        "qk-norm, adamw, weight decay 0.1",
        "no qk-norm, muon, weight decay 0.1",
        "qk-norm, muon, weight decay 0.1",
    ]
    assert base == designs[0]
    assert base.flags() == {"qk_norm": False, "optimizer": "adamw", "weight_decay": 0.0}
    assert designs[3].of("model") == {"qk_norm": True}
    assert designs[3].of("train") == {"optimizer": "muon", "weight_decay": 0.0}
    assert designs[3].switches() == {"qk_norm": True}
    slugs = [d.slug for d in designs]
    assert slugs[:2] == ["no-qk-norm_adamw_weight_decay0", "qk-norm_adamw_weight_decay0"]
    assert len(set(slugs)) == len(slugs)
    assert all(re.fullmatch(r"[a-z0-9._-]+", slug) for slug in slugs)
    one, base1 = designs_of(varied, "one-at-a-time")
    assert base1 == base
    assert [d.label for d in one] == [
        "no qk-norm, adamw, weight decay 0",
        "qk-norm, adamw, weight decay 0",
        "no qk-norm, muon, weight decay 0",
        "no qk-norm, adamw, weight decay 0.1",
    ]


@pytest.mark.parametrize(
    "name,value,label",
    [
        ("optimizer", "muon", "muon"),
        ("lr_schedule", "wsd", "wsd"),
        ("lr_schedule", "cosine", "cosine decay"),
        ("weight_decay", 0.1, "weight decay 0.1"),
        ("warmup_steps", 100, "warmup steps 100"),
        ("min_lr", 1e-5, "min lr 1e-05"),
        ("beta2", 0.95, "beta2 0.95"),
        ("grad_clip", 1.0, "grad clip 1"),
        ("dropout", 0.1, "dropout 0.1"),
        ("reshuffle", True, "reshuffled"),
        ("loss_average", "token", "per-token loss"),
        ("mlp_activation", "relu2", "relu²"),
        ("decay_fraction", 0.1 + 1e-12, "decay fraction 0.10000000000100001"),  # not 0.1
    ],
)
def test_labels_read_as_tables_and_plots_show_them(name, value, label):
    assert AXES[name].label(value) == label


def test_the_baseline_is_the_flags_value_when_listed_else_the_default_else_the_first(names):
    flags = ["--input", names, "--mode", "scalar", "--seeds", "1"]
    assert study_of(*flags, "--vary", "optimizer").baseline.flags() == {"optimizer": "adamw"}
    given = study_of(*flags, "--optimizer", "muon", "--vary", "optimizer")
    assert given.baseline.flags() == {"optimizer": "muon"}
    assert [d.label for d in given.designs()] == ["muon", "adamw"]
    assert given.train.optimizer == "adamw"  # the study's own: what varies is the designs'
    wd = study_of(*flags, "--weight-decay", "0.1", "--vary", "weight_decay=0,0.1")
    assert wd.baseline.flags() == {"weight_decay": 0.1}
    first = study_of(*flags, "--vary", "beta2=0.95,0.999")  # the default 0.99 not listed
    assert first.baseline.flags() == {"beta2": 0.95}
    tied = study_of(*flags, "--tie-lm-head")  # the default --vary, from the tied head
    assert tied.baseline.flags() == {"tie_lm_head": True, "input_rmsnorm": True}


def test_a_setting_a_design_does_not_use_is_left_out_not_repeated():
    """decay_fraction is wsd's alone: linear decay is one design, not one per fraction."""
    varied = parse_vary(["lr_schedule=linear,wsd", "decay_fraction=0.1,0.3"])
    designs, base = designs_of(varied, "full")
    assert [d.label for d in designs] == [
        "linear decay",
        "wsd, decay fraction 0.1",
        "wsd, decay fraction 0.3",
    ]
    assert base.flags() == {"lr_schedule": "linear"}
    muon = designs_of(parse_vary(["optimizer", "muon_momentum=0.9,0.95"]), "full")[0]
    assert [d.label for d in muon] == [
        "adamw",
        "muon, muon momentum 0.95",
        "muon, muon momentum 0.9",
    ]
    # the study fixes what the condition is: wsd for every design, so every design uses it
    fixed = designs_of(parse_vary(["decay_fraction=0.1,0.3"]), "full", fixed={"lr_schedule": "wsd"})
    assert [d.flags() for d in fixed[0]] == [{"decay_fraction": 0.1}, {"decay_fraction": 0.3}]


def test_a_fixed_setting_that_only_some_designs_use_is_theirs_alone(names):
    study = study_of("--input", names, "--mode", "scalar", "--seeds", "1",
                     "--vary", "lr_schedule=linear,wsd", "--decay-fraction", "0.3")  # fmt: skip
    fractions = {t.design.label: t.train.decay_fraction for t in study.tasks(".")}
    assert fractions == {"linear decay": 0.2, "wsd": 0.3}  # the default for the linear runs
    assert {t.design.label: t.train.lr_schedule for t in study.tasks(".")} == {
        "linear decay": "linear",
        "wsd": "wsd",
    }
    muon = study_of("--input", names, "--seeds", "1", "--vary", "optimizer",
                    "--muon-momentum", "0.9")  # fmt: skip
    assert {t.design.label: t.train.muon_momentum for t in muon.tasks(".")} == {
        "adamw": 0.95,
        "muon": 0.9,
    }


def test_a_runs_settings_are_its_designs(names):
    """A design axis reaches the run's config (model or train), and its file name."""
    study = study_of("--input", names, "--mode", "scalar", "--seeds", "2", "--vary", "qk_norm",
                     "--vary", "reshuffle", "--vary", "n_embd=4,8", "--n-head", "1")  # fmt: skip
    tasks = study.tasks("out")
    assert len(tasks) == 2 * 4 * 2
    for t in tasks:
        assert t.model_args["qk_norm"] == t.design.flags()["qk_norm"]
        assert t.train.reshuffle == t.design.flags()["reshuffle"]
        assert t.model_args["n_embd"] == t.level.flags()["n_embd"]
        assert t.settings["train"]["reshuffle"] == t.train.reshuffle
    assert Path(tasks[-1].path).name == "run-n_embd8-qk-norm_reshuffled-seed1.json"
    assert len({t.path for t in tasks}) == len(tasks)


def test_a_model_setting_and_a_new_switch_are_axes_by_their_declarations(tmp_path, names):
    """logit_softcap (a ModelConfig number) and init (a switch) vary with nothing in ablate
    naming them: their values reach each run's model, both modes' runs differ by them."""
    assert AXES["logit_softcap"].config == "model" and AXES["init"].config == "model"
    assert parse_vary(["init"]) == {"init": ("gaussian", "zero")}
    varied = parse_vary(["logit_softcap=0,15", "init"])
    assert [d.label for d in designs_of(varied, "full")[0]] == [
        "soft-cap 0, gaussian init",
        "soft-cap 15, gaussian init",
        "soft-cap 0, zero init",
        "soft-cap 15, zero init",
    ]
    out = tmp_path / "softcap"
    rc, stdout, stderr = ablate("--mode", "scalar", "--vary", "logit_softcap=0,15",
                                "--vary", "init", "--seeds", "1", "--input", names,
                                "--out", str(out), *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    runs = results(out)["runs"]
    for run in runs:
        for name in ("logit_softcap", "init"):
            assert run["model_config"][name] == run["axes"][name]
        assert run["switches"] == {"init": run["axes"]["init"]}
    losses = {tuple(r["axes"].values()): r["losses"] for r in runs}
    assert losses[0.0, "gaussian"] != losses[15.0, "gaussian"]
    assert losses[0.0, "gaussian"][0] != losses[0.0, "zero"][0]  # another initial model
    assert (out / "run-logit_softcap15_zero-init-seed0.json").exists()
    assert "main effect of soft-cap 15" in stdout and "main effect of zero init" in stdout


def test_another_kind_of_design_choice_is_one_more_axis():
    """An axis that no config declares (as a design file would be) plugs into the same plan:
    its labels, its slugs, and a setting of its own that only its designs use."""
    from microgpt.ablate.plan import Axis

    def parse(text: str) -> str:
        return text

    file = Axis("design_file", "model", "built-in", ("built-in", "capped"), False, None,
                "--design", parse, str)  # fmt: skip
    cap = Axis("capped.cap", "model", 30.0, None, False, ("design_file", "capped"),
               "--vary capped.cap", float, lambda v: f"cap {v:g}", numeric=True)  # fmt: skip
    axes = {**AXES, file.name: file, cap.name: cap}
    varied = {"qk_norm": (False, True), "design_file": file.every, "capped.cap": (10.0, 30.0)}
    designs, base = designs_of(varied, "full", axes=axes)
    assert [d.label for d in designs] == [
        "no qk-norm, built-in",
        "qk-norm, built-in",
        "no qk-norm, capped, cap 30",
        "qk-norm, capped, cap 30",
        "no qk-norm, capped, cap 10",
        "qk-norm, capped, cap 10",
    ]
    assert base.flags() == {"qk_norm": False, "design_file": "built-in"}
    assert designs[5].slug == "qk-norm_capped_capped.cap10"
    assert designs[5].of("model") == {"qk_norm": True, "design_file": "capped", "capped.cap": 10}


# stacks ------------------------------------------------------------------------------------------


def test_stacks_split_by_every_setting_a_run_cannot_have_its_own(names):
    study = study_of("--input", names, "--seeds", "2", "--stack-size", "64",
                     "--vary", "optimizer", "--vary", "weight_decay=0,0.1",
                     "--vary", "warmup_steps=0,2", "--vary", "lr_schedule=cosine,wsd",
                     *TINY)  # fmt: skip
    assert stack_split(study) == (
        ["optimizer", "weight_decay"],
        ["seed", "lr_schedule", "warmup_steps"],
    )
    groups = stacks(study.tasks("."), study.stack)
    assert len(groups) == 4 and all(len(g) == 2 * 2 * 2 for g in groups)
    split = [{(t.train.optimizer, t.train.weight_decay) for t in g} for g in groups]
    assert all(len(s) == 1 for s in split) and len(set.union(*split)) == 4
    for g in groups:  # within one: every schedule and seed
        assert {(t.train.lr_schedule, t.train.warmup_steps, t.seed) for t in g} == {
            (s, w, seed) for s in ("cosine", "wsd") for w in (0, 2) for seed in (0, 1)
        }
        assert len({stack_key(t) for t in g}) == 1


def test_dry_run_says_what_splits_the_stacks(tmp_path, names):
    pytest.importorskip("torch")
    out = tmp_path / "dry"
    rc, stdout, stderr = ablate("--seeds", "2", "--input", names, "--out", str(out),
                                "--vary", "optimizer", "--vary", "lr_schedule=cosine,wsd",
                                "--dry-run", *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    assert not out.exists()
    assert "4 designs × 2 seeds = 8 runs" in stdout
    rows = [line.split() for line in stdout.splitlines() if line.startswith("run-")]
    assert [row[:4] for row in rows] == [
        ["run-adamw_cosine-decay-seed0", "…", "adamw_wsd-seed1", "4"],
        ["run-muon_cosine-decay-seed0", "…", "muon_wsd-seed1", "4"],
    ]
    assert (
        "stacks split by: optimizer; within a stack the runs differ in: seed, lr_schedule" in stdout
    )
    assert "8 of 8 runs to train, in 2 stacks; about" in stdout


def test_a_stacked_study_of_schedules_is_its_runs_alone_in_float64(tmp_path, names):
    """Warm-up and schedule are each run's own column of the stack: the 8 runs of a stack of
    two warm-ups × cosine and wsd × two seeds are their solo runs (test_stack's 1e-12)."""
    pytest.importorskip("torch")
    common = ["--seeds", "2", "--input", names, "--vary", "warmup_steps=0,10",
              "--vary", "lr_schedule=cosine,wsd", "--batch-size", "2", "--dtype", "float64",
              *TINY, "--steps", "30"]  # fmt: skip
    outs = {}
    for how in ("--stack-size=8", "--no-stack"):
        outs[how] = tmp_path / how.strip("-")
        rc, _, stderr = ablate(*common, "--out", str(outs[how]), how)
        assert (rc, stderr) == (0, ""), stderr
    stacked, alone = (
        {(r["design"], r["seed"]): r for r in results(outs[how])["runs"]} for how in outs
    )
    assert stacked.keys() == alone.keys() and len(alone) == 8
    assert {r["stack_size"] for r in stacked.values()} == {8}
    assert {r["stack_size"] for r in alone.values()} == {1}
    for key, run in alone.items():
        mine = stacked[key]
        assert run["axes"] == mine["axes"]
        assert run["train_config"]["warmup_steps"] == run["axes"]["warmup_steps"]
        assert len(mine["losses"]) == len(run["losses"]) == 30
        for a, b in zip(mine["losses"], run["losses"]):
            assert abs(a - b) <= 1e-12 * abs(b)
        assert abs(mine["val_loss"] - run["val_loss"]) <= 1e-12 * run["val_loss"]
    # and the schedules did differ: a warm-up changes the losses after the first step
    first = [alone[f"{s}, warmup steps {w}", 0]["losses"] for s in ("cosine decay", "wsd")
             for w in (0, 10)]  # fmt: skip
    assert len({tuple(losses[1:]) for losses in first}) == 4


# Muon against AdamW, each at its own best rate --------------------------------------------------


def test_muon_against_adamw_in_a_sweep(tmp_path, names):
    pytest.importorskip("torch")
    out = tmp_path / "muon"
    rc, stdout, stderr = ablate("--vary", "optimizer", "--lr-sweep", "1e-3:1e-1:3",
                                "--seeds", "2", "--input", names, "--out", str(out),
                                *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    assert "2 designs × 3 learning rates (0.001, 0.01, 0.1) × 2 seeds = 12 runs" in stdout
    doc = results(out)
    sweep = doc["lr_sweep"]
    assert [d["design"] for d in sweep["designs"]] == ["adamw", "muon"]
    assert all(d["best_lr"] in (1e-3, 1e-2, 1e-1) for d in sweep["designs"])
    assert [(c["kind"], c["name"]) for c in doc["comparisons"]] == [
        ("difference", "muon"),
        ("sensitivity", "muon"),
    ]
    assert doc["settings"]["baseline"] == {"optimizer": "adamw"}
    assert [d["axes"] for d in doc["designs"]] == [{"optimizer": "adamw"}, {"optimizer": "muon"}]
    assert [d["switches"] for d in doc["designs"]] == [{}, {}]
    for run in doc["runs"]:
        assert run["train_config"]["optimizer"] == run["axes"]["optimizer"] == run["optimizer"]
        assert run["train_config"]["learning_rate"] == run["learning_rate"]
    records = [json.loads(p.read_text()) for p in out.glob("run-*.json")]
    assert {r["stack_size"] for r in records} == {6}  # one stack per optimizer: 3 rates × 2 seeds
    assert {r["axes"]["optimizer"] for r in records} == {"adamw", "muon"}
    assert "* reference design" in stdout and "LR sensitivity of muon" in stdout
    # Muon updates the matrices differently: not one loss alike at the same rate and seed
    by = {(r["axes"]["optimizer"], r["learning_rate"], r["seed"]): r["losses"] for r in records}
    assert by["adamw", 1e-2, 0][0] == by["muon", 1e-2, 0][0]  # the same first loss (same init)
    assert by["adamw", 1e-2, 0][1:] != by["muon", 1e-2, 0][1:]


# factorial effects of settings, and old results ------------------------------------------------


@pytest.fixture(scope="module")
def factorial(tmp_path_factory, names):
    """A scalar study: qk-norm × weight decay 0 or 0.5, 3 seeds."""
    out = tmp_path_factory.mktemp("vary") / "factorial"
    rc, stdout, stderr = ablate("--mode", "scalar", "--vary", "qk_norm",
                                "--vary", "weight_decay=0,0.5", "--seeds", "3",
                                "--input", names, "--out", str(out), *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    return out, stdout


def test_two_valued_settings_give_main_effects_and_interactions(factorial):
    out, stdout = factorial
    doc = results(out)
    kinds = [(c["kind"], c["name"]) for c in doc["comparisons"]]
    assert kinds == [
        ("difference", "qk-norm, weight decay 0"),
        ("difference", "no qk-norm, weight decay 0.5"),
        ("difference", "qk-norm, weight decay 0.5"),
        ("main effect", "qk-norm"),
        ("main effect", "weight decay 0.5"),
        ("interaction", "qk-norm × weight decay 0.5"),
    ]
    # the main effect of weight decay by hand: per seed, the mean val loss with it minus without
    val = {(tuple(r["axes"].items()), r["seed"]): r["val_loss"] for r in doc["runs"]}
    per_seed = []
    for seed in (0, 1, 2):
        on = [v for (axes, s), v in val.items() if s == seed and dict(axes)["weight_decay"]]
        off = [v for (axes, s), v in val.items() if s == seed and not dict(axes)["weight_decay"]]
        per_seed.append(sum(on) / 2 - sum(off) / 2)
    effect = next(c for c in doc["comparisons"] if c["name"] == "weight decay 0.5")
    assert math.isclose(effect["mean_diff"], sum(per_seed) / 3, rel_tol=1e-12)
    assert doc["settings"]["varied"] == {"qk_norm": [False, True], "weight_decay": [0.0, 0.5]}
    with open(out / "results.csv") as f:
        assert f.readline().startswith("design,qk_norm,weight_decay,seed,")
    assert "main effect of weight decay 0.5" in stdout


def test_no_effects_when_a_design_leaves_a_setting_out(names):
    from microgpt.ablate.analysis import factorial

    two = study_of("--input", names, "--mode", "scalar", "--vary", "qk_norm",
                   "--vary", "lr_schedule=linear,wsd")  # fmt: skip
    assert factorial(two)
    three = study_of("--input", names, "--mode", "scalar", "--vary", "lr_schedule=linear,wsd",
                     "--vary", "decay_fraction=0.1,0.3")  # fmt: skip
    assert len(three.designs()) == 3 and not factorial(three)


def test_results_written_before_design_axes_still_read(factorial, tmp_path, capsys):
    """An old results.json: no "axes" anywhere, its baseline the switches alone."""
    from microgpt.ablate.results import read
    from microgpt.ablate.text import format_report

    out, _ = factorial
    old = tmp_path / "old"
    shutil.copytree(out, old)
    doc = results(old)
    doc["settings"]["baseline"] = {"qk_norm": False}
    doc["settings"]["varied"] = {"qk_norm": [False, True]}
    doc["designs"] = [d for d in doc["designs"] if not d["axes"]["weight_decay"]]
    doc["runs"] = [r for r in doc["runs"] if not r["axes"]["weight_decay"]]
    doc["comparisons"] = doc["comparisons"][:1]
    for entry in doc["designs"] + doc["runs"]:
        del entry["axes"]
        entry["design"] = entry["design"].removesuffix(", weight decay 0")
    doc["comparisons"][0]["name"] = "qk-norm"
    (old / "results.json").write_text(json.dumps(doc))
    assert main(["report", str(old)]) == 0
    assert (old / "report.html").exists()
    saved = read(old / "results.json")
    assert saved.baseline_name() == "reference"
    assert "no qk-norm *" in format_report(saved)
    # the same file with a baseline that fixed --weight-decay: not the reference's
    doc["settings"]["train"]["weight_decay"] = 0.5
    (old / "results.json").write_text(json.dumps(doc))
    assert read(old / "results.json").baseline_name() == "baseline"


# the errors: one line, exit 2, before anything trains -------------------------------------------


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--vary", "momentum=0.9,0.95"], "'momentum' is not a setting a study varies: use one"),
        (["--vary", "val_docs=5,10"], "--val-docs is the study's, the same for every run"),
        (["--vary", "seed=1,2"], "a study's seeds are --seeds K"),
        (["--vary", "optimizer=adamw,sgd"], "--vary optimizer: --optimizer 'sgd' is not adamw"),
        (["--lr-schedule", "wsd", "--vary", "decay_fraction=0.5,1.5"],
         "--decay-fraction '1.5' is not in (0, 1]"),
        (["--vary", "dropout=0,1"], "--dropout '1' is not in [0, 1)"),
        (["--vary", "warmup_steps=0,2.5"], "--warmup-steps '2.5' is not 0 or more"),
        (["--vary", "optimizer=muon"], "gives one value"),
        (["--vary", "weight_decay=0.1,0.10"], "repeats a value"),
        (["--vary", "weight_decay"], "--vary weight_decay needs its values: e.g."),
        (["--vary", "decay_fraction=0.1,0.3"],
         "--vary decay_fraction: it applies to --lr-schedule wsd, which no design"),
        (["--vary", "muon_momentum=0.9,0.95"], "it applies to --optimizer muon, which no"),
        (["--decay-fraction", "0.3", "--vary", "lr_schedule=linear,cosine"],
         "--decay-fraction applies to --lr-schedule wsd"),
        (["--plan", "one-at-a-time", "--vary", "lr_schedule=linear,wsd",
          "--vary", "decay_fraction=0.1,0.3"], "so decay fraction 0.3 would never run"),
        (["--weight-decay", "0.2", "--vary", "weight_decay=0,0.1"],
         "--weight-decay 0.2 is not among --vary weight_decay=0,0.1"),
        (["--lr-schedule", "cosine", "--vary", "lr_schedule=linear,wsd"],
         "--lr-schedule cosine is not among --vary lr_schedule=linear,wsd"),
        (["--n-embd", "8", "--vary", "n_embd=8,16"], "--n-embd is fixed and varied"),
        (["--mode", "scalar", "--vary", "dropout=0,0.1"],
         "dropout 0.1: --dropout applies to --mode tensor only"),
        (["--vary", "min_lr=0,0.05"], "min lr 0.05: --min-lr must be in [0, --learning-rate]"),
        (["--vary", "min_lr=0,1e-3", "--lr-sweep", "1e-4,1e-2"],
         "min lr 0.001, lr 0.0001: --min-lr must be in"),
        (["--data", "stream", "--vary", "reshuffle"], "reshuffled: --reshuffle applies to"),
    ],
)  # fmt: skip
def test_bad_vary_is_one_line_exit_2_before_any_run(argv, message, capsys, tmp_path):
    out = tmp_path / "never"
    assert main(["ablate", *argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    assert captured.err.startswith("microgpt: error:") and captured.err.count("\n") == 1
    assert message in captured.err, captured.err


def test_a_varied_warm_up_longer_than_the_shortest_run_warns_once(tmp_path, capsys, names):
    argv = ["ablate", "--mode", "scalar", "--input", names, "--out", str(tmp_path / "dry"),
            "--vary", "warmup_steps=0,10", "--vary", "steps=6,20", "--seeds", "1", "--dry-run",
            *TINY[2:]]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--warmup-steps 10 is longer than the run (6 steps)" in err


def test_parse_vary_errors_are_the_declarations():
    with pytest.raises(UserError, match=r"^--vary beta1: --beta1 '1' is not in \[0, 1\)$"):
        parse_vary(["beta1=0.9,1"])
    with pytest.raises(UserError, match="--mlp-activation 'swish' is not one of"):
        parse_vary(["mlp_activation=relu,swish"])


# the docs -----------------------------------------------------------------------------------


def test_the_docs_table_lists_every_setting_vary_takes():
    """docs/ablate.md's table of what --vary takes: one row per design axis and level, as
    declared (its kind of axis, whether a stack's runs may differ in it, what it applies to)."""
    text = (ROOT / "docs" / "ablate.md").read_text()
    rows = {}
    for line in text.splitlines():
        if m := re.match(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", line):
            rows[m[1]] = (m[2].strip(), m[3].strip())
    assert list(rows) == [*AXES, *LEVELS]
    for name, (role, stack) in rows.items():
        assert role.startswith("switch" if name in SWITCHES else "design" if name in AXES
                               else "level"), name  # fmt: skip
        per_run = name in SETTINGS and SETTINGS[name].per_run
        assert stack == ("its own per run" if per_run else "splits stacks"), name
