"""Streams of text, the per-token held-out loss, --eval-every, top-k sampling and `microgpt plot`.

Stream mode: no held-out character ever trains, every window lies inside the training part,
the windows of a step depend on (seed, step) alone, and resume is exact. The per-token loss is
checked against a direct computation from the logits, and tensor mode against scalar mode in
float64. The reference (lines, no new flags) is unchanged: samples do not move when an
evaluation runs, and top-k over the whole vocabulary draws exactly the reference's samples.
"""

import json
import math
import random

import pytest
from conftest import read_metrics
from hypothesis import given
from hypothesis import strategies as st

from microgpt import checkpoint
from microgpt.cli import main
from microgpt.config import ModelConfig, TrainConfig
from microgpt.data import (
    Tokenizer,
    held_out_windows,
    read_documents,
    read_stream,
    split_stream,
    stream_offsets,
)
from microgpt.init import init_weights
from microgpt.sample import keep_top_k, sample
from microgpt.scalar.model import ScalarGPT
from microgpt.train import prepare, token_data, train

SMALL = {"n_embd": 8, "n_head": 2, "block_size": 8}
SMALL_FLAGS = ["--n-embd", "8", "--n-head", "2", "--block-size", "8"]


@pytest.fixture
def text_file(tmp_path):
    """A stream whose last 10% holds the only 'Z's: a held-out character that must never train."""
    rng = random.Random(0)
    body = "".join(rng.choice("abc de\nf") for _ in range(1800))
    text = body + "".join(rng.choice("abZ\n") for _ in range(200))
    path = tmp_path / "text.txt"
    path.write_text(text)
    assert "Z" not in text[: int(len(text) * 0.9)] and "Z" in text[int(len(text) * 0.9) :]
    return path


# data ------------------------------------------------------------------------------------------


def test_bundled_shakespeare_is_split_as_nanogpt_splits_it():
    text = read_stream("shakespeare")
    assert len(text) == 1_115_394 and len(set(text)) == 65
    tok = Tokenizer.from_text(text)
    assert tok.vocab_size == 65 and tok.bos is None and "\n" in tok.chars
    split = split_stream(text, 0.1, 64)
    assert split.train == [text[:1_003_854]]  # int(0.9 * len), nanoGPT's cut
    assert len(split.val) == (len(text) - 1_003_854 - 1) // 64 == 1742
    assert all(len(w) == 65 for w in split.val)
    assert split.val[0] == text[1_003_854 : 1_003_854 + 65]
    assert split.val[1][0] == split.val[0][-1]  # one shared character: each predicted once


def test_stream_keeps_every_character_and_reads_crlf_as_newlines(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"  ab \r\n\r\ncd\r")
    assert read_stream(p) == "  ab \n\ncd\n"


def test_a_file_wins_over_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert read_documents("names")[:2] == ["emma", "olivia"]  # no such file: the bundled names
    (tmp_path / "names").write_text("x\ny\n")
    assert read_documents("names") == ["x", "y"]


def test_held_out_windows_drop_only_an_incomplete_tail():
    assert held_out_windows(list(range(10)), 3) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert held_out_windows(list(range(9)), 3) == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert held_out_windows(list(range(3)), 3) == []


@given(
    st.integers(0, 2**31),
    st.integers(0, 10**6),
    st.integers(1, 32),
    st.integers(1, 64),
    st.integers(1, 500),
)
def test_windows_lie_inside_the_training_part(seed, step, batch, block, extra):
    n_train = block + extra
    offsets = stream_offsets(seed, step, batch, n_train, block)
    assert len(offsets) == batch
    assert all(0 <= o and o + block + 1 <= n_train for o in offsets)
    assert offsets == stream_offsets(seed, step, batch, n_train, block)  # (seed, step) alone


def test_windows_differ_between_steps_and_seeds():
    a = stream_offsets(1, 5, 16, 10_000, 8)
    assert a != stream_offsets(1, 6, 16, 10_000, 8)
    assert a != stream_offsets(2, 5, 16, 10_000, 8)


