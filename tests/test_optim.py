"""The training options beyond the reference: the LR schedules as formulas, weight decay and
gradient clipping in both modes against torch.optim.AdamW and torch.nn.utils.clip_grad_norm_,
float64 parity between the modes with every option on, and dropout (tensor mode only)."""

import math
import random

import pytest

from microgpt.config import ModelConfig, TrainConfig
from microgpt.errors import UserError
from microgpt.init import init_weights
from microgpt.modes import check_train_options, make_gpt
from microgpt.scalar.model import ScalarGPT
from microgpt.schedule import lr_at

# schedules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps,lr", [(1, 0.01), (10, 0.01), (1000, 0.01), (37, 0.003)])
def test_default_schedule_is_the_reference_linear_decay_float_for_float(steps, lr):
    tc = TrainConfig(steps=steps, learning_rate=lr)
    assert [lr_at(s, tc) for s in range(steps)] == [lr * (1 - s / steps) for s in range(steps)]


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant", "wsd"])
def test_warmup_rises_linearly_to_the_peak(schedule):
    tc = TrainConfig(steps=50, learning_rate=0.02, warmup_steps=8, lr_schedule=schedule)
    assert [lr_at(s, tc) for s in range(8)] == [0.02 * (s + 1) / 8 for s in range(8)]
    assert lr_at(7, tc) == 0.02  # the last warm-up step reaches the peak
    assert lr_at(8, tc) == pytest.approx(0.02, rel=1e-15)  # and the decay starts from it


def test_decays_after_warmup_as_formulas():
    lr, lo, W, S = 0.02, 0.002, 5, 45
    for s in range(W, S):
        p = (s - W) / (S - W)
        common = dict(steps=S, learning_rate=lr, warmup_steps=W, min_lr=lo)
        linear = TrainConfig(lr_schedule="linear", **common)
        cosine = TrainConfig(lr_schedule="cosine", **common)
        constant = TrainConfig(lr_schedule="constant", **common)
        assert lr_at(s, linear) == pytest.approx(lo + (lr - lo) * (1 - p), rel=1e-15)
        assert lr_at(s, cosine) == pytest.approx(
            lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * p)), rel=1e-15
        )
        assert lr_at(s, constant) == lr
    for schedule in ("linear", "cosine"):
        tc = TrainConfig(steps=S, learning_rate=lr, warmup_steps=W, min_lr=lo, lr_schedule=schedule)
        after = [lr_at(s, tc) for s in range(W, S)]
        assert all(a > b for a, b in zip(after, after[1:])), "decays strictly"
        assert lo < after[-1] < lo + 0.05 * (lr - lo), "ends one step short of min_lr"


@pytest.mark.parametrize("schedule", ["linear", "cosine", "wsd"])
def test_warmup_longer_than_the_run_never_decays(schedule):
    tc = TrainConfig(steps=4, warmup_steps=10, lr_schedule=schedule)
    assert [lr_at(s, tc) for s in range(4)] == [0.01 * (s + 1) / 10 for s in range(4)]


def test_wsd_warms_up_holds_the_peak_then_decays_over_the_last_fraction():
    """S = 50, W = 5, f = 0.2: D = 10 decay steps, from s0 = 40; the first step at lr / W, the
    warm-up's last at the peak, the peak held exactly until the decay's first step, which is the
    peak up to one rounding, and the last step one decay step above min_lr, as linear ends."""
    lr, lo, W, S = 0.02, 0.002, 5, 50
    tc = TrainConfig(steps=S, learning_rate=lr, warmup_steps=W, min_lr=lo, lr_schedule="wsd")
    lrs = [lr_at(s, tc) for s in range(S)]
    assert lrs[0] == lr / W and lrs[W - 1] == lr
    assert lrs[W:40] == [lr] * (40 - W)  # stable: the peak itself, float for float
    assert lrs[40] == pytest.approx(lr, rel=1e-15)  # p = 0
    assert lrs[41] < lr
    for s in range(40, S):
        assert lrs[s] == pytest.approx(lo + (lr - lo) * (1 - (s - 40) / 10), rel=1e-15), s
    assert lrs[-1] == pytest.approx(lo + (lr - lo) / 10, rel=1e-15)
    assert all(a > b for a, b in zip(lrs[40:], lrs[41:])), "decays strictly"


