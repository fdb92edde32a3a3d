"""Muon (`--optimizer muon`): Newton-Schulz against a direct float64 torch rendering of the
formula, and what it does to singular values; tensor mode's flat, batched Muon against scalar
mode's on the same weights and gradients; a stack against each run alone; weight decay and
clipping exact; training; the momentum in checkpoints, resumed exactly in either mode; the
errors; tensor mode against scalar mode over 50 steps; a stack of Muon runs against each run
alone."""

import json
import math
import random

import pytest
from conftest import read_metrics, run_cli
from designs import DESIGNS

from microgpt import checkpoint, tensorfile
from microgpt.config import GRAD_CLIP_EPS, ModelConfig, TrainConfig
from microgpt.errors import UserError
from microgpt.init import init_weights
from microgpt.muon import (
    NS_COEFFICIENTS,
    NS_EPS,
    NS_STEPS,
    muon_matrices,
    newton_schulz,
    update_scale,
)
from microgpt.scalar.model import ScalarGPT
from microgpt.train import prepare, train

torch = pytest.importorskip("torch")

from microgpt.tensor.muon import FlatMuon  # noqa: E402
from microgpt.tensor.muon import newton_schulz as batched_newton_schulz  # noqa: E402
from microgpt.tensor.params import FlatLayout  # noqa: E402

F64 = torch.float64
SMALL = ["--n-embd", "8", "--n-head", "2", "--val-docs", "50", "--eval-docs", "50"]
MUON = TrainConfig(optimizer="muon")


def tiny(**design) -> ModelConfig:
    return ModelConfig(vocab_size=7, n_layer=2, n_embd=8, n_head=2, block_size=5, **design)


# which matrices, and the update scale ------------------------------------------------------------


def test_muon_trains_the_hidden_matrices_and_adamw_the_embeddings_and_head():
    hidden = [f"layer{i}.{n}" for i in range(2) for n in ("attn_wq", "attn_wk", "attn_wv")]
    hidden += [f"layer{i}.{n}" for i in range(2) for n in ("attn_wo", "mlp_fc1", "mlp_fc2")]
    for design, rest in (
        ({}, {"wte", "wpe", "lm_head"}),
        ({"tie_lm_head": True}, {"wte", "wpe"}),  # wte is the head too: AdamW
        ({"position": "rope"}, {"wte", "lm_head"}),
    ):
        shapes = tiny(**design).param_shapes()
        assert sorted(muon_matrices(shapes)) == sorted(hidden)
        assert set(shapes) - set(muon_matrices(shapes)) == rest
    assert update_scale(16, 64) == update_scale(64, 16) == 0.2 * 8


# Newton-Schulz ----------------------------------------------------------------------------------


def direct_newton_schulz(G):
    """The formula, one matrix at a time, in float64 torch."""
    a, b, c = NS_COEFFICIENTS
    X = G.T if G.shape[0] > G.shape[1] else G
    X = X / (torch.linalg.matrix_norm(X) + NS_EPS)
    for _ in range(NS_STEPS):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if G.shape[0] > G.shape[1] else X


SHAPES = [(8, 8), (8, 32), (32, 8), (5, 3), (1, 6), (16, 64)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_newton_schulz_matches_the_formula_in_float64(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=F64)
    want = direct_newton_schulz(G)
    scalar = torch.tensor(newton_schulz(G.tolist()), dtype=F64)
    assert scalar.shape == want.shape
    torch.testing.assert_close(scalar, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(batched_newton_schulz(G), want, rtol=1e-12, atol=1e-14)


def test_batched_newton_schulz_is_each_matrix_alone():
    G = torch.randn(3, 4, 6, 10, generator=torch.Generator().manual_seed(1), dtype=F64)
    got = batched_newton_schulz(G)
    assert got.shape == G.shape
    for i in range(3):
        for j in range(4):
            want = direct_newton_schulz(G[i, j])
            assert relative_error(got[i, j], want) <= 1e-13, (i, j)
    assert relative_error(batched_newton_schulz(G.mT), got.mT) <= 1e-13  # tall


@pytest.mark.parametrize("shape", [(16, 16), (16, 64), (64, 16)], ids=str)
def test_newton_schulz_keeps_the_singular_vectors_and_moves_the_values_towards_one(shape):
    """G = U diag(s) Vᵀ with s spread over 0.02 .. 5: the result is U diag(s') Vᵀ with every s'
    in [0.6, 1.21] (the quintic a s + b s³ + c s⁵ peaks at 1.2025 on [0, 1])."""
    gen = torch.Generator().manual_seed(3)
    k = min(shape)
    U, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=gen, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=gen, dtype=F64))
    s = torch.logspace(0.7, -1.7, k, dtype=F64)
    O = batched_newton_schulz(U @ torch.diag(s) @ V.T)
    inner = U.T @ O @ V  # diag(s') if the singular vectors are kept
    values = torch.diagonal(inner)
    torch.testing.assert_close(inner, torch.diag(values), rtol=0, atol=1e-12)
    assert 0.6 <= float(values.min()) and float(values.max()) <= 1.21
    assert not torch.allclose(values, values[0].expand(k), atol=0.01)  # not exactly orthogonal


