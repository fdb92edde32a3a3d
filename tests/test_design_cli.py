"""Design files through the commands: `microgpt train --design`, `sample`, `train --resume`
and `ablate --design` (its plan, labels, settings as axes, reports, reuse, stacks and ranks),
with Muon and data-parallel training; every error one line, exit status 2, before any run
starts and losing nothing finished; a forward that raises mid-training one line naming the
file, with what was finished kept."""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run_cli

from microgpt import checkpoint
from microgpt.config import ModelConfig, TrainConfig
from microgpt.design import DesignError, load, shown
from microgpt.muon import muon_matrices

torch = pytest.importorskip("torch")

from microgpt.modes import TensorOptions  # noqa: E402
from microgpt.tensor import Stack, TensorGPT  # noqa: E402
from microgpt.tensor.design_check import check  # noqa: E402
from microgpt.train import prepare, train  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:grad and param do not obey")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "designs"
EXAMPLE_FILES = sorted(p.stem for p in EXAMPLES.glob("*.py"))
SMALL = ["--n-embd", "8", "--n-head", "2", "--block-size", "8", "--val-docs", "20"]
SMALL += ["--eval-docs", "20"]
TRAIN = ["train", "--threads", "1", *SMALL, "--num-samples", "3", "--log-every", "1000"]
TINY = ["--steps", "6", "--val-docs", "5", "--n-embd", "4", "--n-head", "1", "--block-size", "6"]
TINY += ["--last-n", "3", "--seeds", "2"]
F64 = TensorOptions(device="cpu", dtype="float64", threads=1)


def example(name: str) -> str:
    return str(EXAMPLES / f"{name}.py")


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def one_line(stderr: str) -> str:
    """The one error line of a command that failed, without a traceback."""
    assert stderr.count("\n") == 1 and stderr.startswith("microgpt: error: "), stderr
    return stderr


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def vocab(path: str) -> int:
    from microgpt.data import Tokenizer, read_documents

    return Tokenizer.from_documents(read_documents(path)).vocab_size


# train, sample, resume ---------------------------------------------------------------------------


class StopError(Exception):
    pass


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_each_example_trains_samples_and_resumes_exactly(tmp_path, name, names):
    """`train --design` (tensor mode implied) checks the file, trains it and writes a design
    checkpoint (format 4: the file, its version, settings and weights); `sample` draws the
    samples `train` drew; a run stopped after its checkpoint of step 6 and resumed ends as the
    uninterrupted run, bit for bit."""
    flags = [*TRAIN, "--input", names, "--design", example(name), "--dtype", "float64"]
    whole, ckpt = tmp_path / "w.safetensors", tmp_path / "c.safetensors"
    rc, out, err = run_cli(*flags, "--steps", "12", "--out", str(whole))
    assert (rc, err) == (0, ""), err
    assert f"design file {shown(example(name))}: {load(example(name)).name}" in out
    assert "checked: finite, deterministic, causal, documents and runs apart" in out
    saved = checkpoint.load(whole)
    assert saved.mode == "tensor" and saved.design["sha256"] == load(example(name)).sha256
    assert saved.design["path"] == example(name)
    rc, sampled, err = run_cli("sample", "--checkpoint", str(whole), "--num-samples", "3")
    assert (rc, err) == (0, ""), err
    assert sampled.split() == [line.split(": ", 1)[1] for line in out.splitlines()
                               if line.startswith("sample ")]  # fmt: skip

    assert_resumes_exactly(names, example(name), ckpt, whole, TrainConfig(steps=12))


