"""`microgpt ablate` end to end on a tiny config: files, table, pairing, resume, --jobs, flags."""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from microgpt.ablate.plan import designs_of, parse_vary
from microgpt.ablate.progress import RunsProgress
from microgpt.cli import build_parser, main
from microgpt.config import DEFAULT_VARY, SWITCHES
from microgpt.errors import UserError
from microgpt.stall import BEAT_EVERY_S

DESIGNS, REFERENCE = designs_of(parse_vary(list(DEFAULT_VARY)), "full")

TINY = ["--steps", "6", "--val-docs", "5", "--n-embd", "4", "--n-head", "1", "--block-size", "6"]
TINY += ["--last-n", "3"]
RUN_KEYS = {
    "stack_size", "diverged",
    "design", "tie_lm_head", "input_rmsnorm", "switches", "level", "seed", "params",
    "final_loss", "mean_last_n",
    "last_n", "val_loss", "steps_per_s", "tokens_per_s", "train_seconds", "wall_seconds",
    "val_docs", "data_order", "model_config", "train_config", "environment", "losses",
}  # fmt: skip


def ablate(*argv: str) -> tuple[int, str, str]:
    return run_cli("ablate", *argv)


@pytest.fixture(scope="module")
def study(tmp_path_factory, names):
    """One scalar study, 4 designs × 2 seeds, in two worker processes."""
    out = tmp_path_factory.mktemp("ablate") / "study"
    rc, stdout, stderr = ablate("--mode", "scalar", "--seeds", "2", "--jobs", "2",
                                "--input", names, "--out", str(out), *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    return out, stdout


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def run_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("run-*.json"))}


def outcome(runs: list[dict]) -> dict:
    """What a run computed (not how fast): must not depend on the process that ran it."""
    keys = ("params", "final_loss", "mean_last_n", "val_loss", "data_order", "losses")
    return {(r["design"], r["seed"]): {k: r[k] for k in keys} for r in runs}


# files and table --------------------------------------------------------------------------------


def test_table_schema(study):
    _, stdout = study
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("design"))
    for column in ("params", "final loss", "last 3 mean", "val loss", "steps/s", "tokens/s"):
        assert column in lines[head]
    rows = lines[head + 2 : head + 6]
    assert [r.split("  ")[0].rstrip(" *") for r in rows] == [d.label for d in DESIGNS]
    assert rows[0].startswith(REFERENCE.label + " *")
    assert all(r.count("±") == 3 for r in rows)
    assert "sample standard deviation over the 2 seeds (0, 1)" in stdout
    assert "t-interval (1 degree of freedom)" in stdout and "Holm" in stdout
    verdicts = [
        line for line in lines[head + 6 :] if line.startswith(tuple(d.label for d in DESIGNS))
    ]
    assert len(verdicts) == 3  # every design but the reference
    words = ("within seed noise: no difference shown", "higher val loss than the reference: "
             "worse", "lower val loss than the reference: better")  # fmt: skip
    assert all(v.endswith(words) for v in verdicts)
    effects = [line for line in lines if line.startswith("main effect of ")]
    assert [e.split("  ")[0] for e in effects] == ["main effect of tied head",
                                                   "main effect of no input norm"]  # fmt: skip
    assert sum(line.startswith("tied head × no input norm") for line in lines) == 1
    assert "8 runs trained (2 workers), 0 reused" in stdout