# one update: tensor mode's FlatMuon against scalar mode's _muon -----------------------------------

CLIP = -1.0  # in OPTIONS: a clip at about the gradients' median norm (`muon_config`)
OPTIONS = {
    "plain": {},
    "decay+clip": dict(weight_decay=0.2, grad_clip=CLIP, beta1=0.9, beta2=0.95),
    "momentum 0.8": dict(muon_momentum=0.8, grad_clip=1e6),
}
DESIGNS_HERE = {"reference": {}, "tied head": {"tie_lm_head": True}, "rope": {"position": "rope"}}
LRS = [0.01, 0.02, 0.007, 0.013, 0.0]


def flat(layout: FlatLayout, matrices) -> "torch.Tensor":
    out = torch.zeros(layout.numel, dtype=F64)
    layout.from_lists(matrices, out, "test")
    return out


def some_grads(numel: int, seed: int, count: int = len(LRS), rows: int | None = None) -> list:
    """Gaussian gradients, by turns 1.3 and 0.7 times the norm sqrt(numel) (`CLIP`)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (numel,) if rows is None else (rows, numel)
    return [torch.randn(*shape, generator=gen, dtype=F64) * (1.3, 0.7)[k % 2] for k in range(count)]


def muon_config(options: dict, numel: int) -> TrainConfig:
    """Muon with `options`, a `grad_clip` of `CLIP` made the norm sqrt(numel), which the
    gradients of `some_grads` pass on every other step."""
    if options.get("grad_clip") == CLIP:
        options = {**options, "grad_clip": math.sqrt(numel)}
    return TrainConfig(optimizer="muon", **options)


def relative_error(got, want) -> float:
    got, want = torch.as_tensor(got, dtype=F64), torch.as_tensor(want, dtype=F64)
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


def set_scalar_grads(s: ScalarGPT, grad) -> None:
    for p, g in zip(s.params, grad.tolist()):
        p.grad = g


@pytest.mark.parametrize("design", DESIGNS_HERE.values(), ids=DESIGNS_HERE.keys())
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_flat_muon_step_matches_scalar_muon_step(options, design):
    """The same weights and gradients, five updates: each update's change of every matrix,
    Muon's momentum and Adam's moments within 1e-12 relative, per matrix."""
    config = tiny(**design)
    weights = init_weights(config, random.Random(0))
    layout = FlatLayout(config.param_shapes())
    tc = muon_config(options, layout.numel)
    s = ScalarGPT(config, weights, tc)
    p, g = flat(layout, weights), torch.zeros(layout.numel, dtype=F64)
    muon = FlatMuon(layout, p, g, tc)
    clipped = 0
    for step, (grad, lr) in enumerate(zip(some_grads(layout.numel, 1), LRS), start=1):
        before = layout.to_lists(p)
        set_scalar_grads(s, grad)
        s._muon(lr)
        assert all(q.grad == 0.0 for q in s.params)
        g.copy_(grad)
        muon.update([lr], step)
        want, got = s.export_state(), layout.to_lists(p)
        for name in layout.shapes:
            delta_want = torch.tensor(want["weights"][name], dtype=F64) - torch.tensor(
                before[name], dtype=F64
            )
            delta_got = torch.tensor(got[name], dtype=F64) - torch.tensor(before[name], dtype=F64)
            if lr > 0:
                assert relative_error(delta_got, delta_want) <= 1e-12, (step, name)
            assert relative_error(got[name], want["weights"][name]) <= 1e-15, (step, name)
        momentum = layout.to_lists(muon.momentum)
        for name, m in ((n, momentum[n]) for n in muon.names):
            assert relative_error(m, want["momentum"][name]) <= 1e-12, (step, name)
        for key, buffer in (("adam_m", muon.m), ("adam_v", muon.v)):
            lists = layout.to_lists(buffer)
            for name in layout.shapes:
                if name in muon.names:  # Adam's moments of Muon's matrices stay 0
                    assert not any(x for row in want[key][name] for x in row)
                    assert not any(x for row in lists[name] for x in row)
                else:
                    assert relative_error(lists[name], want[key][name]) <= 1e-12, (step, key)
        if tc.grad_clip:
            norm = float(muon.last_grad_norm)
            assert abs(norm - s.last_grad_norm) <= 1e-14 * norm
            clipped += norm > tc.grad_clip
    if options.get("grad_clip") == CLIP:
        assert 0 < clipped < len(LRS), "the clip should bind on some steps, not all"


def test_muon_updates_have_an_rms_of_about_lr_times_0_2():
    """Moonlight's scale: every Muon matrix moves by about 0.2 lr RMS on its first step, as an
    AdamW matrix does (|m_hat / sqrt(v_hat)| = 1 on a first step)."""
    config = ModelConfig(vocab_size=30, n_layer=1, n_embd=32, n_head=4, block_size=8)
    layout = FlatLayout(config.param_shapes())
    p = flat(layout, init_weights(config, random.Random(0)))
    g = some_grads(layout.numel, 2, count=1)[0]
    before = p.clone()
    muon = FlatMuon(layout, p, g, MUON)
    muon.update([0.01], 1)
    change = layout.views(p - before)
    for name in muon.names:
        rms = float(change[name].pow(2).mean().sqrt()) / 0.01
        assert 0.14 < rms < 0.23, (name, rms)
    assert float(change["wte"].abs().mean()) / 0.01 == pytest.approx(1.0, rel=1e-4)


# a stack: every run as it would be alone ----------------------------------------------------------


def test_a_stack_of_muon_runs_is_each_run_alone():
    """Three runs, their own weights, gradients and learning rates, clipped at about the
    median norm: each row of the stack's buffers is the solo optimizer's (float64; measured
    bit-identical on a CPU)."""
    config = tiny()
    layout = FlatLayout(config.param_shapes())
    tc = muon_config(dict(weight_decay=0.1, grad_clip=CLIP), layout.numel)
    S = 3
    P = torch.stack([flat(layout, init_weights(config, random.Random(i))) for i in range(S)])
    G = torch.zeros_like(P)
    solos = [(P[i].clone(), torch.zeros(layout.numel, dtype=F64)) for i in range(S)]
    solos = [(p, g, FlatMuon(layout, p, g, tc)) for p, g in solos]
    stack = FlatMuon(layout, P, G, tc)
    lrs = [[0.01, 0.02, 0.005], [0.008, 0.016, 0.004], [0.006, 0.012, 0.003]]
    clipped = 0
    for step, (grads, lr) in enumerate(zip(some_grads(layout.numel, 3, 3, rows=S), lrs), 1):
        G.copy_(grads)
        stack.update(lr, step)
        assert stack.last_grad_norm.shape == (S, 1)
        for i, (p, g, solo) in enumerate(solos):
            g.copy_(grads[i])
            solo.update([lr[i]], step)
            for mine, its in ((P, p), (stack.momentum, solo.momentum), (stack.m, solo.m)):
                assert relative_error(mine[i], its) <= 1e-13, (step, i)
            assert relative_error(stack.v[i], solo.v) <= 1e-13
            assert float(stack.last_grad_norm[i]) == pytest.approx(float(solo.last_grad_norm))
            clipped += float(solo.last_grad_norm) > tc.grad_clip
    assert 0 < clipped < 9, "the clip should bind on some steps, not all"


# weight decay and clipping, exact -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["scalar", "tensor"])
def test_weight_decay_alone_is_exact(mode):
    """A zero gradient moves nothing but the decay: every weight becomes w * (1 - lr wd), bit for
    bit, in both groups (Muon's update of 0 is 0 / (0 + eps) = 0)."""
    tc = TrainConfig(optimizer="muon", weight_decay=0.3)
    config = tiny()
    weights = init_weights(config, random.Random(4))
    layout = FlatLayout(config.param_shapes())
    w0 = flat(layout, weights)
    s = ScalarGPT(config, weights, tc)
    p, g = w0.clone(), torch.zeros(layout.numel, dtype=F64)
    muon = FlatMuon(layout, p, g, tc)
    for step, lr in enumerate((0.01, 0.02, 0.03), start=1):
        if mode == "scalar":
            s._muon(lr)
            got = flat(layout, s.export_state()["weights"])
        else:
            muon.update([lr], step)
            got = p
        w0 = w0 * (1 - lr * tc.weight_decay)
        assert torch.equal(got, w0), step


@pytest.mark.parametrize("mode", ["scalar", "tensor"])
def test_clipping_is_exactly_the_update_of_the_scaled_gradient(mode):
    """Muon and AdamW with --grad-clip on gradient g step exactly as without it on
    g * min(1, clip / (|g| + 1e-6)), |g| the norm of the whole gradient, both groups."""
    config = tiny()
    weights = init_weights(config, random.Random(5))
    layout = FlatLayout(config.param_shapes())
    grads = some_grads(layout.numel, 6, count=4)
    clip = math.sqrt(layout.numel)
    results = []
    for tc in (TrainConfig(optimizer="muon", grad_clip=clip), MUON):
        s = ScalarGPT(config, weights, tc)
        p, g = flat(layout, weights), torch.zeros(layout.numel, dtype=F64)
        muon = FlatMuon(layout, p, g, tc)
        clipped = 0
        for step, grad in enumerate(grads, start=1):
            if tc.grad_clip == 0 and mode == "scalar":  # scale the gradient first, as the
                norm = math.sqrt(math.fsum(x * x for x in grad.tolist()))  # clip does
                grad = grad * min(1.0, clip / (norm + GRAD_CLIP_EPS))
            elif tc.grad_clip == 0:
                norm = torch.linalg.vector_norm(grad)
                grad = grad * torch.clamp(clip / (norm + GRAD_CLIP_EPS), max=1.0)
            else:
                clipped += float(torch.linalg.vector_norm(grad)) > clip
            if mode == "scalar":
                set_scalar_grads(s, grad)
                s._muon(0.01)
            else:
                g.copy_(grad)
                muon.update([0.01], step)
        if tc.grad_clip:
            assert 0 < clipped < len(grads)
        state = s.export_state() if mode == "scalar" else {"weights": layout.to_lists(p)}
        results.append(state["weights"])
    assert results[0] == results[1]


def test_a_clip_never_reached_changes_nothing_bit_for_bit():
    config = tiny()
    weights = init_weights(config, random.Random(7))
    layout = FlatLayout(config.param_shapes())
    grads = some_grads(layout.numel, 8, count=3)
    results = []
    for tc in (MUON, TrainConfig(optimizer="muon", grad_clip=1e6)):
        s = ScalarGPT(config, weights, tc)
        p, g = flat(layout, weights), torch.zeros(layout.numel, dtype=F64)
        muon = FlatMuon(layout, p, g, tc)
        for step, grad in enumerate(grads, start=1):
            set_scalar_grads(s, grad)
            s._muon(0.01)
            g.copy_(grad)
            muon.update([0.01], step)
        results.append((s.export_state()["weights"], p.tolist()))
    assert results[0] == results[1]


# training, checkpoints and errors, through the CLI ------------------------------------------------


def test_scalar_training_with_muon_lowers_the_loss_on_names(tmp_path):
    path = tmp_path / "m.jsonl"
    argv = ["train", "--mode", "scalar", "--optimizer", "muon", "--steps", "120", *SMALL]
    rc, out, err = run_cli(*argv, "--num-samples", "0", "--metrics", str(path))
    assert rc == 0, err
    losses, summary = read_metrics(path)
    assert summary["train_config"]["optimizer"] == "muon"
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first - 0.5, (first, last)
    assert summary["val_loss"] < 2.9


MODE_FLAGS = {"scalar": ["--mode", "scalar"], "tensor": ["--mode", "tensor", "--dtype", "float64"]}


def stop_after(steps: int, at: int, path, tc: TrainConfig, mode: str = "scalar") -> None:
    """Train towards `steps` (tensor mode: in float64), saving at step `at` and stopping right
    after."""
    from microgpt.modes import TensorOptions

    def stop(step, loss):
        if step == at + 1:
            raise KeyboardInterrupt

    config, prep = prepare(None, {"n_embd": 8, "n_head": 2}, tc)
    tensor = TensorOptions(device="cpu", dtype="float64") if mode == "tensor" else None
    with pytest.raises(KeyboardInterrupt):
        train(mode, config, tc, prep, tensor, out=path, save_every=at, on_step=stop)


@pytest.mark.parametrize("mode", ["scalar", "tensor"])
def test_muon_resumes_exactly_with_its_momentum(tmp_path, mode):
    """20 steps straight, and 10 + save + resume 10: the same losses, bit for bit, and the
    same samples; the checkpoint holds the momentum, non-zero, as format 3."""
    full, resumed, ckpt = tmp_path / "full.jsonl", tmp_path / "resumed.jsonl", tmp_path / "c"
    common = ["--optimizer", "muon", "--weight-decay", "0.1", "--grad-clip", "1.0"]
    common += MODE_FLAGS[mode]
    rc, _, err = run_cli(
        "train", "--steps", "20", *common, *SMALL, "--num-samples", "4", "--metrics", str(full)
    )
    assert rc == 0, err
    tc = TrainConfig(
        steps=20, optimizer="muon", weight_decay=0.1, grad_clip=1.0, val_docs=50, eval_docs=50
    )
    stop_after(20, 10, ckpt, tc, mode)
    saved = checkpoint.load(ckpt)
    assert saved.step == 10 and saved.train.optimizer == "muon"
    assert sorted(saved.state["momentum"]) == sorted(muon_matrices(saved.model.param_shapes()))
    assert any(x for m in saved.state["momentum"].values() for row in m for x in row)
    assert json.loads(tensorfile.loads(ckpt.read_bytes())[1]["version"]) == 3
    rc, _, err = run_cli(
        "train", "--resume", str(ckpt), *MODE_FLAGS[mode], "--num-samples", "4",
        "--metrics", str(resumed),
    )  # fmt: skip
    assert rc == 0, err
    (losses_full, summary_full), (losses_resumed, summary_resumed) = (
        read_metrics(full),
        read_metrics(resumed),
    )
    assert len(losses_full) == 20 and losses_resumed == losses_full
    assert summary_resumed["samples"] == summary_full["samples"]
    samples = []  # either mode samples a Muon checkpoint: sampling needs no optimizer
    for mode in (["--mode", "scalar"], ["--mode", "tensor", "--dtype", "float64"]):
        rc, out, err = run_cli("sample", "--checkpoint", str(ckpt), *mode, "--num-samples", "5")
        assert rc == 0, err
        samples.append(out)
    assert samples[0] == samples[1] and len(samples[0].splitlines()) == 5


def without_optimizer_fields(path) -> None:
    """Rewrite the checkpoint at `path` as one written before `optimizer` existed."""
    tensors, meta = tensorfile.loads(path.read_bytes())
    train_config = json.loads(meta["train_config"])
    del train_config["optimizer"], train_config["muon_momentum"]
    meta["train_config"] = json.dumps(train_config)
    tensorfile.write_atomic(path, tensorfile.dumps(tensors, meta))


def test_checkpoints_from_before_muon_load_and_resume_as_adamw(tmp_path):
    full, resumed, ckpt = tmp_path / "full.jsonl", tmp_path / "resumed.jsonl", tmp_path / "c"
    rc, _, err = run_cli(
        "train", "--steps", "16", *SMALL, "--num-samples", "3", "--metrics", str(full)
    )
    assert rc == 0, err
    stop_after(16, 8, ckpt, TrainConfig(steps=16, val_docs=50, eval_docs=50))
    tensors, meta = tensorfile.loads(ckpt.read_bytes())
    assert meta["version"] == "2" and not any(k.startswith("momentum.") for k in tensors)
    without_optimizer_fields(ckpt)
    old = checkpoint.load(ckpt)
    assert old.train.optimizer == "adamw" and set(old.state) == {"weights", "adam_m", "adam_v"}
    rc, _, err = run_cli(
        "train", "--resume", str(ckpt), "--num-samples", "3", "--metrics", str(resumed)
    )
    assert rc == 0, err
    assert read_metrics(resumed)[0] == read_metrics(full)[0]


def test_a_muon_checkpoint_without_its_momentum_is_refused_in_one_line(tmp_path):
    ckpt = tmp_path / "c"
    stop_after(6, 3, ckpt, TrainConfig(steps=6, optimizer="muon", val_docs=50, eval_docs=50))
    tensors, meta = tensorfile.loads(ckpt.read_bytes())
    del tensors["momentum.layer0.attn_wk"]
    ckpt.write_bytes(tensorfile.dumps(tensors, meta))
    with pytest.raises(UserError, match="corrupt or incompatible.*momentum.layer0.attn_wk"):
        checkpoint.load(ckpt)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--optimizer", "sgd"], "argument --optimizer: invalid choice: 'sgd'"),
        (["--optimizer", "muon", "--muon-momentum", "1"], "--muon-momentum must be in [0, 1)"),
        (["--muon-momentum", "0.9"], "--muon-momentum applies to --optimizer muon"),
    ],
)
def test_options_muon_cannot_take_are_one_line_before_training(argv, message):
    rc, out, err = run_cli("train", "--steps", "3", *SMALL, *argv)
    assert rc == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