def assert_resumes_exactly(names: str, design: str, ckpt: Path, whole: Path, tc: TrainConfig):
    """A run of `tc` (and the SMALL sizes), stopped after its checkpoint at half its steps
    and resumed with `train --resume`, ends as `whole`, the uninterrupted run, bit for bit."""
    file = load(design)
    tc = replace(tc, val_docs=20, eval_docs=20)
    model = {"n_embd": 8, "n_head": 2, "block_size": 8}
    config, prep = prepare(names, model, tc, file.run(file.resolve()))
    half = tc.steps // 2

    def stop(step: int, loss: float) -> None:
        if step == half + 1:  # after the checkpoint at half
            raise StopError

    with pytest.raises(StopError):
        train("tensor", config, tc, prep, F64, out=ckpt, save_every=half, on_step=stop)
    assert checkpoint.load(ckpt).step == half
    rc, _, err = run_cli("train", "--resume", str(ckpt), "--num-samples", "0", "--dtype",
                         "float64", "--threads", "1")  # fmt: skip
    assert (rc, err) == (0, ""), err
    a, b = checkpoint.load(ckpt), checkpoint.load(whole)
    assert a.losses == b.losses and a.state == b.state and a.step == tc.steps


def test_design_settings_and_the_checkpoints_version(tmp_path, names):
    """--design-setting sets a file's setting (kept in the checkpoint); resuming needs that
    file in that version: another version, a missing file, or another setting is one line."""
    design = write(tmp_path / "capped.py", (EXAMPLES / "softcap.py").read_text())
    ckpt = tmp_path / "c.safetensors"
    rc, out, err = run_cli(*TRAIN, "--input", names, "--design", design, "--design-setting",
                           "cap=3", "--steps", "4", "--out", str(ckpt))  # fmt: skip
    assert (rc, err) == (0, ""), err
    assert "capped (cap=3.0)" in out
    assert checkpoint.load(ckpt).design["settings"] == {"cap": 3.0}
    resume = ["train", "--resume", str(ckpt), "--steps", "6", "--num-samples", "0"]
    rc, _, err = run_cli(*resume, "--design-setting", "cap=4")
    assert "--design-setting cap=4 differs from the checkpoint's cap=3.0" in one_line(err)
    moved = tmp_path / "moved.py"
    shutil.move(design, moved)
    for command in (resume, ["sample", "--checkpoint", str(ckpt)]):
        rc, _, err = run_cli(*command)
        assert rc == 2 and "is missing: checkpoint" in one_line(err)
        assert "--design FILE" in err
    rc, _, err = run_cli("sample", "--checkpoint", str(ckpt), "--design", str(moved))
    assert (rc, err) == (0, ""), err
    moved.write_text(moved.read_text() + "\n# edited\n")
    for command in (
        [*resume, "--design", str(moved)],
        ["sample", "--checkpoint", str(ckpt), "--design", str(moved)],
    ):
        rc, _, err = run_cli(*command)
        assert rc == 2 and "is not the version checkpoint" in one_line(err)


def test_train_errors_are_one_line_before_any_step(tmp_path, names):
    """Scalar mode, a broken file, --design-setting without --design, a design flag on a
    built-in checkpoint: one line, exit status 2, nothing written."""
    out = tmp_path / "c.safetensors"
    flags = [*TRAIN, "--input", names, "--steps", "3", "--out", str(out)]
    bad = write(tmp_path / "bad.py", "def forward(w, batch, config, s):\n    return w['wte']\n")
    nan = write(tmp_path / "nan.py", (
        "from microgpt.tensor.blocks import reference_forward\n\n"
        "def forward(w, batch, config, s):\n"
        "    return reference_forward(w, batch, config) * float('nan')\n"
    ))  # fmt: skip
    cases = [
        (["--mode", "scalar", "--design", example("softcap")], "--mode scalar runs the built-in"),
        (["--design", str(tmp_path / "none.py")], "no such file"),
        (["--design", write(tmp_path / "s.py", "def f(:\n")], "does not import: SyntaxError"),
        (["--design", write(tmp_path / "n.py", "x = 1\n")], "defines no forward"),
        (["--design", bad], "forward returned torch.float64 logits of shape"),
        (["--design", nan], "logits at the initial weights are not finite"),
        (["--design", example("swiglu"), "--mlp-activation", "gelu"],
         "does not honour --mlp-activation gelu"),
        (["--mode", "tensor", "--design-setting", "cap=3"], "--design-setting sets a design"),
        (["--design", example("softcap"), "--design-setting", "cop=3"], "has no setting 'cop'"),
        (["--design", example("softcap"), "--design-setting", "cap"], "write NAME=VALUE"),
        (["--design", example("softcap"), "--compile"], "--compile is not available"),
    ]  # fmt: skip
    for extra, message in cases:
        rc, _, err = run_cli(*flags, *extra)
        assert rc == 2 and message in one_line(err), (extra, err)
        assert not out.exists()
    assert run_cli(*flags, "--mode", "tensor")[0] == 0  # a built-in checkpoint
    for command in (
        ["train", "--resume", str(out), "--steps", "4", "--design", example("softcap")],
        ["sample", "--checkpoint", str(out), "--design", example("softcap")],
    ):
        rc, _, err = run_cli(*command)
        assert rc == 2 and "built-in model, not a design file" in one_line(err)
    design = [*flags[:-1], str(tmp_path / "d.safetensors"), "--design", example("softcap")]
    assert run_cli(*design)[0] == 0
    rc, _, err = run_cli("sample", "--checkpoint", str(tmp_path / "d.safetensors"), "--mode",
                         "scalar")  # fmt: skip
    assert rc == 2 and "--mode scalar runs the built-in" in one_line(err)