def test_json_schema(study):
    out, _ = study
    doc = results(out)
    assert {"settings", "environment", "spread", "designs", "comparisons", "runs"} <= doc.keys()
    assert doc["settings"]["seeds"] == [0, 1] and doc["settings"]["mode"] == "scalar"
    assert {"microgpt", "python", "torch", "cpu", "jobs"} <= doc["environment"].keys()
    assert len(doc["runs"]) == 8
    for run in doc["runs"]:
        assert RUN_KEYS <= run.keys()
        assert len(run["losses"]) == 6 and run["last_n"] == 3
        assert run["final_loss"] == run["losses"][-1]
        assert run["mean_last_n"] == pytest.approx(sum(run["losses"][-3:]) / 3)
        assert {"microgpt", "python", "cpu"} <= run["environment"].keys()
        assert run["train_config"]["seed"] == run["seed"]
        assert run["val_loss_per_token"] is None  # ablate's default: --eval-docs 0
        assert run["model_config"].keys() >= set(SWITCHES)
    designs = doc["designs"]
    assert [d["switches"] for d in designs] == [d.flags() for d in DESIGNS]
    assert [d["baseline"] for d in designs] == [True, False, False, False]
    comparisons = doc["comparisons"]
    assert [c["kind"] for c in comparisons] == ["difference"] * 3 + ["main effect"] * 2 + [
        "interaction"
    ]
    assert [c["name"] for c in comparisons[:3]] == [d.label for d in DESIGNS[1:]]
    assert doc["adjustment"] == {"method": "holm", "family": 6, "alpha": 0.05}
    for p in comparisons:
        assert p["n"] == 2 and p["df"] == 1 and p["low"] <= p["mean_diff"] <= p["high"]
        assert p["confidence"] >= 0.95 and 0 <= p["p"] <= 1


def test_csv_schema(study):
    out, _ = study
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys())[:4] == ["design", "tie_lm_head", "input_rmsnorm", "seed"]
    assert sorted((r["tie_lm_head"], r["input_rmsnorm"], r["seed"]) for r in rows) == sorted(
        (str(d.flags()["tie_lm_head"]), str(d.flags()["input_rmsnorm"]), str(s))
        for d in DESIGNS
        for s in (0, 1)
    )
    by_key = {(r["design"], int(r["seed"])): r for r in rows}
    for run in results(out)["runs"]:
        assert float(by_key[run["design"], run["seed"]]["val_loss"]) == run["val_loss"]


def test_plot_written(study):
    out, _ = study
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_design_sees_the_same_seeds_and_data_order(study):
    out, _ = study
    runs = results(out)["runs"]
    for d in DESIGNS:
        assert sorted(r["seed"] for r in runs if r["design"] == d.label) == [0, 1]
    orders = {seed: {r["data_order"] for r in runs if r["seed"] == seed} for seed in (0, 1)}
    assert all(len(o) == 1 for o in orders.values())  # one split and order per seed
    assert orders[0] != orders[1]


def test_tied_design_has_vocab_times_embd_fewer_parameters(study):
    out, _ = study
    runs = results(out)["runs"]
    params = {(r["tie_lm_head"], r["input_rmsnorm"]): r["params"] for r in runs}
    cfg = runs[0]["model_config"]
    for norm in (True, False):
        assert params[False, norm] - params[True, norm] == cfg["vocab_size"] * cfg["n_embd"]


# what varies ------------------------------------------------------------------------------------


def test_default_vary_is_the_seeds_four_designs_in_their_order():
    assert [d.label for d in DESIGNS] == [
        "untied head, input norm",
        "tied head, input norm",
        "untied head, no input norm",
        "tied head, no input norm",
    ]
    assert REFERENCE == DESIGNS[0]


def test_vary_parses_switches_and_numbers():
    varied = parse_vary(
        ["mlp-activation", "qk_norm=true,false", "n_embd=16,32", "learning_rate=1e-3,3e-3"]
    )
    assert varied == {
        "mlp_activation": ("relu", "relu2", "gelu"),
        "qk_norm": (True, False),
        "n_embd": (16, 32),
        "learning_rate": (0.001, 0.003),
    }


def test_vary_z_loss_is_a_number_that_may_be_zero():
    assert parse_vary(["z_loss=0,1e-4"]) == {"z_loss": (0.0, 0.0001)}
    assert parse_vary(["z-loss=1e-4,0"]) == {"z_loss": (0.0001, 0.0)}
    for bad in ("z_loss=0,-1e-4", "z_loss=0,x", "learning_rate=0,1e-3"):
        with pytest.raises(UserError, match="--vary"):
            parse_vary([bad])


def test_plans_full_and_one_at_a_time():
    varied = parse_vary(["mlp_activation", "qk_norm", "position"])
    full, base = designs_of(varied, "full")
    assert len(full) == 3 * 2 * 2 and len(set(full)) == 12 and full[0] == base
    assert base.flags() == {"mlp_activation": "relu", "qk_norm": False, "position": "learned"}
    one, base1 = designs_of(varied, "one-at-a-time")
    assert base1 == base and one[0] == base and len(one) == 1 + 2 + 1 + 1
    for d in one[1:]:  # each differs from the baseline in exactly one switch
        assert sum(d.flags()[k] != v for k, v in base.flags().items()) == 1


