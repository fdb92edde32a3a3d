"""Training: the loss falls, runs repeat bit for bit, checkpoints round-trip, and a run killed
with SIGKILL and resumed gives the same per-step losses as one never interrupted."""

import json
import random

import pytest
from conftest import assert_sigkill_resume_is_exact, read_metrics

from microgpt import checkpoint
from microgpt.cli import main
from microgpt.config import TrainConfig
from microgpt.schedule import lr_at
from microgpt.train import prepare, train

SMALL = {"n_embd": 8, "n_head": 2}


metrics_losses = read_metrics


def test_lr_decays_linearly_to_zero():
    tc = TrainConfig(steps=10)
    assert lr_at(0, tc) == 0.01
    assert lr_at(5, tc) == 0.005
    assert lr_at(9, tc) == pytest.approx(0.001)


def test_loss_falls_on_a_tiny_dataset(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text("abcabc\nbcabca\ncabcab\n" * 3)
    tc = TrainConfig(steps=150, val_fraction=0.0, learning_rate=0.02)
    config, prep = prepare(str(p), SMALL, tc)
    _, result = train("scalar", config, tc, prep)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.5 * first


def test_two_runs_are_bit_identical(tmp_path, capsys):
    runs = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.jsonl"
        assert (
            main(
                [
                    "train",
                    "--steps",
                    "20",
                    *_flags(SMALL),
                    "--num-samples",
                    "3",
                    "--metrics",
                    str(path),
                ]
            )
            == 0
        )
        losses, summary = metrics_losses(path)
        runs.append((losses, summary["val_loss"], summary["samples"]))
    assert runs[0] == runs[1]


def test_metrics_file_has_every_step_and_a_summary(tmp_path, capsys):
    path = tmp_path / "m.jsonl"
    assert main(["train", "--steps", "7", *_flags(SMALL), "--metrics", str(path)]) == 0
    losses, summary = metrics_losses(path)
    assert len(losses) == 7
    for key in (
        "final_loss",
        "mean_last_n",
        "val_loss",
        "steps_per_s",
        "tokens_per_s",
        "params",
        "model_config",
        "train_config",
    ):
        assert key in summary
    assert summary["final_loss"] == losses[-1]
    assert not (tmp_path / "m.jsonl.partial").exists()


def test_checkpoint_round_trip(tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    assert main(["train", "--steps", "5", *_flags(SMALL), "--out", str(out)]) == 0
    ckpt = checkpoint.load(out)
    checkpoint.save(tmp_path / "again.safetensors", ckpt)
    assert checkpoint.load(tmp_path / "again.safetensors") == ckpt
    assert ckpt.step == 5 and len(ckpt.losses) == 5
    assert ckpt.rng_state == prepare(None, SMALL, TrainConfig(steps=5))[1].rng.getstate()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_continues_exactly(tmp_path, capsys):
    full, resumed = tmp_path / "full.jsonl", tmp_path / "resumed.jsonl"
    ckpt = tmp_path / "c.safetensors"
    common = ["--steps", "30", *_flags(SMALL), "--num-samples", "4"]
    assert main(["train", *common, "--metrics", str(full)]) == 0

    def interrupt_at_12(step, loss):
        if step == 12:
            raise KeyboardInterrupt

    tc = TrainConfig(steps=30, eval_docs=20)
    config, prep = prepare(None, SMALL, tc)
    with pytest.raises(KeyboardInterrupt):
        train("scalar", config, tc, prep, out=ckpt, save_every=5, on_step=interrupt_at_12)
    assert checkpoint.load(ckpt).step == 10
    assert (
        main(["train", "--resume", str(ckpt), "--num-samples", "4", "--metrics", str(resumed)]) == 0
    )
    losses_full, summary_full = metrics_losses(full)
    losses_resumed, summary_resumed = metrics_losses(resumed)
    assert losses_resumed == losses_full
    assert summary_resumed["samples"] == summary_full["samples"]
    assert summary_resumed["val_loss"] == summary_full["val_loss"]


def test_a_resumed_runs_metrics_are_the_whole_runs(tmp_path):
    """Every step's loss and learning rate and every held-out evaluation, the ones before the
    interruption included (an evaluation falls on the checkpoint's step), record for record."""
    from microgpt.train import MetricsWriter

    tc = TrainConfig(steps=30, eval_docs=20, eval_every=5, lr_schedule="cosine", warmup_steps=4)
    config = prepare(None, SMALL, tc)[0]

    def records(path, resume=None, **kwargs):
        metrics = MetricsWriter(path)
        prep = prepare(None, SMALL, tc)[1]
        train("scalar", config, tc, prep, resume=resume, metrics=metrics, **kwargs)
        metrics.finish({})
        return [json.loads(line) for line in open(path)]

    full = records(tmp_path / "full.jsonl")
    ckpt = tmp_path / "c.safetensors"

    def interrupt_at_12(step, loss):
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        records(tmp_path / "stopped.jsonl", out=ckpt, save_every=5, on_step=interrupt_at_12)
    saved = checkpoint.load(ckpt)
    assert saved.step == 10 and [s for s, _ in saved.evals] == [5, 10]
    resumed = records(tmp_path / "resumed.jsonl", resume=saved, out=ckpt)
    assert [r["step"] for r in full if "val_loss" in r] == [5, 10, 15, 20, 25, 30]
    assert resumed == full
    assert checkpoint.load(ckpt).lrs == [lr_at(i, tc) for i in range(30)]


def test_a_checkpoint_without_lrs_or_evals_still_reads(tmp_path):
    """Written before train_lrs and evals: the rates as its own schedule gave them, no evals."""
    from microgpt import tensorfile

    path = tmp_path / "c.safetensors"
    tc = TrainConfig(steps=6, eval_docs=10, eval_every=3)
    config, prep = prepare(None, SMALL, tc)
    train("scalar", config, tc, prep, out=path)
    tensors, meta = tensorfile.loads(path.read_bytes())
    assert checkpoint.load(path).evals and "train_lrs" in tensors
    del tensors["train_lrs"], meta["evals"]
    path.write_bytes(tensorfile.dumps(tensors, meta))
    old = checkpoint.load(path)
    assert old.lrs == [lr_at(i, tc) for i in range(6)] and old.evals == ()


def _flags(model_args):
    """The model flags, and a per-token evaluation over 20 held-out names instead of all."""
    flags = [x for k, v in model_args.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return [*flags, "--eval-docs", "20"]


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    """A run killed with SIGKILL mid-way and resumed matches an uninterrupted run exactly."""
    assert_sigkill_resume_is_exact(tmp_path, [*_flags(SMALL), "--val-docs", "20"], 400, 25)


def test_input_file_is_remembered_for_resume(tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("\n".join("".join(random.Random(i).choices("abcdef", k=5)) for i in range(50)))
    out = tmp_path / "c.safetensors"
    assert (
        main(
            [
                "train",
                "--input",
                str(data),
                "--steps",
                "6",
                *_flags(SMALL),
                "--out",
                str(out),
                "--save-every",
                "3",
            ]
        )
        == 0
    )
    assert checkpoint.load(out).input_path == str(data)


def test_progress_is_live_on_a_terminal_and_plain_when_piped():
    import io

    from microgpt.progress import Progress

    piped = io.StringIO()
    p = Progress(100, stream=piped)
    for step in range(1, 101):
        p.update(step, 1.0)
    p.close()
    lines = piped.getvalue().splitlines()
    assert len(lines) == 20 and lines[-1] == "step 100/100 | loss 1.000000"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    p = Progress(100, stream=tty)
    for step in range(1, 101):
        p.update(step, 2.0)
    p.close()
    out = tty.getvalue()
    assert out.startswith("\rstep") and out.endswith("\n") and out.count("\n") == 1
    assert "step 100/100 | loss 2.000000" in out and "ETA" in out


@pytest.mark.parametrize(("first", "then"), [("scalar", "scalar"), ("scalar", "tensor")])
def test_resume_with_more_steps_extends_the_run(tmp_path, capsys, first, then):
    if then == "tensor":
        pytest.importorskip("torch")
    ckpt, log = tmp_path / "c.safetensors", tmp_path / "m.jsonl"
    common = ["--n-embd", "8", "--n-head", "2", "--num-samples", "0", "--val-docs", "5"]
    assert main(["train", "--mode", first, "--steps", "5", *common, "--out", str(ckpt)]) == 0
    five = checkpoint.load(ckpt).losses
    capsys.readouterr()
    extra = ["--dtype", "float64"] if then == "tensor" else []
    argv = ["train", "--mode", then, *extra, "--resume", str(ckpt), "--steps", "8"]
    assert main([*argv, *common[4:], "--metrics", str(log)]) == 0
    out = capsys.readouterr().out
    assert "extending the run from 5 to 8 steps" in out
    extended = checkpoint.load(ckpt)
    assert extended.step == 8 and extended.train.steps == 8 and extended.losses[:5] == five
    records = [r for r in map(__import__("json").loads, open(log)) if "lr" in r]
    assert records[5]["lr"] == pytest.approx(0.01 * (1 - 5 / 8))  # the schedule over 8 steps
    # the first five steps ran on the schedule over 5 steps, and are logged so
    assert [r["lr"] for r in records[:5]] == pytest.approx([0.01 * (1 - i / 5) for i in range(5)])
    assert extended.lrs[:5] == [r["lr"] for r in records[:5]]
    # a smaller --steps still contradicts the checkpoint
    assert main([*argv[:-1], "4"]) == 2
    assert "differs from the checkpoint's 8: drop --steps to resume, give more than 8" in (
        capsys.readouterr().err
    )


def test_keep_best_keeps_the_lowest_held_out_loss(tmp_path, capsys):
    """A constant learning rate too high for this tiny model: the held-out loss is lowest at
    an early evaluation, so the best checkpoint must be that one, not the last. Then a run
    stopped at 20 steps and extended to 40 keeps comparing against the best it kept."""
    argv = ["train", "--n-embd", "8", "--n-head", "2", "--eval-every", "5", "--eval-docs", "30"]
    argv += ["--num-samples", "0", "--lr-schedule", "constant", "--learning-rate", "0.1"]
    out, log = tmp_path / "run.safetensors", tmp_path / "m.jsonl"
    assert (
        main([*argv, "--steps", "40", "--out", str(out), "--keep-best", "--metrics", str(log)]) == 0
    )
    stdout = capsys.readouterr().out
    evals = [r for r in map(json.loads, open(log)) if "val_loss" in r and "step" in r]
    assert [e["step"] for e in evals] == list(range(5, 41, 5))
    best = min(evals, key=lambda e: e["val_loss"])
    assert best["step"] < 40  # the point of keeping the best
    kept = checkpoint.load(tmp_path / "run.best.safetensors")
    assert kept.step == best["step"] and kept.val_loss == best["val_loss"]
    assert f"run.best.safetensors  (val per token {best['val_loss']:.6f})" in stdout
    assert checkpoint.load(out).step == 40
    assert main(["sample", "--checkpoint", str(tmp_path / "run.best.safetensors")]) == 0

    staged = tmp_path / "staged.safetensors"
    assert main([*argv, "--steps", "20", "--out", str(staged), "--keep-best"]) == 0
    assert main([*argv, "--steps", "40", "--resume", str(staged), "--keep-best"]) == 0
    again = checkpoint.load(tmp_path / "staged.best.safetensors")
    assert (again.step, again.val_loss) == (kept.step, kept.val_loss)


def test_keep_best_needs_out(capsys):
    assert main(["train", "--keep-best", "--steps", "2"]) == 2
    assert "--keep-best needs --out" in capsys.readouterr().err


# a run of an ablate study (train.InStudy) ------------------------------------------------------


def test_in_a_study_a_non_finite_loss_is_recorded_not_raised():
    from microgpt.errors import UserError
    from microgpt.train import InStudy

    tc = TrainConfig(steps=20, learning_rate=1e30, val_docs=4)
    config, prep = prepare(None, SMALL, tc)
    with pytest.raises(UserError, match="lower --learning-rate"):
        train("scalar", config, tc, prep)  # microgpt train: one line, exit 2
    _, result = train("scalar", config, tc, prep, study=InStudy())
    step, last = result.diverged
    assert 1 < step <= 20 and len(result.losses) == step - 1 and last == result.losses[-1]
    assert result.val_loss is None and result.halves is None and result.steps_per_s == 0


def test_in_a_study_the_halves_partition_the_held_out_documents():
    from microgpt.ablate.sweep import split_halves
    from microgpt.train import InStudy, token_data

    tc = TrainConfig(steps=5, val_docs=9)
    config, prep = prepare(None, SMALL, tc)
    halves = split_halves(9, seed=tc.seed)
    gpt, result = train("scalar", config, tc, prep, study=InStudy(halves=halves))
    held_out = token_data(prep, tc, config.block_size)[1][:9]
    want = tuple(gpt.eval_loss([held_out[i] for i in half]) for half in halves)
    assert result.halves == want
    # together they are the val loss: a mean of per-document means over the same 9 documents
    sel, rep = halves
    joined = (len(sel) * want[0] + len(rep) * want[1]) / 9
    assert joined == pytest.approx(result.val_loss, rel=1e-12)
    assert result.diagnostics == []  # scalar mode: none


def test_a_stacks_halves_and_diagnostics_are_its_runs_alone():
    """train_stack's studies: each run's halves and diagnostics as `train` makes them alone
    (float64), a run that diverges in the stack recorded there, the others going on."""
    pytest.importorskip("torch")
    from microgpt.ablate.sweep import split_halves
    from microgpt.config import TensorOptions
    from microgpt.train import InStudy, train_stack

    options = TensorOptions(device="cpu", dtype="float64", threads=1)
    tcs = [TrainConfig(steps=8, seed=s, learning_rate=lr, val_docs=6)
           for s, lr in ((0, 0.01), (1, 0.03), (0, 1e300))]  # fmt: skip
    prepared = [prepare(None, SMALL, tc) for tc in tcs]
    config = prepared[0][0]
    studies = [InStudy(split_halves(6, tc.seed), diagnostics_every=3, diagnostic_docs=4)
               for tc in tcs]  # fmt: skip
    stacked = train_stack(config, tcs, [p for _, p in prepared], options, studies=studies)
    assert stacked[2].diverged is not None and stacked[2].halves is None
    for tc, (_, prep), study, got in zip(tcs[:2], prepared, studies, stacked):
        _, alone = train("tensor", config, tc, prep, options, study=study)
        assert [s for s, *_ in got.diagnostics] == [3, 6, 8]  # every 3 steps and at the end
        assert got.halves == pytest.approx(alone.halves, rel=1e-12)
        for mine, theirs in zip(got.diagnostics, alone.diagnostics):
            assert mine == pytest.approx(theirs, rel=1e-12)