FAILS_LATER = """from microgpt.tensor.blocks import reference_forward

fail = False  # the test sets it once some steps are done


def forward(w, batch, config, s):
    if fail:
        raise ValueError("boom")
    return reference_forward(w, batch, config)
"""


def test_a_forward_that_raises_mid_training_is_one_line_and_keeps_the_checkpoint(tmp_path):
    """Step 5 of a run that saves every 2 steps: a DesignError naming the file and its line,
    and the checkpoint of step 4 kept (and resumable)."""
    path = write(tmp_path / "later.py", FAILS_LATER)
    design = load(path)
    tc = TrainConfig(steps=10, seed=1)
    config, prep = prepare(None, {"n_embd": 8, "n_head": 2}, tc, design.run(design.resolve()))
    out = tmp_path / "c.safetensors"

    def on_step(step: int, loss: float) -> None:
        design.module.fail = step >= 4

    with pytest.raises(DesignError) as e:
        train("tensor", config, tc, prep, F64, out=out, save_every=2, on_step=on_step)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"design file {path}: ")
    assert "its forward failed: ValueError: boom (line 8)" in message
    assert f"the last good checkpoint {out} (step 4) is kept" in message
    assert checkpoint.load(out).step == 4
    design.module.fail = False


def test_a_forward_that_raises_stops_a_study_and_keeps_the_finished_runs(tmp_path, names):
    """A design file that fails in training only (on batches of more positions than its
    checks pack): the study stops with one line naming it; the built-in run finished before is
    saved, for the same command to reuse."""
    path = write(tmp_path / "small.py", (
        "from microgpt.tensor.blocks import reference_forward\n\n"
        "def forward(w, batch, config, s):\n"
        "    if batch.tokens.shape[-1] > 60:\n"
        "        raise NotImplementedError('only small batches')\n"
        "    return reference_forward(w, batch, config)\n"
    ))  # fmt: skip
    out = tmp_path / "study"
    flags = ["ablate", "--design", path, "--input", names, "--out", str(out), "--jobs", "1"]
    flags += ["--no-stack", "--batch-size", "16", *TINY]
    rc, _, err = run_cli(*flags)
    line = one_line(err)
    assert rc == 2 and f"design file {path}: its forward failed: NotImplementedError" in line
    assert "(line 5)" in line and "1 finished runs are saved" in line
    saved = sorted(p.name for p in out.glob("run-*.json"))
    assert saved == ["run-built-in-seed0.json"]


# Muon -------------------------------------------------------------------------------------------