# model-level parity, once tensor mode runs Muon ---------------------------------------------------


@pytest.mark.parametrize("design", DESIGNS.values(), ids=DESIGNS.keys())
def test_fifty_muon_steps_match_scalar_mode_from_the_same_state(design):
    """50 steps on the bundled names in float64, teacher-forced: before each step the tensor
    model takes the scalar model's state (weights, Adam's moments, Muon's momentum), so that
    every step is compared from the same state even where the trajectory is chaotic; each
    step's loss and the state after it within 1e-10 relative, per matrix."""
    from microgpt.modes import TensorOptions
    from microgpt.schedule import lr_at
    from microgpt.tensor import TensorGPT

    tc = TrainConfig(
        steps=50, seed=11, val_fraction=0.0, optimizer="muon", weight_decay=0.1, grad_clip=1.0
    )
    model = dict(n_layer=2, n_embd=8, n_head=2, block_size=8, **design)
    config, prep = prepare(None, model, tc)
    s = ScalarGPT(config, prep.weights, tc)
    t = TensorGPT(config, prep.weights, tc, TensorOptions(device="cpu", dtype="float64"))
    for step in range(tc.steps):
        t.load_state(s.export_state(), s.step)
        docs = [prep.tokenizer.encode_document(prep.split.train[step])]
        lr = lr_at(step, tc)
        want, got = s.train_step(docs, lr), t.train_step(docs, lr)
        assert abs(got - want) <= 1e-10 * abs(want), (step, got, want)
        got_state, want_state = t.export_state(), s.export_state()
        assert set(got_state) == set(want_state) == {"weights", "adam_m", "adam_v", "momentum"}
        for key, matrices in want_state.items():
            for name, m in matrices.items():
                err = relative_error(got_state[key][name], m)
                assert err <= 1e-10, (step, key, name, err)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_stack_of_muon_runs_trains_as_each_run_alone(batch_size):
    """Three runs with their own seeds and learning rates, weight decay and a clip that binds,
    trained 30 steps as one `Stack` and alone, in float64: every step's loss within 1e-12
    relative, the weights, Adam's moments and Muon's momentum within 1e-10 at the end."""
    from microgpt.modes import TensorOptions
    from microgpt.schedule import lr_at
    from microgpt.tensor import TensorGPT
    from microgpt.tensor.stack import Stack
    from microgpt.train import token_data

    options = TensorOptions(device="cpu", dtype="float64")
    shared = dict(steps=30, batch_size=batch_size, optimizer="muon", weight_decay=0.1)
    trains = [
        TrainConfig(seed=s, learning_rate=lr, grad_clip=0.5, **shared)
        for s, lr in ((0, 0.01), (1, 0.02), (2, 0.005))
    ]
    prepared = [prepare(None, {"n_embd": 8, "n_head": 2}, tc) for tc in trains]
    config = prepared[0][0]
    stack = Stack(config, [p.weights for _, p in prepared], trains, options)
    solos = [TensorGPT(config, p.weights, tc, options) for tc, (_, p) in zip(trains, prepared)]
    data = [token_data(p, tc, config.block_size)[0] for tc, (_, p) in zip(trains, prepared)]
    for step in range(30):
        docs, lrs = [d(step) for d in data], [lr_at(step, tc) for tc in trains]
        got = stack.stack_step(docs, lrs)
        for s, solo in enumerate(solos):
            want = solo.train_step(docs[s], lrs[s])
            assert abs(got[s] - want) <= 1e-12 * abs(want), (step, s, got[s], want)
    for s, solo in enumerate(solos):
        mine = {"weights": stack.flat, **stack.optimizer.state()}
        its = {"weights": solo.flat, **solo.optimizer.state()}
        assert set(mine) == {"weights", "adam_m", "adam_v", "momentum"}
        for key in mine:
            assert relative_error(mine[key][s], its[key]) <= 1e-10, (s, key)
