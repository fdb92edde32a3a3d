"""Tensor mode against scalar mode (the trusted reference), in float64: same initial weights,
then logits, loss, every gradient and every Adam update over several steps, and every loss over
50 steps, in every design of `designs.DESIGNS` (derived from the config's switches) at one and
two layers, one document and a packed batch. And a wider model against the naive model of
tests/naive_gpt.py, an independent implementation without packing.

"Within 1e-10 relative" is checked per matrix: max |tensor - scalar| <= 1e-10 * max |scalar|.
"""

import random
from dataclasses import replace

import pytest
from designs import DESIGNS
from naive_gpt import NaiveGPT

torch = pytest.importorskip("torch")

from microgpt.config import ModelConfig, TrainConfig  # noqa: E402
from microgpt.init import init_weights  # noqa: E402
from microgpt.modes import TensorOptions  # noqa: E402
from microgpt.scalar.engine import Tape  # noqa: E402
from microgpt.scalar.model import ScalarGPT  # noqa: E402
from microgpt.tensor import TensorGPT  # noqa: E402

REL = 1e-10
VOCAB, BLOCK = 6, 6  # 5 characters + BOS; documents longer than 5 characters get cut


def tiny(n_layer: int, design: dict) -> ModelConfig:
    return ModelConfig(
        vocab_size=VOCAB, n_layer=n_layer, n_embd=8, n_head=2, block_size=BLOCK, **design
    )


def random_docs(rng: random.Random, count: int) -> list[list[int]]:
    bos = VOCAB - 1
    return [
        [bos, *(rng.randrange(bos) for _ in range(rng.randint(1, 8))), bos] for _ in range(count)
    ]


def relative_error(got, want) -> float:
    got, want = torch.tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64)
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