def test_muon_takes_a_designs_hidden_matrices_and_what_it_declares():
    """A design's new matrices of more than one row and column go to Muon; its rows, columns
    and scalars, the reference's embeddings and head, and what it declares muon=False, to
    AdamW (the built-in model's split unchanged)."""
    config = ModelConfig(vocab_size=27, n_embd=8, n_head=2)
    assert muon_matrices(config.param_shapes()) == [
        n for n in config.param_shapes() if n not in ("wte", "wpe", "lm_head")
    ]
    for name, settings, muon, adamw in [
        ("swiglu", {}, ["layer0.mlp_gate", "layer0.mlp_up", "layer0.mlp_down"], []),
        ("value_embeddings", {}, ["layer0.attn_wq"], ["layer0.value_embed", "layer0.value_lambda"]),
        ("layernorm", {"affine": True}, ["layer0.mlp_fc1"], ["input.ln_gain", "final.ln_bias"]),
        ("zero_init", {}, ["layer0.attn_wo", "layer0.mlp_fc2"], ["wte"]),
    ]:  # fmt: skip
        file = load(example(name))
        docs = [[26, 1, 2, 3, 26], [26, 4, 5, 26], [26, 7, 8, 9, 10, 26]]
        c = check(file, config, file.resolve(settings), docs)
        gpt = TensorGPT(config, None, TrainConfig(optimizer="muon"), F64, c.net(F64))
        assert set(muon) <= set(gpt.optimizer.names), name
        assert not set(adamw) & set(gpt.optimizer.names), name
        assert set(gpt.optimizer.names) == set(muon_matrices(c.shapes, c.muon))


def test_the_reference_file_with_muon_is_the_hand_written_model(names_head):
    """--optimizer muon through the reference file: 50 steps of a stack of two runs at
    batch 4, float64, against the built-in net: every loss within 1e-12, the state within
    1e-10."""
    from microgpt.data import Tokenizer

    reference = load(example("reference"))
    tokenizer = Tokenizer.from_documents(names_head)
    docs = [tokenizer.encode_document(d) for d in names_head]
    config = ModelConfig(vocab_size=tokenizer.vocab_size, n_embd=8, n_head=2, n_layer=2)
    c = check(reference, config, reference.resolve(), docs[:6])
    from microgpt.init import init_weights

    weights = [init_weights(config, random.Random(s)) for s in (1, 2)]
    trains = [TrainConfig(optimizer="muon", seed=s, weight_decay=0.1) for s in (1, 2)]
    hand = Stack(config, weights, trains, F64)
    mine = Stack(config, weights, trains, F64, c.net(F64))
    assert mine.optimizer.names == hand.optimizer.names
    for step in range(50):
        batch = [docs[(8 * step + 4 * s) % 200 :][:4] for s in range(2)]
        want, got = hand.stack_step(batch, [0.01, 0.02]), mine.stack_step(batch, [0.01, 0.02])
        assert max(abs(g - w) / abs(w) for g, w in zip(got, want)) <= 1e-12, step
    for a, b in zip([mine.flat, *mine.optimizer.state().values()],
                    [hand.flat, *hand.optimizer.state().values()]):  # fmt: skip
        assert float((a - b).abs().max()) <= 1e-10 * float(b.abs().max())


def test_a_muon_design_checkpoint_resumes(tmp_path, names):
    """Muon's momentum of a design's own matrices is in its checkpoint, and a resumed run
    continues as the uninterrupted one."""
    flags = [*TRAIN, "--input", names, "--design", example("swiglu"), "--dtype", "float64"]
    flags += ["--optimizer", "muon", "--num-samples", "0"]
    ckpt, whole = tmp_path / "c.safetensors", tmp_path / "w.safetensors"
    assert run_cli(*flags, "--steps", "8", "--out", str(whole))[0] == 0
    momentum = checkpoint.load(whole).state["momentum"]
    assert "layer0.mlp_gate" in momentum and "wte" not in momentum
    assert_resumes_exactly(names, example("swiglu"), ckpt, whole,
                           TrainConfig(steps=8, optimizer="muon"))  # fmt: skip