@pytest.mark.parametrize(
    "steps,fraction,first_below",  # the decay's length D = floor(f S + 1/2), from S - D
    [(10, 0.25, 8), (10, 0.05, None), (10, 0.04, None), (7, 0.5, 4), (1000, 0.2, 801)],
)
def test_wsd_decays_over_the_nearest_whole_number_of_steps(steps, fraction, first_below):
    """f S = 2.5 rounds up to 3 steps (from 7: step 8 is the first below the peak); 0.5 to one
    step, whose rate is still the peak (p = 0), and 0.4 to none: no step decays."""
    tc = TrainConfig(steps=steps, lr_schedule="wsd", decay_fraction=fraction)
    lrs = [lr_at(s, tc) for s in range(steps)]
    if first_below is None:
        assert lrs == [tc.learning_rate] * steps
    else:
        assert lrs[:first_below] == [tc.learning_rate] * first_below
        assert all(x < tc.learning_rate for x in lrs[first_below:])


@pytest.mark.parametrize("S,W,lo", [(10, 0, 0.0), (45, 5, 0.002), (37, 36, 0.001), (1000, 30, 0.0)])
def test_wsd_with_decay_fraction_1_is_linear_float_for_float(S, W, lo):
    """The decay then starts at the end of the warm-up, and wsd computes it with linear's own
    expression on the same numbers: equal float for float, not within a tolerance."""
    common = dict(steps=S, learning_rate=0.003, warmup_steps=W, min_lr=lo)
    linear = TrainConfig(lr_schedule="linear", **common)
    wsd = TrainConfig(lr_schedule="wsd", decay_fraction=1.0, **common)
    assert [lr_at(s, wsd) for s in range(S)] == [lr_at(s, linear) for s in range(S)]


def test_a_warmup_into_the_decay_shortens_it():
    """S = 20, f = 0.5: the decay would start at 10, but the warm-up lasts 15 steps; it starts
    at 15 instead, as linear's does."""
    common = dict(steps=20, warmup_steps=15, min_lr=1e-3)
    wsd = TrainConfig(lr_schedule="wsd", decay_fraction=0.5, **common)
    linear = TrainConfig(lr_schedule="linear", **common)
    assert [lr_at(s, wsd) for s in range(20)] == [lr_at(s, linear) for s in range(20)]


def test_metrics_record_the_scheduled_lr(tmp_path):
    from microgpt.train import MetricsWriter, prepare, train

    p = tmp_path / "tiny.txt"
    p.write_text("abcabc\nbcabca\ncabcab\n")
    tc = TrainConfig(steps=6, val_fraction=0.0, warmup_steps=2, lr_schedule="cosine", min_lr=1e-3)
    config, prep = prepare(str(p), {"n_embd": 4, "n_head": 2, "block_size": 4}, tc)
    metrics = MetricsWriter(tmp_path / "m.jsonl")
    _, result = train("scalar", config, tc, prep, metrics=metrics)
    metrics.finish(result.summary())
    import json

    records = [json.loads(line) for line in open(tmp_path / "m.jsonl")][:-1]
    assert [r["lr"] for r in records] == [lr_at(s, tc) for s in range(6)]


# the optimiser against torch, in each mode --------------------------------------------------------

torch = pytest.importorskip("torch")

from microgpt.modes import TensorOptions  # noqa: E402
from microgpt.tensor import TensorGPT, ops  # noqa: E402
from microgpt.tensor.optim import FlatAdam  # noqa: E402

F64 = torch.float64
LRS = [0.01, 0.008, 0.006, 0.004, 0.002]


def torch_reference(p0: torch.Tensor, grads: list, tc: TrainConfig):
    """torch.optim.AdamW after torch.nn.utils.clip_grad_norm_ (when tc.grad_clip > 0), one
    parameter tensor, lr changed every step; returns the parameter, the moments and the norms."""
    ref = p0.clone().requires_grad_()
    opt = torch.optim.AdamW(
        [ref],
        lr=LRS[0],
        betas=(tc.beta1, tc.beta2),
        eps=tc.eps,
        weight_decay=tc.weight_decay,
        foreach=False,
    )
    norms = []
    for grad, lr in zip(grads, LRS):
        ref.grad = grad.clone()
        if tc.grad_clip > 0:
            norms.append(torch.nn.utils.clip_grad_norm_([ref], tc.grad_clip, foreach=False))
        opt.param_groups[0]["lr"] = lr
        opt.step()
    state = opt.state[ref]
    return ref.detach(), state["exp_avg"], state["exp_avg_sq"], norms