def test_baseline_is_the_first_listed_value_when_the_reference_is_left_out():
    _, base = designs_of(parse_vary(["mlp_activation=gelu,relu2"]), "full")
    assert base.flags() == {"mlp_activation": "gelu"}


def test_every_switch_can_vary():
    for name, switch in SWITCHES.items():
        designs, base = designs_of(parse_vary([name]), "full")
        assert [d.flags()[name] for d in designs] == list(switch.values)
        assert base.flags()[name] == switch.reference


@pytest.fixture(scope="module")
def scaling_study(tmp_path_factory, names):
    """A scalar study over two widths and two designs, 2 seeds."""
    out = tmp_path_factory.mktemp("ablate") / "scaling"
    rc, stdout, stderr = ablate("--mode", "scalar", "--seeds", "2", "--jobs", "2", "--input",
                                names, "--out", str(out), "--vary", "n_embd=4,8",
                                "--vary", "final_rmsnorm", *TINY[:4], *TINY[6:])  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    return out, stdout


def test_numeric_levels_cross_every_design(scaling_study):
    out, stdout = scaling_study
    assert "2 designs × 2 levels (n_embd 4, n_embd 8) × 2 seeds = 8 runs" in stdout
    assert "== n_embd 4 ==" in stdout and "== n_embd 8 ==" in stdout
    assert "Does it hold as n_embd changes?" in stdout
    runs = results(out)["runs"]
    assert sorted((r["n_embd"], r["final_rmsnorm"], r["seed"]) for r in runs) == sorted(
        (e, f, s) for e in (4, 8) for f in (False, True) for s in (0, 1)
    )
    assert all(r["model_config"]["n_embd"] == r["level"]["n_embd"] for r in runs)
    with open(out / "results.csv", newline="") as f:
        assert list(csv.DictReader(f))[0].keys() >= {"n_embd", "final_rmsnorm"}
    assert (out / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    comparisons = results(out)["comparisons"]
    assert [c["level"] for c in comparisons] == [{"n_embd": 4}, {"n_embd": 8}]
    # the same seed gives the same data order at every level and design
    assert len({r["data_order"] for r in runs if r["seed"] == 0}) == 1


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, names):
    out = tmp_path / "dry"
    rc, stdout, stderr = ablate("--mode", "scalar", "--seeds", "2", "--input", names, "--out",
                                str(out), "--vary", "qk_norm", "--dry-run", *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    assert not out.exists()
    lines = stdout.splitlines()
    assert len([line for line in lines if line.startswith("run-")]) == 4  # scalar: one by one
    assert "4 of 4 runs to train; about" in stdout


def test_dry_run_shows_the_stacks(tmp_path, names):
    out = tmp_path / "dry"
    rc, stdout, stderr = ablate("--seeds", "3", "--input", names, "--out", str(out),
                                "--vary", "qk_norm", "--dry-run", *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    assert not out.exists()
    stacked = [line.split() for line in stdout.splitlines() if line.startswith("run-")]
    assert [row[:4] for row in stacked] == [
        ["run-no-qk-norm-seed0", "…", "seed2", "3"],
        ["run-qk-norm-seed0", "…", "seed2", "3"],
    ]
    assert "6 of 6 runs to train, in 2 stacks; about" in stdout


# resume and parallelism -------------------------------------------------------------------------


def test_resume_reuses_finished_runs_unchanged(study, tmp_path, names):
    src, _ = study
    out = tmp_path / "resumed"
    shutil.copytree(src, out)
    before, before_runs = run_files(out), outcome(results(out)["runs"])
    rc, stdout, _ = ablate("--mode", "scalar", "--seeds", "3", "--jobs", "1",
                           "--input", names, "--out", str(out), *TINY)  # fmt: skip
    assert rc == 0
    assert "reusing 8 finished runs" in stdout and "4 runs trained" in stdout
    after = run_files(out)
    assert len(after) == 12 and all(after[name] == blob for name, blob in before.items())
    now = outcome(results(out)["runs"])
    assert all(now[key] == value for key, value in before_runs.items())

    # a saved run is reused only if its settings match exactly
    tampered = out / "run-tied-head_no-input-norm-seed2.json"
    record = json.loads(tampered.read_text())
    record["settings"]["train"]["learning_rate"] = 0.02
    tampered.write_text(json.dumps(record))
    rc, stdout, _ = ablate("--mode", "scalar", "--seeds", "3", "--jobs", "1",
                           "--input", names, "--out", str(out), *TINY)  # fmt: skip
    assert rc == 0 and "reusing 11 finished runs" in stdout and "1 runs trained" in stdout
    assert json.loads(tampered.read_text())["settings"]["train"]["learning_rate"] == 0.01


def test_jobs_1_and_2_give_identical_results(study, tmp_path, names):
    src, _ = study
    out = tmp_path / "serial"
    rc, stdout, _ = ablate("--mode", "scalar", "--seeds", "2", "--jobs", "1",
                           "--input", names, "--out", str(out), *TINY)  # fmt: skip
    assert rc == 0 and "(1 worker)" in stdout
    assert outcome(results(out)["runs"]) == outcome(results(src)["runs"])


def test_tensor_mode_tiny(tmp_path, names):
    pytest.importorskip("torch")
    try:
        from microgpt.tensor import TensorGPT  # noqa: F401
    except ImportError:
        pytest.skip("microgpt.tensor is not written yet")
    runs = {}
    for jobs in ("2", "1"):
        out = tmp_path / f"jobs{jobs}"
        rc, stdout, stderr = ablate("--seeds", "2", "--jobs", jobs, "--input", names,
                                    "--out", str(out), *TINY)  # fmt: skip
        assert (rc, stderr) == (0, ""), stderr
        assert "tensor mode" in stdout
        doc = results(out)
        assert doc["settings"]["tensor"]["threads"] == 1
        assert all(r["environment"]["torch_threads"] == 1 for r in doc["runs"])
        runs[jobs] = outcome(doc["runs"])
    assert runs["1"] == runs["2"]  # bit-identical whatever --jobs is
    cfg = doc["runs"][0]["model_config"]
    params = {key[0]: value["params"] for key, value in runs["1"].items()}
    assert params[REFERENCE.label] - params[DESIGNS[1].label] == cfg["vocab_size"] * 4


# stacks: runs trained as one computation --------------------------------------------------------

STACKABLE = [*TINY, "--batch-size", "2", "--dropout", "0.1", "--dtype", "float64"]


def _by_run(out: Path) -> dict:
    return {(r["seed"], r["train_config"]["learning_rate"], tuple(r["switches"].items())): r
            for r in results(out)["runs"]}  # fmt: skip


def _assert_same_runs(stacked: dict, alone: dict) -> None:
    assert stacked.keys() == alone.keys()
    for key, run in alone.items():
        mine = stacked[key]
        assert len(mine["losses"]) == len(run["losses"])
        for a, b in zip(mine["losses"], run["losses"]):
            assert abs(a - b) <= 1e-12 * abs(b)
        assert abs(mine["val_loss"] - run["val_loss"]) <= 1e-12 * run["val_loss"]


def test_a_stacked_study_gives_each_run_as_alone(tmp_path, names):
    pytest.importorskip("torch")
    outs, printed = {}, {}
    for how in ("--stack-size=2", "--no-stack"):
        outs[how] = tmp_path / how.strip("-")
        rc, printed[how], stderr = ablate("--seeds", "3", "--vary", "qk_norm", "--input", names,
                                          "--out", str(outs[how]), how, *STACKABLE)  # fmt: skip
        assert (rc, stderr) == (0, ""), stderr
    assert "stacks of up to 2 runs" in printed["--stack-size=2"]
    assert "stacks" not in printed["--no-stack"]
    stacked, alone = _by_run(outs["--stack-size=2"]), _by_run(outs["--no-stack"])
    # three seeds per design in stacks of at most two: a stack of 2, then one of 1 (alone)
    sizes = sorted(json.loads(p.read_text()).get("stack_size", 1)
                   for p in outs["--stack-size=2"].glob("run-*.json"))  # fmt: skip
    assert sizes == [1, 1, 2, 2, 2, 2]
    _assert_same_runs(stacked, alone)


def test_a_diverged_run_ends_alone_and_its_stack_goes_on(tmp_path, names):
    pytest.importorskip("torch")
    out, alone = tmp_path / "sweep", tmp_path / "alone"
    rc, stdout, stderr = ablate("--seeds", "2", "--vary", "learning_rate=0.01,1e300",
                                "--input", names, "--out", str(out), *STACKABLE)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    rc, _, stderr = ablate("--seeds", "2", "--learning-rate", "0.01", "--no-stack",
                           "--vary", "qk_norm=false,true", "--input", names,
                           "--out", str(alone), *STACKABLE)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("run-*.json"))]
    assert {r["stack_size"] for r in runs} == {4}  # both rates and both seeds in one stack
    diverged = [r for r in runs if r["train_config"]["learning_rate"] == 1e300]
    assert len(diverged) == 2
    for r in diverged:
        step = r["diverged"]["step"]
        assert 1 <= step <= 6 and len(r["losses"]) == step - 1
        assert r["val_loss"] is None and r["final_loss"] is None
    kept = {k: v for k, v in _by_run(out).items() if k[1] == 0.01}
    same = {k: v for k, v in _by_run(alone).items() if k[2] == (("qk_norm", False),)}
    _assert_same_runs({k[:2]: v for k, v in kept.items()}, {k[:2]: v for k, v in same.items()})
    # a resumed study counts a diverged run as finished
    rc, stdout, _ = ablate("--seeds", "2", "--vary", "learning_rate=0.01,1e300",
                           "--input", names, "--out", str(out), *STACKABLE)  # fmt: skip
    assert rc == 0 and "reusing 4 finished runs" in stdout