# ablate ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files_study(tmp_path_factory, names):
    """Two design files against the built-in model, one setting varied, qk-norm crossed."""
    out = tmp_path_factory.mktemp("designs") / "study"
    rc, stdout, stderr = run_cli(
        "ablate", "--design", example("softcap"), "--design", example("parallel"),
        "--vary", "softcap.cap=5,30", "--vary", "qk_norm", "--input", names,
        "--out", str(out), "--jobs", "2", *TINY,
    )  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    return out, stdout


def test_a_study_of_design_files(files_study):
    """Labels (the file's name, its settings, then the switches), the built-in model as the
    baseline, the params column, each file's hash in the settings, and the CSV's columns."""
    out, stdout = files_study
    doc = results(out)
    labels = [d["design"] for d in doc["designs"]]
    assert labels == [
        "no qk-norm", "qk-norm",
        "softcap cap=5, no qk-norm", "softcap cap=5, qk-norm",
        "softcap cap=30, no qk-norm", "softcap cap=30, qk-norm",
        "parallel, no qk-norm", "parallel, qk-norm",
    ]  # fmt: skip
    assert [d["design"] for d in doc["designs"] if d["baseline"]] == ["no qk-norm"]
    assert doc["settings"]["varied"]["design_file"] == ["built-in", "softcap", "parallel"]
    assert doc["settings"]["varied"]["softcap.cap"] == [5.0, 30.0]
    sha = load(example("softcap")).sha256
    assert doc["settings"]["designs"]["softcap"] == {
        "path": example("softcap"), "sha256": sha, "settings": {"cap": 15.0},
    }  # fmt: skip
    assert "design file" in stdout and f"sha256 {sha[:12]}" in stdout
    assert len({d["params"] for d in doc["designs"]}) == 1  # no weights added: like for like
    assert "Not like for like" not in stdout
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["design", "design_file", "softcap.cap", "qk_norm"]
    runs = doc["runs"]
    assert {r["design_file"] for r in runs} == {None, "softcap", "parallel"}
    assert all(r["stack_size"] == 2 for r in runs)  # each design's seeds in one stack


def test_a_study_of_design_files_resumes_and_an_edited_file_runs_again(
    files_study, tmp_path, names
):
    """The same command reuses every run; with the file edited, its runs (and only its)
    train again under an explicit --out, and a new default folder holds the edited study."""
    src, _ = files_study
    out = tmp_path / "study"
    shutil.copytree(src, out)
    softcap = write(tmp_path / "softcap.py", (EXAMPLES / "softcap.py").read_text())
    flags = ["ablate", "--design", softcap, "--design", example("parallel"), "--vary",
             "softcap.cap=5,30", "--vary", "qk_norm", "--input", names, "--out", str(out),
             "--jobs", "1", *TINY]  # fmt: skip
    rc, stdout, _ = run_cli(*flags)
    assert rc == 0 and "reusing 16 finished runs" in stdout and "0 runs trained" in stdout
    Path(softcap).write_text(Path(softcap).read_text() + "\n# edited\n")
    rc, stdout, _ = run_cli(*flags)
    assert rc == 0 and "reusing 8 finished runs" in stdout and "8 runs trained" in stdout


def test_dry_run_shows_design_files_and_their_parameter_counts(tmp_path, names):
    out = tmp_path / "dry"
    rc, stdout, stderr = run_cli(
        "ablate", "--design", example("swiglu"), "--design", example("value_embeddings"),
        "--input", names, "--out", str(out), "--dry-run", *TINY,
    )  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    assert not out.exists()
    rows = {line.split()[0]: line.split() for line in stdout.splitlines()
            if line.startswith("run-")}  # fmt: skip
    assert set(rows) == {"run-built-in-seed0", "run-swiglu-seed0", "run-value-embeddings-seed0"}
    params = {name: int(row[4].replace(",", "")) for name, row in rows.items()}
    V = vocab(names)
    config = ModelConfig(vocab_size=V, n_embd=4, n_head=1, block_size=6)
    assert params["run-built-in-seed0"] == config.num_params()
    assert params["run-value-embeddings-seed0"] == config.num_params() + V * 4 + 1
    assert re.search("runs +params +about", stdout)


