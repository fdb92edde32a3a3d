"""The logit soft-cap (`--logit-softcap`) and the initialisation switch (`--init`) beyond the
parity sweeps, which run both in every mode (`designs.py`): where the cap applies (training loss
and its z-loss, held-out losses, diagnostics, sampling), what `--init zero` draws and what its
first step does, checkpoints written before either existed, and bad values."""

import json
import math
import random
from dataclasses import replace

import pytest
from conftest import run_cli

from microgpt import checkpoint, tensorfile
from microgpt.ablate.plan import parse_vary
from microgpt.config import ModelConfig, TrainConfig
from microgpt.errors import UserError
from microgpt.init import SMALL_HEAD, init_weights
from microgpt.scalar.engine import Tape
from microgpt.scalar.model import ScalarGPT
from microgpt.train import prepare

SMALL = ["--n-embd", "8", "--n-head", "2", "--val-docs", "5", "--eval-docs", "5"]
PROJECTIONS = ("attn_wo", "mlp_fc2")


def tiny(**model) -> ModelConfig:
    return ModelConfig(vocab_size=6, n_layer=2, n_embd=8, n_head=2, block_size=6, **model)


def random_docs(rng: random.Random, count: int) -> list[list[int]]:
    return [[5, *(rng.randrange(5) for _ in range(rng.randint(1, 8))), 5] for _ in range(count)]


def float64():
    from microgpt.modes import TensorOptions

    return TensorOptions(device="cpu", dtype="float64", threads=1)


def scalar_grads(gpt: ScalarGPT, docs) -> tuple[float, dict]:
    with Tape() as tape:
        loss = gpt.batch_loss(docs)
    tape.backward(loss)
    return loss.data, {
        name: [[p.grad for p in row] for row in m] for name, m in gpt.weights.items()
    }


def largest(m) -> float:
    return max(abs(x) for row in m for x in row)


# --init zero -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_zero_init_draws_the_reference_stream_then_zeroes_and_shrinks(tied):
    """Every weight drawn as the reference draws it, so the stream and every other matrix are
    the reference's; then the output projections 0 and the head times 1/80 (std 0.001). A tied
    head is wte, which keeps its draws."""
    ref_rng, zero_rng = random.Random(5), random.Random(5)
    ref = init_weights(tiny(tie_lm_head=tied), ref_rng)
    zero = init_weights(tiny(tie_lm_head=tied, init="zero"), zero_rng)
    assert zero_rng.getstate() == ref_rng.getstate()  # sampling continues from the same place
    assert zero.keys() == ref.keys() and ("lm_head" in zero) is not tied
    for name, m in zero.items():
        if name.endswith(PROJECTIONS):
            assert all(x == 0.0 for row in m for x in row), name
            assert largest(ref[name]) > 0
        elif name == "lm_head":
            assert m == [[x * SMALL_HEAD for x in row] for row in ref[name]]
        else:
            assert m == ref[name], name
    # the full-size head: its standard deviation is 0.001 (27 x 16 draws)
    heads = [prepare(None, {"init": init}, TrainConfig())[1] for init in ("gaussian", "zero")]
    assert heads[0].rng.getstate() == heads[1].rng.getstate()
    flat = [x for row in heads[1].weights["lm_head"] for x in row]
    assert 0.0008 < math.sqrt(sum(x * x for x in flat) / len(flat)) < 0.0012


def first_step(model: dict, mode: str, head=None):
    """The first step's loss and gradients on the first training name, seed 42."""
    tc = TrainConfig(steps=10)
    config, prep = prepare(None, model, tc)
    weights = prep.weights
    if head is not None:
        weights = {**weights, "lm_head": head(weights["lm_head"])}
    docs = [prep.tokenizer.encode_document(prep.split.train[0])]
    if mode == "scalar":
        return scalar_grads(ScalarGPT(config, weights, tc), docs)
    from microgpt.tensor import TensorGPT

    gpt = TensorGPT(config, weights, tc, float64())
    return gpt.compute_grad(docs).item(), gpt.layout.to_lists(gpt.grad)


