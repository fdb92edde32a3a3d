"""Packing is exact: a batch's loss and gradient are the means of its documents' own, and no
document sees another (or the padding) through attention, in every design (with RoPE too:
positions restart at 0 in each document)."""

import random

import pytest
from designs import DESIGNS
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from microgpt.config import ModelConfig, TrainConfig  # noqa: E402
from microgpt.init import init_weights  # noqa: E402
from microgpt.modes import TensorOptions  # noqa: E402
from microgpt.tensor import TensorGPT  # noqa: E402
from microgpt.tensor.packing import plan_rows  # noqa: E402

VOCAB, BLOCK = 8, 8


def model(design: dict | None = None, n_layer=2, seed=0) -> TensorGPT:
    config = ModelConfig(
        vocab_size=VOCAB, n_layer=n_layer, n_embd=8, n_head=2, block_size=BLOCK, **(design or {})
    )
    weights = init_weights(config, random.Random(seed))
    return TensorGPT(config, weights, TrainConfig(), TensorOptions(device="cpu", dtype="float64"))


def docs_of(lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    bos = VOCAB - 1
    return [[bos, *(rng.randrange(bos) for _ in range(n)), bos] for n in lengths]


def loss_and_grad(t: TensorGPT, docs) -> tuple[float, torch.Tensor]:
    loss = t.compute_grad(docs).item()
    return loss, t.grad.clone()


# the plan -----------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 16), min_size=1, max_size=60), st.integers(16, 24))
def test_plan_places_every_document_once_within_width(lengths, width):
    rows = plan_rows(lengths, width)
    placed = sorted(d for row in rows for d in row)
    assert placed == list(range(len(lengths)))
    assert all(sum(lengths[d] for d in row) <= width for row in rows)
    assert all(row for row in rows)
    assert rows == plan_rows(lengths, width)  # deterministic


def test_plan_packs_names_tightly():
    rng = random.Random(0)
    lengths = [min(16, rng.choice([4, 5, 6, 6, 7, 7, 8, 8, 9, 10, 12, 15])) for _ in range(256)]
    rows = plan_rows(lengths, 16)
    assert sum(lengths) / (16 * len(rows)) > 0.9


def test_batch_is_packed_with_little_padding():
    t = model()
    docs = docs_of([1, 2, 3, 4, 5, 6, 7, 7, 3, 2, 1, 9])  # 9 characters: cut to block_size
    batch = t.packer.pack(docs)
    real = sum(min(BLOCK, len(d) - 1) for d in docs)
    assert batch.rows * batch.width < 1.25 * real  # padding every document to 8 would be 96
    assert float(batch.weights.sum()) == pytest.approx(1.0)
    assert int((batch.weights > 0).sum()) == real


# exactness ----------------------------------------------------------------------------------------


by_design = pytest.mark.parametrize("design", DESIGNS.values(), ids=DESIGNS.keys())


@by_design
def test_batch_loss_and_gradient_are_means_over_documents(design):
    t = model(design)
    docs = docs_of([3, 1, 7, 5, 2, 9, 4, 4])
    batch_loss, batch_grad = loss_and_grad(t, docs)
    singles = [loss_and_grad(t, [d]) for d in docs]
    mean_loss = sum(loss for loss, _ in singles) / len(docs)
    mean_grad = sum(grad for _, grad in singles) / len(docs)
    assert batch_loss == pytest.approx(mean_loss, rel=1e-12)
    torch.testing.assert_close(batch_grad, mean_grad, rtol=1e-10, atol=1e-14)
    assert t.eval_loss(docs) == pytest.approx(mean_loss, rel=1e-12)


def test_document_gradient_does_not_depend_on_its_neighbours():
    """grad([a, b]) - grad([a, c]) = (grad(b) - grad(c)) / 2: a's share is the same."""
    t = model()
    a, b, c = docs_of([3, 4, 2], seed=1)
    _, ab = loss_and_grad(t, [a, b])
    _, ac = loss_and_grad(t, [a, c])
    _, gb = loss_and_grad(t, [b])
    _, gc = loss_and_grad(t, [c])
    torch.testing.assert_close(ab - ac, (gb - gc) / 2, rtol=1e-9, atol=1e-14)


@by_design
def test_packed_positions_equal_each_document_run_alone(design):
    """The hidden state of every real position in a packed batch equals the document's own."""
    t = model(design)
    docs = docs_of([2, 5, 1, 3, 6, 2, 2], seed=2)
    batch = t.packer.pack(docs)
    with torch.no_grad():
        packed = t.net.forward(batch, t.views).view(batch.rows, batch.width, -1)
    lengths = [min(BLOCK, len(d) - 1) for d in docs]
    for r, row in enumerate(plan_rows(lengths, BLOCK)):
        offset = 0
        for d in row:
            alone = t.net.forward(t.packer.pack([docs[d]]), t.views)
            n = lengths[d]
            torch.testing.assert_close(
                packed[r, offset : offset + n], alone, rtol=1e-12, atol=1e-14
            )
            offset += n


@by_design
def test_padding_contributes_nothing(design):
    """Changing what a padding slot holds changes no loss and no gradient."""
    t = model(design)
    docs = docs_of([3, 5, 1], seed=3)  # n = 4, 6, 2: rows 6 + 2 and 4 (+ 4 padding)
    batch = t.packer.pack(docs)
    assert batch.rows * batch.width > sum(len(d) - 1 for d in docs)
    pad = batch.weights[:, 0] == 0
    loss0 = t._loss_and_grad(batch).item()
    grad0 = t.grad.clone()
    batch.tokens[pad] = 3  # a different token, at a different position, padding still
    batch.positions[pad] = 5
    loss1 = t._loss_and_grad(batch).item()
    assert loss1 == loss0
    torch.testing.assert_close(t.grad, grad0, rtol=0, atol=0)