def test_a_design_file_crosses_with_the_training_settings(names):
    """A file is one more design axis: it crosses with a training setting's axis (the
    optimizer) and a level, each run's configs carry its design file and the setting's value,
    and the file splits stacks as the optimizer does."""
    from microgpt.ablate.cli import make_study
    from microgpt.ablate.plan import stack_split
    from microgpt.cli import parse_args

    study = make_study(parse_args([
        "ablate", "--design", example("softcap"), "--design-setting", "softcap.cap=24",
        "--vary", "optimizer", "--vary", "n_embd=4,8", "--input", names, *TINY[:4], *TINY[6:],
    ]))  # fmt: skip
    assert [d.label for d in study.designs()] == [
        "adamw",
        "muon",
        "softcap, adamw",
        "softcap, muon",
    ]
    assert study.baseline.flags() == {"optimizer": "adamw", "design_file": "built-in"}
    assert stack_split(study) == (["optimizer", "design_file", "n_embd"], ["seed"])
    tasks = study.tasks(".")
    assert len(tasks) == 2 * 4 * 2
    for t in tasks:
        assert t.train.optimizer == t.design.flags()["optimizer"]
        file = t.design.flags()["design_file"]
        if file == "built-in":
            assert t.design_run is None and t.settings["design"] is None
        else:
            assert t.design_run.name == "softcap" and t.design_run.values() == {"cap": 24.0}
            assert t.design_run.used is not None  # as checked at this size
            assert t.settings["design"]["sha256"] == load(example("softcap")).sha256
    assert Path(tasks[-1].path).name == "run-n_embd8-softcap_muon-seed1.json"


def test_the_parameter_caveat_is_of_design_files_only():
    """The report's caveat compares each design file's design with the built-in model at the
    same values of the other axes: a tied head dropping lm_head (a built-in switch) is not
    warned of, a file that adds weights is, whether or not the head is tied."""
    from microgpt.ablate.tables import params_caveat

    def design(label, params, **axes):
        return {"design": label, "params": params, "axes": axes}

    built_in = [
        design("untied head", 4192, tie_lm_head=False, design_file="built-in"),
        design("tied head", 3760, tie_lm_head=True, design_file="built-in"),
    ]
    assert params_caveat(built_in) == ""
    assert params_caveat([{k: v for k, v in d.items() if k != "axes"} for d in built_in]) == ""
    matched = [
        design("softcap cap=5, untied head", 4192, **{"tie_lm_head": False,
               "design_file": "softcap", "softcap.cap": 5.0}),
        design("softcap cap=5, tied head", 3760, **{"tie_lm_head": True,
               "design_file": "softcap", "softcap.cap": 5.0}),
    ]  # fmt: skip
    assert params_caveat(built_in + matched) == ""
    more = [design("value_embeddings, tied head", 4193, tie_lm_head=True,
                   design_file="value_embeddings")]  # fmt: skip
    text = params_caveat(built_in + matched + more)
    assert text.startswith("Not like for like: the designs' parameter counts differ")
    assert "(value_embeddings, tied head: the params column)" in text
    listed = params_caveat(built_in + more, listed=True)
    assert "value_embeddings, tied head 4,193 against tied head 3,760" in listed