@pytest.mark.parametrize("mode", ["scalar", "tensor"])
def test_the_first_step_of_a_zero_init_run(mode):
    """The projections get a gradient at once; what they feed (q, k, v, mlp_fc1) gets none
    until they have moved, one step later. The first loss is ln V give or take the small head's
    logits (about 0.004): 3.296120 against ln 27 = 3.295837 (the reference's: 3.365967); with
    the head zeroed as well it is ln V to the last digits."""
    if mode == "tensor":
        pytest.importorskip("torch")
    ln_v = math.log(27)
    loss, grads = first_step({"init": "zero", "n_layer": 2}, mode)
    for i in range(2):
        for name in PROJECTIONS:
            assert largest(grads[f"layer{i}.{name}"]) > 1e-5  # small: the head is
        for name in ("attn_wq", "attn_wk", "attn_wv", "mlp_fc1"):
            assert largest(grads[f"layer{i}.{name}"]) == 0.0
    assert largest(grads["lm_head"]) > 1e-2 and largest(grads["wte"]) > 1e-6
    assert f"{loss:.6f}" == "3.296120"
    assert 1e-5 < loss - ln_v < 1e-3
    reference, _ = first_step({}, mode)
    assert f"{reference:.6f}" == "3.365967"
    zero_head, grads = first_step({"init": "zero"}, mode, head=lambda m: [[0.0] * 16] * len(m))
    assert zero_head == pytest.approx(ln_v, rel=1e-15, abs=0)
    assert largest(grads["wte"]) == 0.0  # a zero head passes nothing back


def test_a_zero_init_run_gets_going():
    """After one step every matrix has a gradient, and the loss falls over 30 steps."""
    tc = TrainConfig(steps=30)
    config, prep = prepare(None, {"init": "zero"}, tc)
    gpt = ScalarGPT(config, prep.weights, tc)
    enc = prep.tokenizer.encode_document
    losses = [gpt.train_step([enc(prep.split.train[0])], 0.01)]
    _, grads = scalar_grads(gpt, [enc(prep.split.train[1])])
    assert all(largest(m) > 0 for m in grads.values())
    for p in gpt.params:
        p.grad = 0.0
    losses += [gpt.train_step([enc(prep.split.train[s])], 0.01) for s in range(1, 30)]
    assert sum(losses[-10:]) / 10 < losses[0] - 0.2


# --logit-softcap --------------------------------------------------------------------------------


def capped(z: list[float], cap: float) -> list[float]:
    return [cap * math.tanh(x / cap) for x in z]


def test_the_softcap_is_in_the_loss_its_z_term_and_the_held_out_losses():
    """With cap C the logits are C tanh(z / C) of the uncapped model's z; the training loss,
    its z-loss term (log Z of the capped logits) and both held-out losses are of those."""
    cap, c = 1.5, 0.2
    config = tiny(logit_softcap=cap)
    weights = init_weights(config, random.Random(2))
    gpt = ScalarGPT(config, weights, TrainConfig(z_loss=c))
    raw = ScalarGPT(replace(config, logit_softcap=0.0), weights, TrainConfig())
    doc = random_docs(random.Random(3), 1)[0]
    n = min(len(doc) - 1, config.block_size)
    logits = [gpt.logits(doc[: i + 1]) for i in range(n)]
    for i in range(n):
        assert logits[i] == pytest.approx(capped(raw.logits(doc[: i + 1]), cap), rel=1e-14)
        assert max(map(abs, logits[i])) < cap
    log_z = [math.log(sum(math.exp(x) for x in z)) for z in logits]
    nll = [lz - z[doc[i + 1]] for i, (z, lz) in enumerate(zip(logits, log_z))]
    want = sum(nll) / n
    assert gpt.eval_loss([doc]) == pytest.approx(want, rel=1e-13)
    assert gpt.eval_token_loss([doc])[0] == pytest.approx(sum(nll), rel=1e-13)
    z_term = c * sum(lz**2 for lz in log_z) / n
    assert gpt.batch_loss([doc]).data == pytest.approx(want + z_term, rel=1e-13)
    assert abs(raw.eval_loss([doc]) - want) > 1e-3  # the cap changes the figures


