"""Tensor mode against scalar mode (the trusted reference), in float64: same initial weights,
then logits, loss, every gradient and every Adam update over several steps, for the four
designs (tie_lm_head x input_rmsnorm) at one and two layers, one document and a packed batch.

"Within 1e-10 relative" is checked per matrix: max |tensor - scalar| <= 1e-10 * max |scalar|.
"""

import random

import pytest

torch = pytest.importorskip("torch")

from microgpt.config import ModelConfig, TrainConfig  # noqa: E402
from microgpt.init import init_weights  # noqa: E402
from microgpt.modes import TensorOptions  # noqa: E402
from microgpt.scalar.engine import Tape  # noqa: E402
from microgpt.scalar.model import ScalarGPT  # noqa: E402
from microgpt.tensor import TensorGPT  # noqa: E402

REL = 1e-10
VOCAB, BLOCK = 6, 6  # 5 characters + BOS; documents longer than 5 characters get cut


def tiny(n_layer: int, tie: bool, norm: bool) -> ModelConfig:
    return ModelConfig(
        vocab_size=VOCAB,
        n_layer=n_layer,
        n_embd=8,
        n_head=2,
        block_size=BLOCK,
        tie_lm_head=tie,
        input_rmsnorm=norm,
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


def make_pair(config: ModelConfig, seed: int = 0):
    weights = init_weights(config, random.Random(seed))
    tc = TrainConfig()
    return (
        ScalarGPT(config, weights, tc),
        TensorGPT(config, weights, tc, TensorOptions(device="cpu", dtype="float64")),
    )


DESIGNS = [(n, tie, norm) for n in (1, 2) for tie in (False, True) for norm in (True, False)]


@pytest.mark.parametrize("n_layer,tie,norm", DESIGNS)
def test_training_steps_match_scalar_mode(n_layer, tie, norm):
    config = tiny(n_layer, tie, norm)
    s, t = make_pair(config)
    rng = random.Random(1)
    batches = [random_docs(rng, 1), random_docs(rng, 1), random_docs(rng, 3), random_docs(rng, 1)]
    for step, docs in enumerate(batches):
        lr = 0.01 * (1 - step / 10)
        want_loss, want_grads = scalar_loss_and_grads(s, docs)
        got_loss = t.compute_grad(docs).item()
        assert abs(got_loss - want_loss) <= REL * abs(want_loss), (step, got_loss, want_loss)
        assert_matrices_close(t.layout.to_lists(t.grad), want_grads, f"step {step} gradient")
        s._adam(lr)
        t.step += 1
        t.adam.update(lr, t.step)
        got_state, want_state = t.export_state(), s.export_state()
        for key in ("weights", "adam_m", "adam_v"):
            assert_matrices_close(got_state[key], want_state[key], f"step {step} {key}")
    assert t.step == s.step == len(batches)


@pytest.mark.parametrize("n_layer,tie,norm", DESIGNS)
def test_logits_and_eval_loss_match_scalar_mode(n_layer, tie, norm):
    s, t = make_pair(tiny(n_layer, tie, norm), seed=3)
    rng = random.Random(2)
    for length in range(1, BLOCK + 1):
        context = [VOCAB - 1, *(rng.randrange(VOCAB - 1) for _ in range(length - 1))]
        got, want = t.logits(context), s.logits(context)
        assert isinstance(got, list) and all(isinstance(x, float) for x in got)
        assert relative_error(got, want) <= REL
    docs = random_docs(rng, 7)
    want = s.eval_loss(docs)
    assert abs(t.eval_loss(docs) - want) <= REL * want


def test_train_step_matches_scalar_train_step():
    """The public interface end to end: losses and exported state after k steps."""
    s, t = make_pair(tiny(2, False, True), seed=5)
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


def autograd_reference_loss(config: ModelConfig, w: dict, docs) -> torch.Tensor:
    """The model written the plain way, one document at a time, for autograd to differentiate."""
    H, D = config.n_head, config.head_dim

    def rmsnorm(x):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)

    losses = []
    for doc in docs:
        n = min(config.block_size, len(doc) - 1)
        tokens, targets = torch.tensor(doc[:n]), torch.tensor(doc[1 : n + 1])
        x = w["wte"][tokens] + w["wpe"][:n]
        if config.input_rmsnorm:
            x = rmsnorm(x)
        for i in range(config.n_layer):
            h = rmsnorm(x)
            q, k, v = (
                (h @ w[f"layer{i}.attn_{m}"].T).view(n, H, D).transpose(0, 1)
                for m in ("wq", "wk", "wv")
            )
            scores = q @ k.transpose(1, 2) / D**0.5
            scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
            y = (torch.softmax(scores, -1) @ v).transpose(0, 1).reshape(n, -1)
            x = x + y @ w[f"layer{i}.attn_wo"].T
            x = x + torch.relu(rmsnorm(x) @ w[f"layer{i}.mlp_fc1"].T) @ w[f"layer{i}.mlp_fc2"].T
        logits = x @ (w["wte"] if config.tie_lm_head else w["lm_head"]).T
        losses.append(torch.nn.functional.cross_entropy(logits, targets))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("tie,norm", [(False, True), (True, False)])
def test_wider_model_matches_autograd(tie, norm):
    """Beyond the tiny configs: 3 layers, 4 heads of 8 channels, a packed batch of 9 documents,
    against an independent autograd implementation (no packing) in float64."""
    config = ModelConfig(
        vocab_size=VOCAB,
        n_layer=3,
        n_embd=32,
        n_head=4,
        block_size=7,
        tie_lm_head=tie,
        input_rmsnorm=norm,
    )
    t = TensorGPT(
        config,
        init_weights(config, random.Random(7)),
        TrainConfig(),
        TensorOptions(device="cpu", dtype="float64"),
    )
    docs = random_docs(random.Random(8), 9)
    w = {
        name: torch.tensor(m, dtype=torch.float64, requires_grad=True)
        for name, m in t.export_state()["weights"].items()
    }
    want = autograd_reference_loss(config, w, docs)
    want.backward()
    assert t.compute_grad(docs).item() == pytest.approx(want.item(), rel=1e-12)
    got = t.layout.to_lists(t.grad)
    assert_matrices_close(got, {name: p.grad.tolist() for name, p in w.items()}, "gradient")