def test_a_study_reports_when_parameter_counts_differ(tmp_path, names):
    """A design that adds weights: the report (text and page) says it is not like for like;
    a design without attention records no attention logit, and the report says so."""
    bigram = write(tmp_path / "bigram.py", (
        "from microgpt.tensor.blocks import embed, linear\n\n"
        "def forward(w, batch, config, s):\n"
        "    return linear(embed(w['wte'], batch.tokens), w['lm_head'])\n"
    ))  # fmt: skip
    out = tmp_path / "study"
    rc, stdout, stderr = run_cli("ablate", "--design", example("value_embeddings"), "--design",
                                 bigram, "--input", names, "--out", str(out), *TINY)  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    assert "Not like for like: the designs' parameter counts differ" in stdout
    page = (out / "report.html").read_text()
    assert "Not like for like" in page and "class=caveat" in page
    assert "bigram records no attention logit" in stdout
    doc = results(out)
    assert doc["diagnostics"]["unrecorded"] == ["bigram"]
    assert [r["max_attention_logit"] for r in doc["runs"] if r["design"] == "bigram"] == [
        None, None,
    ]  # fmt: skip
    params = {d["design"]: d["params"] for d in doc["designs"]}
    V = vocab(names)
    built_in = ModelConfig(vocab_size=V, n_embd=4, n_head=1, block_size=6).num_params()
    assert params == {"built-in": built_in, "value_embeddings": built_in + V * 4 + 1,
                      "bigram": V * 4 * 2}  # fmt: skip


def test_a_design_file_in_a_learning_rate_sweep_at_two_sizes(tmp_path, names):
    """--design crosses with --lr-sweep and a numeric level: each design at its own best
    rate, at each size, with a check per size."""
    out = tmp_path / "study"
    rc, stdout, stderr = run_cli(
        "ablate", "--design", example("swiglu"), "--vary", "n_embd=4,8", "--lr-sweep",
        "0.003,0.03", "--input", names, "--out", str(out), *TINY[:4], *TINY[8:],
        "--n-head", "1",
    )  # fmt: skip
    assert (rc, stderr) == (0, ""), stderr
    assert "2 checks in float64 (each size and setting it runs with) passed" in stdout
    sweep = results(out)["lr_sweep"]
    assert {(d["design"], d["level"]["n_embd"]) for d in sweep["designs"]} == {
        ("built-in", 4), ("swiglu", 4), ("built-in", 8), ("swiglu", 8),
    }  # fmt: skip


def test_ablate_errors_are_one_line_before_any_run(tmp_path, names):
    """Every mistake with design files: one line, exit status 2, and a folder of finished
    runs left as it was."""
    out = tmp_path / "study"
    base = ["ablate", "--input", names, "--out", str(out), "--jobs", "1", *TINY]
    assert run_cli(*base, "--vary", "qk_norm")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    named = write(tmp_path / "x.py", 'name = "gelu"\n' + (EXAMPLES / "parallel.py").read_text())
    twin = write(
        tmp_path / "twin.py", 'name = "softcap"\n' + (EXAMPLES / "parallel.py").read_text()
    )
    leak = write(tmp_path / "leak.py", (
        "from microgpt.tensor.blocks import reference_forward\n\n"
        "def forward(w, batch, config, s):\n"
        "    x = reference_forward(w, batch, config)\n"
        "    return x + x.mean(-2, keepdim=True)\n"
    ))  # fmt: skip
    cases = [
        (["--design", example("swiglu"), "--vary", "mlp_activation"],
         "design swiglu (.*) does not honour mlp_activation: --vary mlp_activation would train"),
        (["--design", example("swiglu"), "--mlp-activation", "gelu"],
         "does not honour --mlp-activation gelu"),
        (["--design", named], "its name 'gelu' is a value of --mlp-activation"),
        (["--design", example("softcap"), "--design", twin], "are both named 'softcap'"),
        (["--design", example("softcap"), "--design", example("softcap")], "is given twice"),
        (["--design", leak], "documents packed in one batch see each other"),
        (["--design", str(tmp_path / "none.py")], "no such file"),
        (["--design", example("softcap"), "--vary", "soft.cap=1,2"], "no design file is named"),
        (["--design", example("softcap"), "--vary", "softcap.cop=1,2"], "has no setting 'cop'"),
        (["--design", example("softcap"), "--vary", "softcap.cap=1"], "gives one value"),
        (["--design", example("softcap"), "--vary", "softcap.cap=a,b"], "must be a number"),
        (["--design", example("softcap"), "--design-setting", "cap=3"], "write NAME.SETTING"),
        (["--design", example("softcap"), "--mode", "scalar"], "--mode scalar runs the built-in"),
        (["--design", example("zero_init"), "--vary", "init"],
         "design zero_init (.*) does not honour init: --vary init would train"),
        (["--design", write(tmp_path / "m.py", 'name = "muon"\n'
                            + (EXAMPLES / "parallel.py").read_text())],
         "its name 'muon' is a value of --optimizer"),
        (["--design", example("softcap"), "--vary", "design_file"],
         "a study's design files are its --design FILE flags"),
        (["--design", example("softcap"), "--vary", "softcap.cap"], "needs its values"),
        (["--design", example("softcap"), "--vary", "softcap.cap=5,30", "--design-setting",
          "softcap.cap=3"], r"--design-setting softcap.cap=3 is not among --vary softcap.cap=5,30"),
        (["--design", example("softcap"), "--vary", "softcap.cap=5,30", "--plan",
          "one-at-a-time"], "which does not use softcap.cap .* so cap=30 would never run"),
    ]  # fmt: skip
    for extra, message in cases:
        rc, _, err = run_cli(*base, *extra)
        assert rc == 2 and re.search(message, one_line(err)), (extra, err)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