def test_tensor_diagnostics_report_the_capped_logits():
    pytest.importorskip("torch")
    from microgpt.tensor import TensorGPT

    cap = 0.3  # below the tiny model's largest raw logits
    config = tiny(logit_softcap=cap)
    weights = init_weights(config, random.Random(4))
    docs = random_docs(random.Random(5), 3)
    gpt = TensorGPT(config, weights, TrainConfig(), float64())
    raw = TensorGPT(replace(config, logit_softcap=0.0), weights, TrainConfig(), float64())
    _, mean, top = gpt.diagnostics(docs)
    _, raw_mean, raw_top = raw.diagnostics(docs)
    assert raw_top > cap > top == pytest.approx(cap * math.tanh(raw_top / cap), rel=1e-12)
    every = [x for d in docs for i in range(min(len(d) - 1, 6)) for x in gpt.logits(d[: i + 1])]
    assert top == max(every) and mean == pytest.approx(sum(every) / len(every), rel=1e-12)


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-5), ("bfloat16", 0.05)])
def test_the_softcap_in_low_precision(dtype, tolerance):
    """float32, and bfloat16 (whose logits and their cap are float32): ten steps within the
    tolerance of float64's losses."""
    pytest.importorskip("torch")
    from microgpt.modes import TensorOptions
    from microgpt.tensor import TensorGPT

    config = tiny(logit_softcap=2.0)
    weights = init_weights(config, random.Random(6))
    low = TensorGPT(config, weights, TrainConfig(), TensorOptions(device="cpu", dtype=dtype))
    high = TensorGPT(config, weights, TrainConfig(), float64())
    rng = random.Random(7)
    for _ in range(10):
        docs = random_docs(rng, 4)
        want = high.train_step(docs, 0.02)
        assert abs(low.train_step(docs, 0.02) - want) <= tolerance * want


def test_sampling_uses_the_checkpoints_softcap(tmp_path):
    """The samples a soft-capped run prints are drawn from its capped logits: `sample` from its
    checkpoint prints them again in either mode, and the same weights without the cap (the
    checkpoint rewritten) draw others."""
    pytest.importorskip("torch")
    ckpt = tmp_path / "capped.safetensors"
    rc, out, err = run_cli(
        "train", "--steps", "20", *SMALL, "--logit-softcap", "1", "--num-samples", "8",
        "--out", str(ckpt),
    )  # fmt: skip
    assert rc == 0, err
    printed = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("sample ")]
    assert len(printed) == 8
    assert checkpoint.load(ckpt).model.logit_softcap == 1.0
    for mode in (["--mode", "scalar"], ["--mode", "tensor", "--dtype", "float64"]):
        rc, out, err = run_cli("sample", "--checkpoint", str(ckpt), *mode, "--num-samples", "8")
        assert rc == 0, err
        assert out.splitlines() == printed
    tensors, meta = tensorfile.loads(ckpt.read_bytes())
    model = json.loads(meta["model_config"]) | {"logit_softcap": 0.0}
    uncapped = tmp_path / "uncapped.safetensors"
    uncapped.write_bytes(tensorfile.dumps(tensors, {**meta, "model_config": json.dumps(model)}))
    rc, out, err = run_cli("sample", "--checkpoint", str(uncapped), "--num-samples", "8")
    assert rc == 0, err
    assert out.splitlines() != printed


# checkpoints, ablate, errors --------------------------------------------------------------------


