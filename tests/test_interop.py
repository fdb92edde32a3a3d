"""Checkpoints across modes, through the CLI: a run saved by one mode is resumed and sampled by
the other, and tensor mode resumes exactly after SIGKILL, as scalar mode does."""

import pytest

pytest.importorskip("torch")

from conftest import assert_sigkill_resume_is_exact, read_metrics  # noqa: E402

from microgpt import checkpoint  # noqa: E402
from microgpt.cli import main  # noqa: E402
from microgpt.config import TrainConfig  # noqa: E402
from microgpt.train import prepare, train  # noqa: E402

SMALL = ["--n-embd", "8", "--n-head", "2", "--val-docs", "50", "--eval-docs", "50"]
MODES = {"scalar": ["--mode", "scalar"], "tensor": ["--mode", "tensor", "--dtype", "float64"]}


metrics = read_metrics


def save_partial_run(mode: str, path, steps: int, stop_after: int) -> None:
    """Train `mode` (float64) towards `steps` and stop after `stop_after`, saved at it
    (a step saves after its evaluation, so the stop comes in the next step)."""
    from microgpt.modes import TensorOptions

    def stop(step, loss):
        if step == stop_after + 1:
            raise KeyboardInterrupt

    tc = TrainConfig(steps=steps, val_docs=50, eval_docs=50)
    config, prep = prepare(None, {"n_embd": 8, "n_head": 2}, tc)
    tensor = TensorOptions(dtype="float64", device="cpu") if mode == "tensor" else None
    with pytest.raises(KeyboardInterrupt):
        train(mode, config, tc, prep, tensor, out=path, save_every=stop_after, on_step=stop)


@pytest.mark.parametrize(("first", "then"), [("scalar", "tensor"), ("tensor", "scalar")])
def test_resume_in_the_other_mode(tmp_path, capsys, first, then):
    full = tmp_path / "full.jsonl"
    assert (
        main(
            [
                "train",
                *MODES[first],
                "--steps",
                "24",
                *SMALL,
                "--num-samples",
                "5",
                "--metrics",
                str(full),
            ]
        )
        == 0
    )
    ckpt, resumed = tmp_path / "c.safetensors", tmp_path / "resumed.jsonl"
    save_partial_run(first, ckpt, steps=24, stop_after=12)
    assert checkpoint.load(ckpt).mode == first
    assert (
        main(
            [
                "train",
                *MODES[then],
                "--resume",
                str(ckpt),
                "--num-samples",
                "5",
                "--metrics",
                str(resumed),
            ]
        )
        == 0
    )
    assert checkpoint.load(ckpt).mode == then and checkpoint.load(ckpt).step == 24
    losses_full, summary_full = metrics(full)
    losses_resumed, summary_resumed = metrics(resumed)
    assert losses_resumed[:12] == losses_full[:12]  # restored from the checkpoint
    assert losses_resumed == pytest.approx(losses_full, rel=1e-10)
    assert summary_resumed["val_loss"] == pytest.approx(summary_full["val_loss"], rel=1e-10)
    assert summary_resumed["samples"] == summary_full["samples"]


def test_sample_a_checkpoint_in_either_mode(tmp_path, capsys):
    ckpt = tmp_path / "c.safetensors"
    assert main(["train", "--steps", "30", *SMALL, "--num-samples", "0", "--out", str(ckpt)]) == 0
    capsys.readouterr()
    outputs = []
    for mode in (["--mode", "scalar"], ["--mode", "tensor", "--dtype", "float64"]):
        assert main(["sample", "--checkpoint", str(ckpt), *mode, "--num-samples", "8"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 8


def test_scalar_mode_samples_a_checkpoint_trained_with_dropout(tmp_path, capsys):
    """Dropout is a training option of tensor mode alone: it must not stop scalar mode from
    sampling the checkpoint, and both modes draw the same names from it."""
    ckpt = tmp_path / "c.safetensors"
    flags = ["--mode", "tensor", "--dtype", "float64", "--dropout", "0.1"]
    args = ["train", *flags, "--steps", "30", *SMALL, "--num-samples", "0", "--out", str(ckpt)]
    assert main(args) == 0
    capsys.readouterr()
    outputs = []
    for mode in (["--mode", "scalar"], ["--mode", "tensor", "--dtype", "float64"]):
        assert main(["sample", "--checkpoint", str(ckpt), *mode, "--num-samples", "8"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 8


def test_tensor_mode_sigkill_then_resume_is_bit_identical(tmp_path):
    flags = ["--mode", "tensor", "--threads", "1", "--batch-size", "4", *SMALL]
    assert_sigkill_resume_is_exact(tmp_path, flags, 3000, 100)