def test_stacks_that_would_not_fit_in_memory_are_split_with_a_line(tmp_path, names, monkeypatch):
    pytest.importorskip("torch")
    from microgpt.ablate import runner
    from microgpt.ablate.plan import run_bytes

    one_run = run_bytes(dict(n_layer=1, n_embd=4, n_head=1, block_size=6), 27, _train(), "float32")
    monkeypatch.setattr(runner, "free_memory", lambda device: 2 * one_run)  # two runs at once
    out = tmp_path / "study"
    rc, stdout, stderr = ablate("--seeds", "4", "--vary", "qk_norm", "--jobs", "1",
                                "--input", names, "--out", str(out), *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    assert "more than the" in stdout and "splitting them into stacks of 2" in stdout
    sizes = [json.loads(p.read_text())["stack_size"] for p in out.glob("run-*.json")]
    assert sorted(sizes) == [2] * 8


def _train():
    from microgpt.config import TrainConfig

    return TrainConfig(steps=6, batch_size=1)


def test_a_partly_saved_stack_is_trained_whole_and_gives_the_same_bits(tmp_path, names):
    """Float32, where a run's last digits depend on its stack: the runs a resumed study lacks
    come out bit for bit as in the uninterrupted study, and the saved ones stay untouched."""
    pytest.importorskip("torch")
    out = tmp_path / "study"
    argv = ["--seeds", "3", "--vary", "qk_norm", "--input", names, "--out", str(out), *TINY]
    argv += ["--block-size", "16", "--batch-size", "3", "--steps", "30"]  # rows of many widths
    assert ablate(*argv)[0] == 0
    before = {p.name: json.loads(p.read_text()) for p in out.glob("run-*.json")}
    stack = sorted(out.glob("run-qk-norm-*.json"))
    assert [before[p.name]["stack_size"] for p in stack] == [3, 3, 3]
    kept = [path.read_bytes() for path in stack[:2]]
    stack[2].unlink()  # alone it would run the solo path, whose last digits differ
    rc, stdout, _ = ablate(*argv)
    assert rc == 0 and "reusing 5 finished runs" in stdout and "1 runs trained" in stdout
    assert [path.read_bytes() for path in stack[:2]] == kept
    for path in stack[2:]:
        again = json.loads(path.read_text())
        assert again["losses"] == before[path.name]["losses"]
        assert again["val_loss"] == before[path.name]["val_loss"]


# the default folder, progress and errors --------------------------------------------------------


def test_default_out_is_derived_from_the_settings(names):
    from microgpt.ablate.cli import make_study

    def out(*argv):
        args = build_parser().parse_args(["ablate", "--input", names, *argv])
        return make_study(args).default_out()

    a = out("--mode", "scalar", "--steps", "6")
    assert a.startswith(str(Path("runs") / "ablate-scalar-")) and len(Path(a).name) == 22
    assert out("--mode", "scalar", "--steps", "6", "--seeds", "9", "--jobs", "1") == a
    assert out("--mode", "scalar", "--steps", "6", "--n-embd", "16") == a  # the default value
    assert out("--mode", "scalar", "--steps", "7") != a
    assert out("--mode", "tensor", "--steps", "6") != out("--mode", "tensor", "--steps", "6",
                                                          "--dtype", "float64")  # fmt: skip


def test_default_out_resumes_in_place(tmp_path, names, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ("--mode", "scalar", "--seeds", "1", "--jobs", "1", "--input", names, *TINY)
    rc, first, _ = ablate(*argv)
    assert rc == 0 and "4 runs trained" in first
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("ablate-scalar-")
    rc, second, _ = ablate(*argv)
    assert rc == 0 and "reusing 4 finished runs" in second and "0 runs trained" in second
    assert "One seed (0): no spread" in second and "no interval" in second


def test_missing_matplotlib_skips_the_plot_with_a_note(study, tmp_path, names, monkeypatch):
    src, _ = study
    out = tmp_path / "noplot"
    shutil.copytree(src, out)
    (out / "loss_curves.png").unlink()
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    rc, stdout, _ = ablate("--mode", "scalar", "--seeds", "2", "--jobs", "1",
                           "--input", names, "--out", str(out), *TINY)  # fmt: skip
    assert rc == 0 and not (out / "loss_curves.png").exists()
    (note,) = [line for line in stdout.splitlines() if "not installed" in line]
    assert note.startswith("matplotlib") and "pip install 'microgpt[plot]'" in note


def test_evaluation_reports_progress_and_no_number_changes(names):
    """`on_progress`: called as the final evaluation reads each held-out document (scalar
    mode: one by one), and the run is the same to the last bit."""
    from microgpt.config import TrainConfig
    from microgpt.train import prepare, train

    tc = TrainConfig(steps=3, val_docs=8, eval_docs=5)
    config, prep = prepare(names, {"n_embd": 4, "n_head": 1, "block_size": 6}, tc)
    calls = []
    _, plain = train("scalar", config, tc, prep)
    _, watched = train("scalar", config, tc, prep, on_progress=lambda: calls.append(1))
    assert len(calls) >= 8 + 5  # every document of both evaluations
    assert (watched.losses, watched.val_loss) == (plain.losses, plain.val_loss)
    assert watched.val_loss_per_token == plain.val_loss_per_token


def processes_under(parent: int) -> dict[int, str]:
    """pid -> command line of `parent`'s children."""
    out = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            out[int(d)] = cmdline
    return out


def gone(pid: int) -> bool:
    """Ended (or a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_a_stopped_worker_ends_the_study_with_one_line_and_it_resumes(tmp_path, names):
    """A worker process stopped (SIGSTOP) in the middle of a study: after --stall-timeout the
    command ends it, stops, names it and its runs in one line, and keeps every finished run;
    the same command then trains the rest."""
    out = tmp_path / "study"
    argv = ["ablate", "--mode", "scalar", "--seeds", "2", "--jobs", "2", "--input", names,
            "--out", str(out), *TINY, "--steps", "200"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "microgpt", *argv, "--stall-timeout", "5"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while not list(out.glob("run-*.json")):
            assert time.time() < deadline and proc.poll() is None, "no run finished"
            time.sleep(0.05)
        workers = [p for p, cmd in processes_under(proc.pid).items() if "spawn_main" in cmd]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGSTOP)
        stopped = time.time()
        _, stderr = proc.communicate(timeout=60)
        took = time.time() - stopped
    finally:  # nothing left stopped or orphaned, whatever happened
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
    # silence counts from the worker's last passed-on beat, up to BEAT_EVERY_S (and a step)
    # before the SIGSTOP
    assert proc.returncode == 2 and 5 - BEAT_EVERY_S - 0.1 <= took < 30, (proc.returncode, took)
    (line,) = stderr.splitlines()
    assert line.startswith(f"microgpt: error: worker {workers[0]} (training ")
    assert "made no progress for 5 s: it is stopped or hung (--stall-timeout)" in line
    kept = run_files(out)
    assert f"{len(kept)} finished runs are saved in {out}: run the same command again" in line
    assert 1 <= len(kept) < 8 and all(gone(pid) for pid in workers)  # the command ended them

    rc, stdout, _ = ablate(*argv[1:])
    assert rc == 0 and f"reusing {len(kept)} finished runs" in stdout
    assert {k: v for k, v in run_files(out).items() if k in kept} == kept
    assert len(run_files(out)) == 8


def test_progress_prints_a_few_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    progress = RunsProgress(total=10, reused=2, steps_to_run=8 * 100, stream=stream)
    for i in range(1, 9):
        progress.tick(i * 100 - 50)
        progress.run_done(i * 100)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("runs 10/10")
    assert "ETA" in lines[0] and "\r" not in stream.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ["--seeds", "0"],
        ["--seeds", "2", "--seed-list", "1,2"],
        ["--seed-list", "1,x"],
        ["--seed-list", "4,4"],
        ["--mode", "gpu"],
        ["--mlp-activation", "relu", "--vary", "mlp_activation=relu2,gelu"],  # flag not listed
        ["--vary", "n_embd"],  # a numeric setting needs its values
        ["--vary", "qk_norm", "--vary", "qk-norm"],
        ["--vary", "width=1,2"],
        ["--vary", "mlp_activation=relu,swish"],
        ["--vary", "n_embd=8,x"],
        ["--vary", "n_embd=8,8"],
        ["--vary", "z_loss=0,-1"],
        ["--z-loss", "-1"],
        ["--z-loss", "nan"],
        ["--z-loss", "1e-4", "--vary", "z_loss=0,1e-4"],  # fixed and varied
        ["--vary", "n_embd=6", "--n-head", "4"],
        ["--vary", "n_embd=8,6"],  # 6 is not divisible by the 4 heads
        ["--plan", "some"],
        ["--stack-size", "0"],
        ["--stack-size", "2", "--no-stack"],
        ["--seed", "3"],
        ["--jobs", "0"],
        ["--stall-timeout", "0"],
        ["--stall-timeout", "nan"],
        ["--mode", "scalar", "--threads", "2"],
        ["--n-embd", "6", "--n-head", "4"],
        ["--val-fraction", "1.5"],
        ["--input", "/nonexistent/names.txt"],
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    assert main(["ablate", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("microgpt: error:") and captured.err.count("\n") == 1


def test_out_that_is_a_file_is_an_error(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    assert main(["ablate", "--mode", "scalar", "--out", str(path)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_settings_name_the_code_that_computes_the_runs(tmp_path, monkeypatch):
    """The code hash covers every module of the package: change any one, and it changes."""
    import microgpt
    from microgpt.ablate.plan import versions

    scalar, tensor = versions("scalar"), versions("tensor")
    assert scalar["code"] == tensor["code"] and len(scalar["code"]) == 16
    assert "torch" in tensor and "torch" not in scalar
    copy = tmp_path / "microgpt"
    shutil.copytree(Path(microgpt.__file__).parent, copy)
    monkeypatch.setattr(microgpt, "__file__", str(copy / "__init__.py"))
    assert versions("scalar")["code"] == scalar["code"]
    (copy / "progress.py").write_text((copy / "progress.py").read_text() + "\n# changed\n")
    assert versions("scalar")["code"] != scalar["code"]


def test_a_study_on_a_text_stream(tmp_path):
    text = tmp_path / "play.txt"
    text.write_text("To be, or not to be: that is the question.\n" * 40)
    out = tmp_path / "stream"
    rc, stdout, stderr = ablate("--mode", "scalar", "--data", "stream", "--input", str(text),
                                "--seeds", "1", "--jobs", "1", "--out", str(out), "--vary",
                                "qk_norm", "--steps", "4", "--n-embd", "4", "--n-head", "1",
                                "--block-size", "8", "--val-docs", "3",
                                "--eval-docs", "3")  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    runs = results(out)["runs"]
    assert len(runs) == 2 and all(r["train_config"]["data"] == "stream" for r in runs)
    assert all(r["val_loss"] is not None and r["val_loss_per_token"] for r in runs)
