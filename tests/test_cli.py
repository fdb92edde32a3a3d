"""Every kind of bad input ends in one line on stderr, exit status 2, and no file touched."""

import json
import math
import subprocess
import sys

import pytest

from microgpt import checkpoint
from microgpt.cli import main

TINY = ["--steps", "3", "--n-embd", "8", "--n-head", "2", "--num-samples", "2", "--val-docs", "5"]
TINY += ["--eval-docs", "5"]  # the per-token figure over 5 names, not all 3,203 (scalar: slow)


def fails(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("microgpt"), err
    assert "Traceback" not in err
    assert match in err, err
    return err


@pytest.fixture
def ckpt(tmp_path, capsys):
    path = tmp_path / "run.safetensors"
    assert main(["train", *TINY, "--out", str(path)]) == 0
    capsys.readouterr()
    return path


def test_train_tiny_run_prints_summary_and_samples(capsys):
    assert main(["train", *TINY, "--log-every", "1"]) == 0
    out = capsys.readouterr().out
    assert "step 3/3 | loss " in out
    for key in ("final loss", "mean last", "val loss", "steps/s", "tokens/s", "sample  2:"):
        assert key in out


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "no documents"),
        (b"  \n\t\n   \n", "no documents"),
        (b"\x00\x01\x02binary\x00", "binary"),
        (b"caf\xe9\n", "not valid UTF-8"),
    ],
)
def test_bad_input_files(tmp_path, capsys, content, match):
    p = tmp_path / "in.txt"
    p.write_bytes(content)
    fails(capsys, ["train", *TINY, "--input", str(p)], match)


def test_missing_input_and_directory(tmp_path, capsys):
    fails(capsys, ["train", "--input", str(tmp_path / "nope.txt")], "does not exist")
    fails(capsys, ["train", "--input", str(tmp_path)], "is a directory")


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--steps", "-5"], "--steps"),
        (["--steps", "ten"], "not an integer"),
        (["--block-size", "0"], "--block-size"),
        (["--temperature", "0"], "--temperature"),
        (["--temperature", "nan"], "--temperature"),
        (["--n-embd", "10", "--n-head", "3"], "divisible"),
        (["--learning-rate", "-1"], "--learning-rate"),
        (["--val-fraction", "1.5"], "--val-fraction"),
        (["--mode", "quantum"], "unknown mode"),
        (["--dtype", "float64"], "tensor only"),
        (["--save-every", "5"], "--out"),
        (["--data", "stream", "--reshuffle"], "--reshuffle applies to --data lines"),
        (["--loss-average", "mean"], "invalid choice"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_bad_flags(capsys, flags, match):
    fails(capsys, ["train", *flags], match)


def test_no_command(capsys):
    fails(capsys, [], "required")


def test_checkpoint_errors(tmp_path, capsys, ckpt):
    fails(capsys, ["sample", "--checkpoint", str(tmp_path / "none")], "does not exist")
    fails(capsys, ["sample", "--checkpoint", str(tmp_path)], "is a directory")
    blob = ckpt.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(blob[: len(blob) // 2])
    fails(capsys, ["sample", "--checkpoint", str(truncated)], "corrupt")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 100)
    fails(capsys, ["sample", "--checkpoint", str(garbage)], "corrupt")
    text = tmp_path / "text.safetensors"
    text.write_text("hello")
    fails(capsys, ["sample", "--checkpoint", str(text)], "corrupt")


def test_incompatible_checkpoints(tmp_path, capsys, ckpt):
    from microgpt import tensorfile

    tensors, meta = tensorfile.loads(ckpt.read_bytes())
    for key, value, match in [
        ("version", "99", "format version 99"),
        ("format", "other", "not a microgpt checkpoint"),
        ("model_config", json.dumps({"vocab_size": 27}), "corrupt or incompatible"),
    ]:
        bad = tmp_path / f"bad-{key}.safetensors"
        bad.write_bytes(tensorfile.dumps(tensors, {**meta, key: value}))
        fails(capsys, ["sample", "--checkpoint", str(bad)], match)
    tensors["wte"] = ([3, 3], [0.0] * 9)
    bad = tmp_path / "bad-shape.safetensors"
    bad.write_bytes(tensorfile.dumps(tensors, meta))
    fails(capsys, ["sample", "--checkpoint", str(bad)], "shape")


def test_version_1_checkpoints_load_with_the_reference_switches(tmp_path, capsys, ckpt):
    """A checkpoint written before the new switches existed: format 1, two switches named."""
    from microgpt import tensorfile
    from microgpt.config import REFERENCE_DESIGN

    tensors, meta = tensorfile.loads(ckpt.read_bytes())
    old_model = {k: v for k, v in json.loads(meta["model_config"]).items()}
    for name in ("final_rmsnorm", "mlp_activation", "qk_norm", "position"):
        del old_model[name]
    old = tmp_path / "v1.safetensors"
    old.write_bytes(
        tensorfile.dumps(tensors, {**meta, "version": "1", "model_config": json.dumps(old_model)})
    )
    loaded = checkpoint.load(old)
    assert loaded.model.design() == REFERENCE_DESIGN
    assert main(["sample", "--checkpoint", str(old), "--num-samples", "2"]) == 0
    want = capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(ckpt), "--num-samples", "2"]) == 0
    assert capsys.readouterr().out == want