def test_no_held_out_character_ever_trains(text_file):
    tc = TrainConfig(data="stream", batch_size=8, steps=500)
    config, prep = prepare(str(text_file), SMALL, tc)
    step_docs, held_out = token_data(prep, tc, config.block_size)
    z = prep.tokenizer.encode("Z")[0]
    train_tokens = prep.tokenizer.encode(prep.split.train[0])
    for step in range(tc.steps):
        for w in step_docs(step):
            assert len(w) == config.block_size + 1 and z not in w
    assert any(z in w for w in held_out)
    # every training window is a slice of the training text
    starts = stream_offsets(tc.seed, 3, 8, len(train_tokens), config.block_size)
    assert step_docs(3) == [train_tokens[o : o + 9] for o in starts]


def test_stream_prepare_draws_the_weights_first_and_has_no_bos(text_file):
    tc = TrainConfig(data="stream", seed=3)
    config, prep = prepare(str(text_file), SMALL, tc)
    assert config.vocab_size == len(set(text_file.read_text())) == len(prep.tokenizer.chars)
    assert prep.weights == init_weights(config, random.Random(3))


def test_stream_too_short_for_a_window_is_a_user_error(tmp_path, capsys):
    p = tmp_path / "t.txt"
    p.write_text("abcab")
    assert main(["train", "--data", "stream", "--input", str(p), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "block_size + 1" in err


# per-token loss --------------------------------------------------------------------------------


def _direct_token_loss(gpt, docs):
    """Sum of -log softmax(logits)[target] from `logits`, one prefix at a time."""
    total, n = 0.0, 0
    for d in docs:
        for t in range(min(gpt.config.block_size, len(d) - 1)):
            logits = gpt.logits(d[: t + 1])
            m = max(logits)
            log_z = m + math.log(sum(math.exp(v - m) for v in logits))
            total += log_z - logits[d[t + 1]]
            n += 1
    return total, n


def _docs(rng, vocab, count):
    bos = vocab - 1
    return [
        [bos, *(rng.randrange(bos) for _ in range(rng.randint(1, 10))), bos] for _ in range(count)
    ]


def test_scalar_token_loss_is_the_direct_computation():
    config = ModelConfig(vocab_size=7, n_embd=8, n_head=2, block_size=6)
    gpt = ScalarGPT(config, init_weights(config, random.Random(1)), TrainConfig())
    docs = _docs(random.Random(2), 7, 6)  # some longer than block_size: cut as in training
    total, n = gpt.eval_token_loss(docs)
    want_total, want_n = _direct_token_loss(gpt, docs)
    assert n == want_n == sum(min(6, len(d) - 1) for d in docs)
    assert total == pytest.approx(want_total, rel=1e-12)
    # one document: the per-token mean is the per-document loss
    assert gpt.eval_token_loss(docs[:1])[0] / gpt.eval_token_loss(docs[:1])[1] == pytest.approx(
        gpt.eval_loss(docs[:1]), rel=1e-14
    )


@pytest.mark.parametrize("positions", [None, 12])  # 12: two documents a pass, several passes
def test_tensor_token_loss_matches_scalar_in_float64(monkeypatch, positions):
    pytest.importorskip("torch")
    from microgpt.modes import TensorOptions
    from microgpt.tensor import TensorGPT, model

    if positions:
        monkeypatch.setattr(model, "EVAL_POSITIONS", positions)
    config = ModelConfig(vocab_size=7, n_layer=2, n_embd=8, n_head=2, block_size=6)
    weights = init_weights(config, random.Random(4))
    scalar = ScalarGPT(config, weights, TrainConfig())
    tensor = TensorGPT(config, weights, TrainConfig(), TensorOptions(device="cpu", dtype="float64"))
    docs = _docs(random.Random(5), 7, 9)  # mixed lengths: packed rows with padding
    (s_total, s_n), (t_total, t_n) = scalar.eval_token_loss(docs), tensor.eval_token_loss(docs)
    assert s_n == t_n
    assert abs(t_total - s_total) <= 1e-10 * abs(s_total)


# training and evaluation through the CLI --------------------------------------------------------


def test_eval_every_writes_records_and_lines(tmp_path, capsys, text_file):
    m = tmp_path / "m.jsonl"
    argv = ["train", "--data", "stream", "--input", str(text_file), *SMALL_FLAGS]
    argv += ["--steps", "6", "--batch-size", "2", "--eval-every", "3", "--metrics", str(m)]
    argv += ["--val-docs", "1000"]  # all windows
    assert main([*argv, "--log-every", "100", "--length", "20"]) == 0
    out = capsys.readouterr().out
    records = [json.loads(line) for line in open(m)]
    evals = [r for r in records if "val_loss" in r and "summary" not in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    for r in evals:
        assert r["val_bpc"] == r["val_loss"] / math.log(2)
    summary = records[-1]
    assert summary["val_loss_per_token"] == evals[-1]["val_loss"]
    n_windows = (len(text_file.read_text()) - int(len(text_file.read_text()) * 0.9) - 1) // 8
    assert summary["val_tokens"] == 8 * n_windows
    # equal windows: the per-document mean over all of them is the per-token mean
    assert summary["val_loss"] == pytest.approx(summary["val_loss_per_token"], rel=1e-12)
    assert "step 3/6 | val loss " in out and "bits/char" in out
    assert "val per token" in out and f"{n_windows} held-out windows" in out
    sample_text = out.split("characters after the prompt):\n", 1)[1]
    assert sample_text.startswith("\n") and len(sample_text) == 1 + 20 + 1  # prompt, 20, print


def test_evaluation_leaves_the_reference_numbers_alone(tmp_path, capsys):
    """Training losses, val loss and samples are the same with and without --eval-every, and
    --top-k over the whole vocabulary draws the same samples (no RNG draw moves)."""
    runs = []
    for extra in ([], ["--eval-every", "2", "--eval-docs", "7", "--top-k", "27"]):
        m = tmp_path / f"m{len(runs)}.jsonl"
        argv = ["train", "--steps", "4", "--n-embd", "8", "--n-head", "2", "--val-docs", "5"]
        argv += ["--num-samples", "3", "--metrics", str(m), "--eval-docs", "7", *extra]
        assert main(argv) == 0
        losses, summary = read_metrics(m)
        runs.append((losses, summary["val_loss"], summary["samples"]))
    assert runs[0] == runs[1]


def test_stream_resume_is_exact_and_sample_repeats(tmp_path, capsys, text_file):
    full, resumed = tmp_path / "full.jsonl", tmp_path / "resumed.jsonl"
    ckpt = tmp_path / "c.safetensors"
    common = ["--data", "stream", "--input", str(text_file), *SMALL_FLAGS, "--steps", "8"]
    common += ["--batch-size", "3", "--length", "12", "--num-samples", "2"]
    assert main(["train", *common, "--metrics", str(full)]) == 0
    samples_full = read_metrics(full)[1]["samples"]

    def stop_at_5(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    tc = TrainConfig(data="stream", steps=8, batch_size=3)
    config, prep = prepare(str(text_file), SMALL, tc)
    with pytest.raises(KeyboardInterrupt):
        train("scalar", config, tc, prep, out=ckpt, save_every=4, on_step=stop_at_5)
    saved = checkpoint.load(ckpt)
    assert saved.step == 4 and saved.model.vocab_size == len(saved.chars)  # no BOS
    resume = ["train", "--resume", str(ckpt), "--length", "12", "--num-samples", "2"]
    assert main([*resume, "--metrics", str(resumed)]) == 0
    assert read_metrics(resumed)[0] == read_metrics(full)[0]
    assert read_metrics(resumed)[1]["samples"] == samples_full
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(ckpt), "--length", "12", "--num-samples", "2"]) == 0
    assert capsys.readouterr().out == "\n---\n".join(samples_full) + "\n"


def test_stream_sampling_slides_past_block_size(tmp_path, capsys, text_file):
    ckpt = tmp_path / "c.safetensors"
    argv = ["train", "--data", "stream", "--input", str(text_file), *SMALL_FLAGS]
    assert main([*argv, "--steps", "2", "--num-samples", "0", "--out", str(ckpt)]) == 0
    capsys.readouterr()
    argv = ["sample", "--checkpoint", str(ckpt), "--prompt", "abc de fab", "--length", "30"]
    assert main([*argv, "--seed", "1", "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("abc de fab") and len(out) == 10 + 30 + 1
    assert main(["sample", "--checkpoint", str(ckpt), "--prompt", "Q!"]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err


def test_length_is_for_streams_only(capsys):
    assert main(["train", "--steps", "1", "--length", "5"]) == 2
    assert "--length applies to stream mode only" in capsys.readouterr().err


# top-k -----------------------------------------------------------------------------------------


def test_keep_top_k_keeps_exactly_k():
    probs = [0.1, 0.4, 0.05, 0.3, 0.15]
    assert keep_top_k(probs, 2) == [0.0, 0.4, 0.0, 0.3, 0.0]
    assert keep_top_k(probs, 5) is probs and keep_top_k(probs, None) is probs
    assert keep_top_k([0.5, 0.5, 0.0], 1) == [0.5, 0.0, 0.0]  # ties: the lower id


def test_top_k_draws_only_the_k_most_likely():
    class Fixed:  # a model whose next-token logits never change
        config = ModelConfig(vocab_size=6, block_size=50)

        def logits(self, tokens):
            return [0.0, 1.0, 0.5, 2.0, -1.0, -3.0]  # BOS = 5 is the least likely

    tok = Tokenizer("abcde")
    rng = random.Random(0)
    drawn = set()
    for _ in range(20):
        drawn |= set(sample(Fixed(), tok, rng, 1.0, top_k=2))
    assert drawn == {"b", "d"}  # ids 1 and 3; BOS never drawn, so samples run to block_size
    rng = random.Random(0)
    assert sample(Fixed(), tok, rng, 1.0, top_k=1) == "d" * 50  # greedy, BOS + 50 = 51 > 50


# plot ------------------------------------------------------------------------------------------


def test_plot_writes_a_png_of_several_runs(tmp_path, capsys, text_file):
    pytest.importorskip("matplotlib")
    runs = []
    for seed in ("1", "2"):
        m = tmp_path / f"run{seed}.jsonl"
        argv = [
            "train",
            "--data",
            "stream",
            "--input",
            str(text_file),
            *SMALL_FLAGS,
            "--seed",
            seed,
        ]
        argv += ["--steps", "4", "--eval-every", "2", "--num-samples", "0", "--metrics", str(m)]
        assert main(argv) == 0
        runs.append(str(m))
    out = tmp_path / "curves.png"
    assert main(["plot", *runs, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "does not exist"), ("", "no training steps"), ("{not json\n", "line 1")],
)
def test_plot_errors_are_one_line(tmp_path, capsys, content, match):
    m = tmp_path / "m.jsonl"
    if content is not None:
        m.write_text(content)
    assert main(["plot", str(m), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err and "Traceback" not in err
    assert not (tmp_path / "c.png").exists()


def test_an_evaluation_line_keeps_the_live_line_below_it():
    import io

    from microgpt.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    p = Progress(10, stream=tty)
    p.update(5, 2.0)
    p.note("step  5/10 | val loss 1.5")
    p.close()
    lines = tty.getvalue().split("\n")
    assert lines[0].endswith("step  5/10 | val loss 1.5\x1b[K")  # the live line overwritten
    assert lines[1].startswith("step  5/10 | loss 2.000000 |")  # and drawn again below
    assert lines[2] == ""