def some_grads(n: int, scales=(3.0, 0.01, 1.0, 0.2, 5.0)) -> list:
    """Gradients whose norms straddle the clip values used below."""
    g = torch.Generator().manual_seed(1)
    return [s * torch.randn(n, generator=g, dtype=F64) / n**0.5 for s in scales]


OPTIONS = [
    dict(weight_decay=0.1),
    dict(grad_clip=0.5),
    dict(weight_decay=0.3, grad_clip=0.5),
    dict(weight_decay=0.1, grad_clip=1.0, beta1=0.9, beta2=0.95),
]


@pytest.mark.parametrize("options", OPTIONS)
def test_flat_adam_matches_torch_adamw_and_clip_grad_norm(options):
    tc = TrainConfig(**options)
    p0 = torch.randn(60, generator=torch.Generator().manual_seed(0), dtype=F64)
    grads = some_grads(60)
    p, g = p0.clone(), torch.zeros(60, dtype=F64)
    adam = FlatAdam(p, g, tc)
    norms = []
    for step, (grad, lr) in enumerate(zip(grads, LRS), start=1):
        g.copy_(grad)
        adam.update([lr], step)
        if tc.grad_clip > 0:
            norms.append(adam.last_grad_norm.item())
    want_p, want_m, want_v, want_norms = torch_reference(p0, grads, tc)
    torch.testing.assert_close(p, want_p, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(adam.m, want_m, rtol=1e-13, atol=1e-16)
    torch.testing.assert_close(adam.v, want_v, rtol=1e-13, atol=1e-16)
    assert norms == pytest.approx([n.item() for n in want_norms], rel=1e-14)
    if tc.grad_clip:
        assert any(n > tc.grad_clip for n in norms) and any(n < tc.grad_clip for n in norms)


def scalar_model(tc: TrainConfig) -> ScalarGPT:
    config = ModelConfig(vocab_size=5, n_embd=4, n_head=2, block_size=3)  # 256 parameters
    return ScalarGPT(config, init_weights(config, random.Random(0)), tc)


@pytest.mark.parametrize("options", OPTIONS)
def test_scalar_adam_matches_torch_adamw_and_clip_grad_norm(options):
    tc = TrainConfig(**options)
    s = scalar_model(tc)
    p0 = torch.tensor([p.data for p in s.params], dtype=F64)
    grads = some_grads(len(s.params))
    norms = []
    for grad, lr in zip(grads, LRS):
        for p, gi in zip(s.params, grad.tolist()):
            p.grad = gi
        s._adam(lr)
        norms.append(s.last_grad_norm)
        assert all(p.grad == 0.0 for p in s.params)
    want_p, want_m, want_v, want_norms = torch_reference(p0, grads, tc)
    got = torch.tensor([p.data for p in s.params], dtype=F64)
    torch.testing.assert_close(got, want_p, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(torch.tensor(s.adam_m, dtype=F64), want_m, rtol=1e-13, atol=1e-16)
    torch.testing.assert_close(torch.tensor(s.adam_v, dtype=F64), want_v, rtol=1e-13, atol=1e-16)
    if tc.grad_clip:
        assert norms == pytest.approx([n.item() for n in want_norms], rel=1e-14)
    else:
        assert norms == [None] * len(LRS)  # the norm is not computed when not clipping


def test_a_clip_never_reached_changes_nothing_bit_for_bit():
    """min(1, clip / (|g| + 1e-6)) = 1: both modes give exactly the unclipped update."""
    grads = some_grads(256)
    results = []
    for tc in (TrainConfig(), TrainConfig(grad_clip=1e6)):
        s = scalar_model(tc)
        p, g = torch.zeros(256, dtype=F64), torch.zeros(256, dtype=F64)
        adam = FlatAdam(p, g, tc)
        for step, (grad, lr) in enumerate(zip(grads, LRS), start=1):
            for q, gi in zip(s.params, grad.tolist()):
                q.grad = gi
            s._adam(lr)
            g.copy_(grad)
            adam.update([lr], step)
        results.append(([q.data for q in s.params], p.tolist()))
    assert results[0] == results[1]


# float64 parity between the modes, every option both support --------------------------------------

PARITY_REL = 1e-10
VOCAB = 6


def random_docs(rng: random.Random, count: int) -> list[list[int]]:
    bos = VOCAB - 1
    return [
        [bos, *(rng.randrange(bos) for _ in range(rng.randint(1, 8))), bos] for _ in range(count)
    ]


@pytest.mark.parametrize(
    "batch_size,clip,loss_average",  # clip: about the median norm
    [(1, 1.7, "document"), (3, 0.9, "document"), (3, 0.9, "token")],
)
def test_modes_agree_with_every_option_on(batch_size, clip, loss_average):
    config = ModelConfig(vocab_size=VOCAB, n_layer=2, n_embd=8, n_head=2, block_size=6)
    tc = TrainConfig(
        loss_average=loss_average,
        steps=20,
        learning_rate=0.03,
        lr_schedule="cosine",
        warmup_steps=4,
        min_lr=0.003,
        weight_decay=0.2,
        grad_clip=clip,
        beta1=0.9,
        beta2=0.95,
    )
    weights = init_weights(config, random.Random(2))
    s = ScalarGPT(config, weights, tc)
    t = TensorGPT(config, weights, tc, TensorOptions(device="cpu", dtype="float64"))
    rng = random.Random(3)
    clipped = 0
    for step in range(tc.steps):
        docs = random_docs(rng, batch_size)
        want = s.train_step(docs, lr_at(step, tc))
        got = t.train_step(docs, lr_at(step, tc))
        assert abs(got - want) <= PARITY_REL * want, (step, got, want)
        norm = t.optimizer.last_grad_norm.item()
        assert abs(norm - s.last_grad_norm) <= PARITY_REL * s.last_grad_norm, step
        clipped += s.last_grad_norm > tc.grad_clip
    assert 0 < clipped < tc.steps, "the clip should bind on some steps, not all"
    got_state, want_state = t.export_state(), s.export_state()
    for key in ("weights", "adam_m", "adam_v"):
        for name, want_m in want_state[key].items():
            want_m = torch.tensor(want_m, dtype=F64)
            err = (torch.tensor(got_state[key][name], dtype=F64) - want_m).abs().max()
            assert err <= PARITY_REL * want_m.abs().max(), (key, name, float(err))


@pytest.mark.parametrize("schedule", ["wsd", "cosine"])
def test_both_modes_train_on_the_schedule_alike(tmp_path, schedule):
    """The schedule is mode-agnostic (`lr_at`, applied by the shared loop): each mode's metrics
    record its rates, and in float64 the two modes' losses agree step for step."""
    import json

    from microgpt.train import MetricsWriter, prepare, train

    p = tmp_path / "tiny.txt"
    p.write_text("abcabc\nbcabca\ncabcab\nacbacb\n")
    decay = {"decay_fraction": 0.5} if schedule == "wsd" else {}
    tc = TrainConfig(
        steps=12, val_fraction=0.0, warmup_steps=3, lr_schedule=schedule, min_lr=1e-3, **decay
    )
    losses = {}
    for mode in ("scalar", "tensor"):
        config, prep = prepare(str(p), {"n_embd": 4, "n_head": 2, "block_size": 4}, tc)
        metrics = MetricsWriter(tmp_path / f"{mode}.jsonl")
        options = TensorOptions(device="cpu", dtype="float64") if mode == "tensor" else None
        _, result = train(mode, config, tc, prep, tensor=options, metrics=metrics)
        metrics.finish(result.summary())
        records = [json.loads(line) for line in open(tmp_path / f"{mode}.jsonl")][:-1]
        assert [r["lr"] for r in records] == [lr_at(s, tc) for s in range(12)]
        losses[mode] = result.losses
    for want, got in zip(losses["scalar"], losses["tensor"]):
        assert abs(got - want) <= PARITY_REL * want


# the training loss's average ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["scalar", "tensor"])
def test_token_average_is_the_mean_over_every_predicted_token(mode):
    """--loss-average token: the batch loss is the per-token held-out loss's formula (total
    -log p over the count of predictions) on the batch; document: the mean of the documents'
    own means. Documents of different lengths, one longer than block_size, tell them apart."""
    config = ModelConfig(vocab_size=VOCAB, n_layer=2, n_embd=8, n_head=2, block_size=6)
    weights = init_weights(config, random.Random(2))
    docs = [[5, 1, 5], [5, 0, 1, 2, 3, 4, 0, 1, 5], [5, 2, 3, 5]]
    options = TensorOptions(device="cpu", dtype="float64") if mode == "tensor" else None
    losses = {}
    for average in ("document", "token"):
        tc = TrainConfig(loss_average=average)
        gpt = make_gpt(mode, config, weights, tc, options)
        losses[average] = gpt.train_step(docs, lr=0.0)
    total, count = gpt.eval_token_loss(docs)
    assert count == 2 + 6 + 3
    assert losses["token"] == pytest.approx(total / count, rel=1e-13)
    assert losses["document"] == pytest.approx(gpt.eval_loss(docs), rel=1e-13)
    assert abs(losses["token"] - losses["document"]) > 1e-3


@pytest.mark.parametrize("average", ["document", "token"])
def test_shares_packed_with_the_batch_divisor_sum_to_the_batch(average):
    """What a data-parallel step does: each rank's share, packed with the divisor of the whole
    batch, gives a loss and gradient that sum over the shares to the whole batch's."""
    config = ModelConfig(vocab_size=VOCAB, n_layer=2, n_embd=8, n_head=2, block_size=6)
    weights = init_weights(config, random.Random(2))
    tc = TrainConfig(loss_average=average)
    gpt = TensorGPT(config, weights, tc, TensorOptions(device="cpu", dtype="float64"))
    docs = random_docs(random.Random(4), 7)
    whole = gpt.compute_grad(docs).item(), gpt.grad.clone()
    divisor = gpt.packer.divisor(docs, gpt.per_token)
    assert divisor == (sum(min(6, len(d) - 1) for d in docs) if average == "token" else 7)
    loss, grad = 0.0, torch.zeros_like(gpt.grad)
    for share in (docs[:3], docs[3:]):
        loss += gpt.compute_grad(share, divisor).item()
        grad += gpt.grad
    assert loss == pytest.approx(whole[0], rel=1e-14)
    torch.testing.assert_close(grad, whole[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("mode", ["scalar", "tensor"])
def test_one_document_averages_alike_bit_for_bit(mode):
    config = ModelConfig(vocab_size=VOCAB, n_layer=2, n_embd=8, n_head=2, block_size=6)
    weights = init_weights(config, random.Random(2))
    runs = []
    for average in ("document", "token"):
        gpt = make_gpt(mode, config, weights, TrainConfig(loss_average=average, steps=5))
        rng = random.Random(3)
        runs.append([gpt.train_step(random_docs(rng, 1), 0.01) for _ in range(5)])
    assert runs[0] == runs[1]


# dropout: tensor mode only ------------------------------------------------------------------------


def test_scalar_mode_refuses_dropout():
    config = ModelConfig(vocab_size=5, n_embd=4, n_head=2, block_size=3)
    weights = init_weights(config, random.Random(0))
    with pytest.raises(UserError, match=r"^--dropout applies to --mode tensor only$"):
        make_gpt("scalar", config, weights, TrainConfig(dropout=0.1))
    check_train_options("tensor", TrainConfig(dropout=0.1))  # tensor mode accepts it
    check_train_options("scalar", TrainConfig(dropout=0.0))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_matches_autograd_with_the_same_mask(p):
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(0), dtype=F64)
    x.requires_grad_()
    dy = torch.randn(6, 9, dtype=F64)
    y, scale = ops.dropout(x.detach(), p, torch.Generator().manual_seed(5))
    mask = scale != 0
    assert 0 < mask.sum() < mask.numel()
    want_y = x * mask / (1 - p)
    (want_dx,) = torch.autograd.grad(want_y, x, dy)
    torch.testing.assert_close(y, want_y.detach(), rtol=1e-15, atol=0)
    torch.testing.assert_close(ops.dropout_backward(dy, scale), want_dx, rtol=1e-15, atol=0)
    again, _ = ops.dropout(x.detach(), p, torch.Generator().manual_seed(5))
    assert torch.equal(again, y), "the same generator seed gives the same mask"


def test_dropout_drops_about_p_and_keeps_the_mean():
    x = torch.ones(200_000, dtype=F64)
    y, _ = ops.dropout(x, 0.25, torch.Generator().manual_seed(1))
    assert (y == 0).double().mean().item() == pytest.approx(0.25, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)


def test_dropout_zero_is_the_identity_bit_for_bit():
    x, dy = torch.randn(5, 7, dtype=F64), torch.randn(5, 7, dtype=F64)
    gen = torch.Generator().manual_seed(9)
    before = gen.get_state()
    y, scale = ops.dropout(x, 0.0, gen)
    assert y is x and scale is None
    assert ops.dropout_backward(dy, scale) is dy
    assert torch.equal(gen.get_state(), before), "p = 0 draws nothing"


def test_attention_dropout_matches_autograd_with_the_same_mask():
    H, R, W, D, p = 2, 1, 5, 3, 0.3
    mask = torch.zeros(W, W, dtype=F64).masked_fill_(torch.ones(W, W).triu(1).bool(), -math.inf)
    mask = mask.expand(R, W, W).contiguous()
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(H * R, W, D, generator=gen, dtype=F64) for _ in range(3))
    dy = torch.randn(H * R, W, D, generator=gen, dtype=F64)
    y, att, scale = ops.attention(q, k, v, mask, p, torch.Generator().manual_seed(7))
    assert scale is not None and (scale == 0).any()
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    a, b, c = leaves
    want_att = torch.softmax(a @ b.mT / D**0.5 + mask, dim=-1)
    want_y = (want_att * (scale != 0) / (1 - p)) @ c
    torch.testing.assert_close(y, want_y.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(att, want_att.detach(), rtol=1e-14, atol=0)
    want = torch.autograd.grad(want_y, leaves, dy)
    got = ops.attention_backward(dy, q, k, v, att, dy.new_empty(3, H * R, W, D), scale)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


def tensor_model(dropout: float, seed: int = 0, n_layer: int = 2) -> TensorGPT:
    config = ModelConfig(vocab_size=VOCAB, n_layer=n_layer, n_embd=8, n_head=2, block_size=6)
    tc = TrainConfig(dropout=dropout, seed=seed)
    weights = init_weights(config, random.Random(5))
    return TensorGPT(config, weights, tc, TensorOptions(device="cpu", dtype="float64"))


def test_dropout_gradient_matches_finite_differences():
    """The masks depend only on (seed, step), not on the weights, so with dropout on the loss
    is still a smooth function of the weights at a fixed step: check every backward site."""
    t = tensor_model(0.3)
    docs = random_docs(random.Random(6), 3)
    loss = t.compute_grad(docs).item()
    assert t.compute_grad(docs).item() == loss, "the same step draws the same masks"
    grad = t.grad.clone()
    rng, h = random.Random(7), 1e-6
    for name, (rows, cols) in t.layout.shapes.items():
        for _ in range(3):
            i = t.layout.offsets[name] + rng.randrange(rows * cols)
            saved = t.flat[i].item()
            t.flat[i] = saved + h
            up = t.compute_grad(docs).item()
            t.flat[i] = saved - h
            down = t.compute_grad(docs).item()
            t.flat[i] = saved
            assert (up - down) / (2 * h) == pytest.approx(grad[i].item(), rel=1e-5, abs=1e-9), name


def test_dropout_trains_differently_but_never_touches_eval_or_logits():
    plain, dropped = tensor_model(0.0), tensor_model(0.3)
    docs = random_docs(random.Random(8), 3)
    assert plain.eval_loss(docs) == dropped.eval_loss(docs)
    assert plain.logits(docs[0][:4]) == dropped.logits(docs[0][:4])
    assert plain.compute_grad(docs).item() != dropped.compute_grad(docs).item()
    other_step = tensor_model(0.3)
    other_step.step = 1
    assert other_step.compute_grad(docs).item() != dropped.compute_grad(docs).item()


def test_dropout_resumes_exactly_from_exported_state():
    rng = random.Random(9)
    batches = [random_docs(rng, 2) for _ in range(6)]
    full = tensor_model(0.2, seed=3)
    want = [full.train_step(d, 0.01) for d in batches]
    first = tensor_model(0.2, seed=3)
    got = [first.train_step(d, 0.01) for d in batches[:3]]
    resumed = tensor_model(0.2, seed=3)
    resumed.load_state(first.export_state(), first.step)
    got += [resumed.train_step(d, 0.01) for d in batches[3:]]
    assert got == want
    assert tensor_model(0.2, seed=4).train_step(batches[0], 0.01) != want[0], "seed matters"