def test_unknown_switch_values_in_a_checkpoint(tmp_path, capsys, ckpt):
    from microgpt import tensorfile

    tensors, meta = tensorfile.loads(ckpt.read_bytes())
    model = json.loads(meta["model_config"])
    for change, match in [
        ({"mlp_activation": "swiglu"}, "mlp_activation = 'swiglu', which this microgpt does not"),
        ({"moe": True}, "model settings this microgpt does not know (moe)"),
    ]:
        bad = tmp_path / "newer.safetensors"
        bad.write_bytes(
            tensorfile.dumps(tensors, {**meta, "model_config": json.dumps({**model, **change})})
        )
        fails(capsys, ["sample", "--checkpoint", str(bad)], match)


def test_resume_flags_must_agree_with_the_checkpoint(tmp_path, capsys, ckpt):
    fails(capsys, ["train", "--resume", str(ckpt), "--n-embd", "16"], "differs from the checkpoint")
    fails(capsys, ["train", "--resume", str(ckpt)], "finished all 3 steps")
    other = tmp_path / "other.txt"
    other.write_text("abc\nabd\n")
    fails(capsys, ["train", "--resume", str(ckpt), "--input", str(other)], "documents differ")


def test_prompt_outside_vocabulary(capsys, ckpt):
    fails(capsys, ["sample", "--checkpoint", str(ckpt), "--prompt", "Zed"], "not in the vocabulary")


def test_nothing_is_overwritten_on_bad_input(tmp_path, capsys, ckpt):
    before = ckpt.read_bytes()
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("keep me")
    fails(
        capsys,
        ["train", *TINY, "--out", str(ckpt), "--metrics", str(metrics), "--temperature", "-1"],
        "--temperature",
    )
    fails(
        capsys,
        [
            "train",
            "--steps",
            "3",
            "--out",
            str(ckpt),
            "--metrics",
            str(metrics),
            "--input",
            str(tmp_path / "missing.txt"),
        ],
        "does not exist",
    )
    assert ckpt.read_bytes() == before
    assert metrics.read_text() == "keep me"


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    argv = [
        "train",
        "--steps",
        "200",
        "--n-embd",
        "8",
        "--n-head",
        "2",
        "--num-samples",
        "0",
        "--learning-rate",
        "1e30",
        "--out",
        str(out),
        "--save-every",
        "1",
    ]
    err = fails(capsys, argv, "lower --learning-rate")
    assert "at step" in err
    assert "is kept" in err
    kept = checkpoint.load(out)
    assert all(math.isfinite(x) for x in kept.losses)
    assert all(math.isfinite(w) for row in kept.state["weights"]["wte"] for w in row)


def test_module_entry_point_has_no_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "microgpt", "train", "--steps", "-5"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_sample_reproduces_the_training_samples(tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    trained = [
        l.split(": ", 1)[1] for l in capsys.readouterr().out.splitlines() if l.startswith("sample ")
    ]
    assert main(["sample", "--checkpoint", str(out), "--num-samples", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == trained
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(out),
                "--num-samples",
                "3",
                "--seed",
                "1",
                "--prompt",
                "a",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.startswith("a") for line in lines)


def test_unavailable_device_fails_before_any_output(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--mode", "tensor", "--device", "cuda"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "--device cpu" in err