def assert_matrices_close(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys()
    for name in want:
        err = relative_error(got[name], want[name])
        assert err <= REL, f"{what} {name}: relative error {err:.2e}"


def scalar_loss_and_grads(s: ScalarGPT, docs) -> tuple[float, dict]:
    with Tape() as tape:
        loss = s.batch_loss(docs)
    tape.backward(loss)
    return loss.data, {name: [[p.grad for p in row] for row in m] for name, m in s.weights.items()}


# One thread: at these sizes more only adds synchronisation, which crawls on a loaded machine.
FLOAT64 = TensorOptions(device="cpu", dtype="float64", threads=1)


def make_pair(config: ModelConfig, seed: int = 0, tc: TrainConfig | None = None):
    weights = init_weights(config, random.Random(seed))
    tc = tc or TrainConfig()
    return ScalarGPT(config, weights, tc), TensorGPT(config, weights, tc, FLOAT64)


by_design = pytest.mark.parametrize("design", DESIGNS.values(), ids=DESIGNS.keys())


@pytest.mark.parametrize("n_layer", [1, 2])
@by_design
def test_training_steps_match_scalar_mode(n_layer, design):
    config = tiny(n_layer, design)
    s, t = make_pair(config)
    rng = random.Random(1)
    batches = [random_docs(rng, 1), random_docs(rng, 1), random_docs(rng, 3), random_docs(rng, 1)]
    for step, docs in enumerate(batches):
        lr = 0.01 * (1 - step / 10)
        want_loss, want_grads = scalar_loss_and_grads(s, docs)
        got_loss = t.compute_grad(docs).item()
        assert abs(got_loss - want_loss) <= REL * abs(want_loss), (step, got_loss, want_loss)
        assert_matrices_close(t.layout.to_lists(t.grad), want_grads, f"step {step} gradient")
        adam_step_both(s, t, lr, step)
    assert t.step == s.step == len(batches)


@pytest.mark.parametrize("n_layer", [1, 2])
@by_design
def test_logits_and_eval_loss_match_scalar_mode(n_layer, design):
    s, t = make_pair(tiny(n_layer, design), seed=3)
    rng = random.Random(2)
    for length in range(1, BLOCK + 1):
        context = [VOCAB - 1, *(rng.randrange(VOCAB - 1) for _ in range(length - 1))]
        got, want = t.logits(context), s.logits(context)
        assert isinstance(got, list) and all(isinstance(x, float) for x in got)
        assert relative_error(got, want) <= REL
    docs = random_docs(rng, 7)
    want = s.eval_loss(docs)
    assert abs(t.eval_loss(docs) - want) <= REL * want


@by_design
def test_train_step_matches_scalar_train_step(design):
    """The public interface end to end: losses and exported state after k steps."""
    s, t = make_pair(tiny(2, design), seed=5)
    rng = random.Random(4)
    for step in range(4):
        docs = random_docs(rng, 1 + step % 2)
        lr = 0.01 * (1 - step / 4)
        want = s.train_step(docs, lr)
        got = t.train_step(docs, lr)
        assert isinstance(got, float)
        assert abs(got - want) <= REL * want
    got_state, want_state = t.export_state(), s.export_state()
    for key in ("weights", "adam_m", "adam_v"):
        assert_matrices_close(got_state[key], want_state[key], key)


@by_design
def test_fifty_steps_on_names_match_scalar_mode(design):
    """Batch 1 on the bundled names, 50 steps of the linear schedule: every step's loss within
    1e-10 relative, then the weights and Adam moments."""
    from microgpt.schedule import lr_at
    from microgpt.train import prepare

    tc = TrainConfig(steps=50, seed=11, val_fraction=0.0)
    model = dict(n_layer=2, n_embd=8, n_head=2, block_size=8, **design)
    config, prep = prepare(None, model, tc)
    s = ScalarGPT(config, prep.weights, tc)
    t = TensorGPT(config, prep.weights, tc, FLOAT64)
    worst = 0.0
    for step in range(tc.steps):
        docs = [prep.tokenizer.encode_document(prep.split.train[step])]
        lr = lr_at(step, tc)
        want, got = s.train_step(docs, lr), t.train_step(docs, lr)
        err = abs(got - want) / abs(want)
        assert err <= REL, (step, got, want)
        worst = max(worst, err)
    print(f"max relative loss difference over {tc.steps} steps: {worst:.2e}")
    got_state, want_state = t.export_state(), s.export_state()
    for key in ("weights", "adam_m", "adam_v"):
        assert_matrices_close(got_state[key], want_state[key], key)


WIDER = ["reference", "all"]  # between them, every switch away from the reference


@pytest.mark.parametrize("loss_average", ["document", "token"])
@pytest.mark.parametrize("design", [DESIGNS[d] for d in WIDER], ids=WIDER)
def test_z_loss_steps_match_scalar_mode(design, loss_average):
    """--z-loss: the training loss (z term included), every gradient and every Adam update of
    four steps, one document and packed batches; the held-out loss leaves the z term out."""
    tc = TrainConfig(z_loss=0.05, loss_average=loss_average)
    config = tiny(2, design)
    s, t = make_pair(config, seed=6, tc=tc)
    rng = random.Random(9)
    for step in range(4):
        docs = random_docs(rng, 1 + 2 * (step % 2))
        lr = 0.01 * (1 - step / 10)
        want_loss, want_grads = scalar_loss_and_grads(s, docs)
        got_loss = t.compute_grad(docs).item()
        assert abs(got_loss - want_loss) <= REL * abs(want_loss), (step, got_loss, want_loss)
        assert_matrices_close(t.layout.to_lists(t.grad), want_grads, f"step {step} gradient")
        # the z term is in the training loss, and it is not small (log Z is about log V)
        weights = s.export_state()["weights"]
        plain = ScalarGPT(config, weights, replace(tc, z_loss=0.0))
        assert want_loss - plain.batch_loss(docs).data > 0.01
        adam_step_both(s, t, lr, step)
    docs = random_docs(rng, 5)
    plain = ScalarGPT(config, s.export_state()["weights"], replace(tc, z_loss=0.0))
    assert s.eval_loss(docs) == plain.eval_loss(docs)
    assert s.eval_token_loss(docs) == plain.eval_token_loss(docs)
    assert abs(t.eval_loss(docs) - plain.eval_loss(docs)) <= REL * plain.eval_loss(docs)


@pytest.mark.parametrize(
    "n_embd,n_docs", [(16, 5), pytest.param(32, 9, marks=pytest.mark.slow)], ids=["16", "32"]
)
@pytest.mark.parametrize("design", [DESIGNS[d] for d in WIDER], ids=WIDER)
def test_wider_model_matches_the_naive_model(design, n_embd, n_docs):
    """Beyond the tiny configs: 3 layers, 4 heads of 4 (or 8) channels, a packed batch of 5 (or
    9) documents, against the naive model (one graph node per elementary op, no packing) in
    float64. The naive graph is slow: seconds at 16 channels, about 20 s at 32 (marked slow)."""
    sizes = dict(n_layer=3, n_embd=n_embd, n_head=4, block_size=7)
    config = ModelConfig(vocab_size=VOCAB, **sizes, **design)
    weights = init_weights(config, random.Random(7))
    t = TensorGPT(config, weights, TrainConfig(), FLOAT64)
    naive = NaiveGPT(VOCAB, random.Random(7), **sizes, **design)
    assert {name: [[p.data for p in row] for row in m] for name, m in naive.sd.items()} == weights
    docs = random_docs(random.Random(8), n_docs)
    assert len(t.packer.pack(docs).mask) < n_docs  # some rows hold several documents
    want = naive.loss(docs)
    want.backward()
    assert t.compute_grad(docs).item() == pytest.approx(want.data, rel=1e-12)
    assert_matrices_close(t.layout.to_lists(t.grad), naive.grads(), "gradient")


@pytest.mark.parametrize(
    "design", [{}, {"qk_norm": True}, {"position": "rope", "tie_lm_head": True}], ids=str
)
def test_diagnostics_match_the_naive_model(design, monkeypatch):
    """`TensorGPT.diagnostics` (packed, padded) against the naive model's attention logits and
    output logits, position by position: the largest attention logit over layers, heads, real
    queries and the keys each sees; the output logits' mean and max."""
    import naive_gpt

    sizes = {"n_layer": 2, "n_embd": 8, "n_head": 2, "block_size": BLOCK}
    config = ModelConfig(vocab_size=VOCAB, **sizes, **design)
    weights = init_weights(config, random.Random(3))
    for rows in weights.values():  # larger weights than at initialisation: logits far from 0
        for row in rows:
            row[:] = [3 * x for x in row]
    t = TensorGPT(config, weights, TrainConfig(), FLOAT64)
    naive = NaiveGPT(VOCAB, random.Random(3), **sizes, **design)
    for rows in naive.sd.values():
        for row in rows:
            for p in row:
                p.data *= 3
    attention = []  # every attention logit the naive model computes

    def softmax(logits):
        attention.extend(x.data for x in logits)
        return original(logits)

    original = naive_gpt.softmax
    monkeypatch.setattr(naive_gpt, "softmax", softmax)
    docs = random_docs(random.Random(4), 5)
    outputs = []
    for doc in docs:
        keys, values = [[] for _ in range(2)], [[] for _ in range(2)]
        for pos in range(min(BLOCK, len(doc) - 1)):
            outputs += [x.data for x in naive.gpt(doc[pos], pos, keys, values)]
    largest, logit_mean, logit_max = t.diagnostics(docs)
    assert largest == pytest.approx(max(attention), rel=1e-12)
    assert logit_mean == pytest.approx(sum(outputs) / len(outputs), rel=1e-12)
    assert logit_max == pytest.approx(max(outputs), rel=1e-12)
    if design.get("qk_norm"):  # q and k RMS-normed per head: |q·k| / sqrt(D) <= sqrt(D)
        assert largest <= config.head_dim**0.5


def adam_step_both(s, t, lr: float, step: int) -> None:
    """One Adam update of the scalar model `s` and the tensor model `t` from their gradients;
    then their weights and moments must agree."""
    s._adam(lr)
    t.update([lr])
    got_state, want_state = t.export_state(), s.export_state()
    for key in ("weights", "adam_m", "adam_v"):
        assert_matrices_close(got_state[key], want_state[key], f"step {step} {key}")
