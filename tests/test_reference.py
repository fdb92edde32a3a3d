"""Scalar mode against the reference: the known figures of REFERENCE.md and, step by step,
the naive one-node-per-op model (tests/naive_gpt.py) written from its facts, in every design."""

import pytest
from designs import DESIGNS
from naive_gpt import NaiveRun

from microgpt.cli import main
from microgpt.config import TrainConfig
from microgpt.sample import sample
from microgpt.scalar.model import ScalarGPT
from microgpt.schedule import lr_at
from microgpt.train import prepare

KNOWN = {1: "3.365967", 2: "3.424273", 3: "3.177802", 1000: "2.649694"}
KNOWN_SAMPLES = ["kamon", "ann", "karai"]


def run_both(docs, steps, **model):
    """Per-step losses of the naive baseline and of scalar mode, same seed and data."""
    tc = TrainConfig(steps=steps, seed=7, val_fraction=0.0)
    config, prep = prepare(None, model, tc)
    naive = NaiveRun(docs, seed=7, **model)
    ours = ScalarGPT(config, prep.weights, tc)
    assert [[p.data for p in naive.params]] == [[p.data for p in ours.params]]
    enc = prep.tokenizer.encode_document
    naive_losses = [naive.train_step(s, steps) for s in range(steps)]
    our_losses = [ours.train_step([enc(prep.split.train[s])], lr_at(s, tc)) for s in range(steps)]
    return naive, ours, naive_losses, our_losses


@pytest.mark.parametrize("design", DESIGNS.values(), ids=DESIGNS.keys())
def test_scalar_mode_follows_the_naive_graph(design):
    from microgpt.data import read_documents

    docs = read_documents()
    naive, ours, naive_losses, our_losses = run_both(
        docs, 4, n_layer=2, n_embd=8, n_head=2, **design
    )
    assert our_losses[0] == naive_losses[0]  # the same forward floats, in every design
    assert our_losses == pytest.approx(naive_losses, rel=1e-12)
    assert [p.data for p in ours.params] == pytest.approx([p.data for p in naive.params], rel=1e-9)


def test_first_steps_of_the_reference_run():
    tc = TrainConfig()
    config, prep = prepare(None, {}, tc)
    gpt = ScalarGPT(config, prep.weights, tc)
    enc = prep.tokenizer.encode_document
    for s in range(3):
        loss = gpt.train_step([enc(prep.split.train[s])], lr_at(s, tc))
        assert f"{loss:.6f}" == KNOWN[s + 1]


@pytest.fixture(scope="module")
def naive_reference_run():
    """The naive baseline's 1000 losses and 20 samples (about 90 s)."""
    from microgpt.data import read_documents

    naive = NaiveRun(read_documents(), seed=42)
    losses = [naive.train_step(s, 1000) for s in range(1000)]
    return losses, [naive.sample() for _ in range(20)]


MODE_FLAGS = {
    "scalar": ["--mode", "scalar"],
    "tensor-float64": ["--mode", "tensor", "--dtype", "float64", "--batch-size", "1"],
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODE_FLAGS)
def test_full_reference_run_through_the_cli(capsys, naive_reference_run, mode):
    """All 1000 steps printed as the naive baseline's losses, and the reference's samples."""
    if mode.startswith("tensor"):
        pytest.importorskip("torch")
    naive_losses, naive_samples = naive_reference_run
    assert main(["train", *MODE_FLAGS[mode], "--seed", "42", "--log-every", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    printed = [line.split("loss ")[1] for line in out if line.startswith("step ")]
    assert printed == [f"{x:.6f}" for x in naive_losses]
    for step, figure in KNOWN.items():
        assert printed[step - 1] == figure
    samples = [line.split(": ")[1] for line in out if line.startswith("sample ")]
    assert samples[:3] == KNOWN_SAMPLES
    assert samples == naive_samples


def test_sampling_follows_the_naive_graph():
    from microgpt.data import read_documents

    naive, ours, _, _ = run_both(read_documents(), 3, n_embd=8, n_head=2)
    config, prep = prepare(None, {"n_embd": 8, "n_head": 2}, TrainConfig(seed=7, val_fraction=0))
    prep.rng.setstate(naive.rng.getstate())
    expected = [naive.sample() for _ in range(10)]
    assert [sample(ours, prep.tokenizer, prep.rng, 0.5) for _ in range(10)] == expected