def test_checkpoints_from_before_the_softcap_and_init_load_as_the_reference(tmp_path):
    """A checkpoint without logit_softcap and init: the reference's values (0, gaussian); it
    samples and resumes as the run that wrote it; a flag against its values is refused."""
    from microgpt.train import train

    ckpt, full = tmp_path / "run.safetensors", tmp_path / "full.safetensors"
    assert run_cli("train", "--steps", "4", *SMALL, "--out", str(full))[0] == 0
    tc = TrainConfig(steps=4, val_docs=5, eval_docs=5)
    config, prep = prepare(None, {"n_embd": 8, "n_head": 2}, tc)

    def stop(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # saved at step 2, stopped at 3
        train("scalar", config, tc, prep, None, out=ckpt, save_every=2, on_step=stop)
    tensors, meta = tensorfile.loads(ckpt.read_bytes())
    model = json.loads(meta["model_config"])
    assert model["logit_softcap"] == 0.0 and model["init"] == "gaussian"
    del model["logit_softcap"], model["init"]
    ckpt.write_bytes(tensorfile.dumps(tensors, {**meta, "model_config": json.dumps(model)}))
    old = checkpoint.load(ckpt)
    assert old.model.logit_softcap == 0.0 and old.model.init == "gaussian"
    rc, _, err = run_cli("train", "--resume", str(ckpt), "--logit-softcap", "3")
    assert rc == 2 and "--logit-softcap 3.0 differs from the checkpoint's 0.0" in err
    rc, _, err = run_cli("train", "--resume", str(ckpt))
    assert rc == 0, err
    assert checkpoint.load(ckpt).state == checkpoint.load(full).state


def test_ablate_varies_the_softcap_and_init_from_their_declarations():
    varied = parse_vary(["logit_softcap=0,15", "init"])
    assert varied == {"logit_softcap": (0.0, 15.0), "init": ("gaussian", "zero")}
    for spec, match in [
        ("logit_softcap=-1,15", "--vary logit_softcap: --logit-softcap '-1' is not 0 or more"),
        ("logit_softcap", "needs its values"),
        ("init=ones", "is not one of: gaussian, zero"),
    ]:
        with pytest.raises(UserError, match=match):
            parse_vary([spec])


@pytest.mark.parametrize(
    "argv,match",
    [
        (["train", "--logit-softcap", "-1"], "--logit-softcap must be 0 or more, got -1.0"),
        (["train", "--logit-softcap", "inf"], "--logit-softcap must be 0 or more, got inf"),
        (["train", "--logit-softcap", "nan"], "--logit-softcap must be 0 or more, got nan"),
        (["train", "--logit-softcap", "x"], "'x' is not a number"),
        (["train", "--init", "ones"], "invalid choice: 'ones'"),
        (["ablate", "--logit-softcap", "-2"], "--logit-softcap must be 0 or more, got -2.0"),
        (["ablate", "--vary", "logit_softcap=0,-3"], "--logit-softcap '-3' is not 0 or more"),
    ],
)
def test_bad_values_are_one_line_errors(argv, match, tmp_path):
    rc, out, err = run_cli(*argv, "--out", str(tmp_path / "out"))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err and match in err, err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_with_an_unknown_init_or_a_negative_cap_is_refused(tmp_path):
    ckpt = tmp_path / "run.safetensors"
    assert run_cli("train", "--steps", "2", *SMALL, "--out", str(ckpt))[0] == 0
    tensors, meta = tensorfile.loads(ckpt.read_bytes())
    model = json.loads(meta["model_config"])
    for change, match in [
        ({"init": "ones"}, "init = 'ones', which this microgpt does not know"),
        ({"logit_softcap": -1.0}, "is corrupt or incompatible (--logit-softcap must be 0 or"),
    ]:
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(
            tensorfile.dumps(tensors, {**meta, "model_config": json.dumps(model | change)})
        )
        rc, _, err = run_cli("sample", "--checkpoint", str(bad))
        assert rc == 2 and match in err, err