def test_ablate_design_over_two_ranks_gives_one_process_results(tmp_path, names):
    """`ablate --design` shared over two torchrun ranks: the same runs as in one process."""
    from test_distributed import torchrun

    flags = ["ablate", "--design", example("softcap"), "--design", example("swiglu"),
             "--input", names, "--steps", "10", *TINY[2:]]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(*flags, "--out", str(one), "--jobs", "1")[0] == 0
    done = torchrun([*flags, "--out", two])
    assert "2 ranks share the 6 runs" in done.stdout

    def outcome(out: Path) -> dict:
        keys = ("val_loss", "final_loss", "losses", "params", "design_file")
        return {(r["design"], r["seed"]): {k: r[k] for k in keys} for r in results(out)["runs"]}

    assert outcome(two) == outcome(one)


@pytest.mark.slow
def test_train_design_data_parallel_follows_one_process(tmp_path, names):
    """`train --design` under torchrun (2 ranks, float64, batch 4) follows one process."""
    from conftest import read_metrics
    from test_distributed import torchrun

    flags = [*TRAIN, "--input", names, "--design", example("value_embeddings"), "--dtype",
             "float64", "--batch-size", "4", "--steps", "8"]  # fmt: skip
    assert run_cli(*flags, "--metrics", str(tmp_path / "one.jsonl"))[0] == 0
    torchrun([*flags, "--metrics", tmp_path / "two.jsonl"])
    one, _ = read_metrics(tmp_path / "one.jsonl")
    two, _ = read_metrics(tmp_path / "two.jsonl")
    assert len(one) == len(two) == 8
    assert max(abs(a - b) / abs(b) for a, b in zip(two, one)) < 1e-9


def test_a_stack_of_a_design_equals_its_runs_through_train_stack(names_head):
    """`train.train_stack` of a design file: each run's losses and held-out figures are its
    solo run's (float64)."""
    from microgpt.train import train_stack

    design = load(example("value_embeddings"))
    trains = [TrainConfig(steps=6, seed=s, batch_size=2, val_docs=8) for s in (3, 4)]
    preps, config = [], None
    for tc in trains:
        config, prep = prepare(None, {"n_embd": 8, "n_head": 2}, tc,
                               design.run(design.resolve()))  # fmt: skip
        preps.append(prep)
    stacked = train_stack(config, trains, preps, F64)
    for tc, prep, got in zip(trains, preps, stacked):
        _, want = train("tensor", config, tc, prep, F64)
        assert got.params == want.params == prep.design.num_params
        assert got.losses == pytest.approx(want.losses, rel=1e-12)
        assert got.val_loss == pytest.approx(want.val_loss, rel=1e-12)
