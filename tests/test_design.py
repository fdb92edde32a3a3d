"""Design files (`microgpt.design`), their blocks (`tensor/blocks.py`), checks
(`tensor/design_check.py`) and autograd net (`tensor/design_net.py`).

- the file format: loading, its interface, settings, weights, one-line errors;
- every block against plain torch autograd, alone and over a stack's run axis, through the
  net's in-place gradient path too;
- the reference written as a design file (`examples/designs/reference.py`), a
  `design_net.DesignNet` in `TensorGPT` and `Stack`, against the hand-written model in
  float64: every step's loss within 1e-12 relative over 200 steps, the
  weights and Adam moments within 1e-10, batch 1 and 8, solo and stacked, with dropout, weight
  decay and clipping; each built-in switch's design the same, free-running and teacher-forced
  (each step from the hand-written run's state), but the chaotic one (`CHAOTIC`, as in
  `test_stack.py`) teacher-forced only;
- the honesty checks, each against a design broken on purpose;
- the example designs: they pass the checks, and their stacked runs are their solo runs.
"""

from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from designs import DESIGNS

from microgpt.config import REFERENCE_DESIGN, SWITCHES, ModelConfig, TrainConfig
from microgpt.design import Settings, Weight, load, normal, zeros
from microgpt.errors import UserError
from microgpt.init import init_weights

torch = pytest.importorskip("torch")

from microgpt.data import Tokenizer, read_documents  # noqa: E402
from microgpt.modes import TensorOptions  # noqa: E402
from microgpt.schedule import lr_at  # noqa: E402
from microgpt.tensor import Stack, TensorGPT, blocks  # noqa: E402
from microgpt.tensor.design_check import Checked, check  # noqa: E402
from microgpt.tensor.packing import Packer  # noqa: E402
from microgpt.train import prepare, token_data  # noqa: E402

# a stack's weight and its gradient are views strided by the run's whole buffer, a layout
# autograd warns about once (`design_net.py`)
pytestmark = pytest.mark.filterwarnings("ignore:grad and param do not obey")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "designs"
REFERENCE = EXAMPLES / "reference.py"
F64 = torch.float64
LOSS_REL = 1e-12  # a step's loss, relative (as test_stack.py)
STATE_REL = 1e-10  # weights and Adam moments, per matrix, relative to its largest entry
SIZES = dict(n_layer=2, n_embd=16, n_head=4)
RUNS = ((0, 0.01), (1, 0.003), (2, 0.02))  # each run's (seed, peak learning rate)
REGULARISED = dict(dropout=0.1, weight_decay=0.1, grad_clip=0.5)


def write(tmp_path: Path, text: str, name: str = "d.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def docs() -> list[list[int]]:
    """Six encoded names: a few rows of two or three documents each."""
    names = read_documents()
    tokenizer = Tokenizer.from_documents(names)
    return [tokenizer.encode_document(d) for d in names[:6]]


def config_for(**switches) -> ModelConfig:
    return ModelConfig(vocab_size=27, **SIZES, **switches)


# the file format ----------------------------------------------------------------------------------


SOFTCAP = """
import torch
from microgpt.tensor.blocks import reference_forward

settings = {"cap": 15.0}
switches = "all"

def forward(w, batch, config, s):
    logits = reference_forward(w, batch, config)
    return s.cap * torch.tanh(logits / s.cap)
"""


def test_load_reads_the_interface(tmp_path):
    path = write(tmp_path, SOFTCAP, "softcap.py")
    d = load(path)
    assert d.name == "softcap"  # the file's name, without .py
    assert d.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert d.settings == {"cap": 15.0}
    assert d.switches == tuple(REFERENCE_DESIGN)
    # a module name of its own: no other module is shadowed, and classes in the file work
    assert d.module.__name__.startswith("_microgpt_design_")
    assert sys.modules[d.module.__name__] is d.module
    path.write_text(SOFTCAP + "\n# edited\n")
    assert load(path).sha256 != d.sha256  # an edited file is another version


def test_settings_take_their_defaults_type(tmp_path):
    text = SOFTCAP.replace('{"cap": 15.0}', '{"cap": 15.0, "n": 2, "on": False, "kind": "a"}')
    d = load(write(tmp_path, text))
    s = d.resolve()
    assert (s.cap, s.n, s.on, s.kind) == (15.0, 2, False, "a")
    s = d.resolve({"cap": "30", "n": "3", "on": "yes", "kind": "b"})  # as on a command line
    assert (s.cap, s.n, s.on, s.kind) == (30.0, 3, True, "b")
    assert isinstance(s.cap, float)
    assert d.resolve({"cap": 7}).cap == 7.0  # an int for a float setting
    with pytest.raises(AttributeError):
        s.cap = 1.0  # read-only
    bad = [({"cap": "wide"}, "setting cap must be a number"), ({"n": "2.5"}, "an integer")]
    bad += [({"on": "maybe"}, "true or false"), ({"n": True}, "an integer")]
    bad += [({"cp": 1.0}, r"has no setting .cp. \(its settings: cap, n, on, kind\)")]
    for values, message in bad:
        with pytest.raises(UserError, match=message):
            d.resolve(values)


def test_a_switch_the_file_does_not_honour_is_refused(tmp_path):
    text = SOFTCAP.replace('switches = "all"', 'switches = ["qk_norm"]')
    d = load(write(tmp_path, text, "capped.py"))
    d.check_config(config_for(qk_norm=True))  # honoured
    with pytest.raises(UserError, match=r"design capped .* does not honour --position rope"):
        d.check_config(config_for(position="rope"))
    plain = load(write(tmp_path, SOFTCAP.replace('switches = "all"', ""), "plain.py"))
    plain.check_config(config_for())  # every switch at the reference's value
    with pytest.raises(UserError, match="does not honour --mlp-activation gelu"):
        plain.check_config(config_for(mlp_activation="gelu"))


BAD_FILES = {
    "syntax": ("def forward(w, batch, config, s)\n    return 1\n", "does not import: SyntaxError"),
    "raises": (
        "import os\nx = 1 / 0\n",
        r"does not import: ZeroDivisionError: division by zero "
        r"\(line 2\)",
    ),
    "no forward": ("x = 1\n", "defines no forward"),
    "arity": ("def forward(w, batch):\n    pass\n", "forward must take four arguments"),
    "settings": ("settings = [1]\ndef forward(w, b, c, s): pass\n", "settings must be a dict"),
    "setting type": (
        "settings = {'a': [1]}\ndef forward(w, b, c, s): pass\n",
        "setting a's default must be a bool, int, float or str",
    ),
    "switch": ("switches = ['qknorm']\ndef forward(w, b, c, s): pass\n", "'qknorm' is not one of"),
    "name": ("name = 'a b'\ndef forward(w, b, c, s): pass\n", "is not a label"),
    "weights": ("weights = {}\ndef forward(w, b, c, s): pass\n", "weights must be a function"),
    "reserved": ("settings = {'keys': 1}\ndef forward(w, b, c, s): pass\n", "the name is taken"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_one_line(tmp_path, case):
    text, message = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=message) as e:
        load(path)
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(f"design file {path}")


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load(tmp_path / "none.py")
    path = tmp_path / "latin.py"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load(path)


def test_weights_draw_after_the_reference(tmp_path):
    """The reference's weights are the reference's own for the seed; the file's new weights
    come after them in the stream, in the order listed; a zero-initialised one draws nothing."""
    text = (
        SOFTCAP
        + """
from microgpt.design import normal, zeros

def weights(config, s):
    return {"layer0.attn_wo": zeros(config.n_embd, config.n_embd),
            "extra": normal(2, 3, std=0.5), "gain": normal(1, 3)}
"""
    )
    d = load(write(tmp_path, text))
    config, s = config_for(), d.resolve()
    got = d.initial_weights(config, s, random.Random(7))
    rng = random.Random(7)
    want = init_weights(config, rng)
    assert list(got) == [*want, "extra", "gain"] == list(d.shapes(config, s))
    for name in want:
        if name != "layer0.attn_wo":
            assert got[name] == want[name]
    assert got["layer0.attn_wo"] == [[0.0] * 16 for _ in range(16)]
    assert got["extra"] == [[rng.gauss(0, 0.5) for _ in range(3)] for _ in range(2)]
    assert got["gain"] == [[rng.gauss(0, 0.08) for _ in range(3)]]


@pytest.mark.parametrize(
    "body,message",
    [
        ('{"layer0.attn_wo": zeros(3, 3)}', "re-initialised it keeps that shape"),
        ('{"x": [[0.0]]}', "give normal"),
        ('{"a b": zeros(1, 1)}', "is not a weight name"),
        ("[1]", "returned list, not a dict"),
        ('{"x": zeros(0, 3)}', "positive integers"),
        ("1 / 0", r"weights failed: ZeroDivisionError: division by zero \(line \d+\)"),
    ],
)
def test_bad_weights_are_one_line(tmp_path, body, message):
    text = SOFTCAP + "\nfrom microgpt.design import zeros\n\ndef weights(config, s):\n"
    text += f"    return {body}\n"
    d = load(write(tmp_path, text))
    with pytest.raises(UserError, match=message):
        d.shapes(config_for(), d.resolve())


def test_weight_specs():
    assert normal(2, 3) == Weight(2, 3, std=0.08)
    assert zeros(2, 3).draw(random.Random(0)) == [[0.0] * 3] * 2
    assert Settings({"a": 1}) == {"a": 1}


# the blocks against plain torch autograd ----------------------------------------------------------


def packed(docs, runs: int | None):
    """A float64 batch of `docs` (in a stack, run s gets every runs-th document)."""
    packer = Packer(16, torch.device("cpu"), F64, F64)
    if runs is None:
        return blocks.design_batch(packer.pack(docs))
    return blocks.design_batch(packer.pack_runs([docs[s::runs] for s in range(runs)]))


def plain_attention(q, k, v, batch, H):
    """softmax(q kᵀ / sqrt(D) + mask) v per head, in plain torch ops."""
    *lead, N, C = q.shape
    R, W, D = batch.rows, batch.width, C // H
    S = lead[0] if lead else 1

    def heads(x):  # (*S, N, C) -> (S, R, H, W, D)
        return x.reshape(S, R, W, H, D).permute(0, 1, 3, 2, 4)

    mask = batch.mask.view(S, R, 1, W, W)
    att = torch.softmax(heads(q) @ heads(k).mT / D**0.5 + mask, dim=-1)
    y = (att @ heads(v)).permute(0, 1, 3, 2, 4).reshape(*lead, N, C)
    return y


def plain_rope(x, positions, H):
    from microgpt.rope import rope_tables

    *lead, N, C = x.shape
    D = C // H
    cos, sin = (torch.tensor(t, dtype=F64)[positions] for t in rope_tables(D, 16))
    x = x.unflatten(-1, (H, D))
    a, b = x[..., : D // 2], x[..., D // 2 :]
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2)


def plain_rmsnorm(x):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)


def plain_mlp(x, fc1, fc2, activation):
    act = {
        "relu": torch.relu,
        "relu2": lambda h: torch.relu(h) ** 2,
        "gelu": lambda h: torch.nn.functional.gelu(h, approximate="tanh"),
    }[activation]
    return act(x @ fc1.mT) @ fc2.mT


def plain_self_attention(x, wq, wk, wv, wo, batch, H, qk_norm, rope, norm):
    if norm:
        x = plain_rmsnorm(x)
    q, k, v = x @ wq.mT, x @ wk.mT, x @ wv.mT
    if qk_norm:
        q = plain_rmsnorm(q.unflatten(-1, (H, -1))).flatten(-2)
        k = plain_rmsnorm(k.unflatten(-1, (H, -1))).flatten(-2)
    if rope:
        q, k = plain_rope(q, batch.positions, H), plain_rope(k, batch.positions, H)
    return plain_attention(q, k, v, batch, H) @ wo.mT


def plain_embed(table, index):
    if table.dim() == 2:
        return table[index]
    return torch.stack([t[i] for t, i in zip(table, index)])


def weights_of(shapes: dict, lead: tuple, sinks: bool, seed: int = 0) -> dict:
    """Random float64 weights (*lead, rows, cols) as leaves; with `sinks`, views of one flat
    buffer whose `.grad` is preset to views of one flat gradient, as the net makes them."""
    g = torch.Generator().manual_seed(seed)
    sizes = [r * c for r, c in shapes.values()]
    flat = torch.randn(*lead, sum(sizes), generator=g, dtype=F64) * 0.3
    grad = torch.zeros_like(flat)
    out, start = {}, 0
    for (name, (r, c)), n in zip(shapes.items(), sizes):
        w = flat[..., start : start + n].unflatten(-1, (r, c))
        if sinks:
            w.requires_grad_()
            w.grad = grad[..., start : start + n].unflatten(-1, (r, c))
        else:
            w = w.clone().requires_grad_()
        out[name] = w
        start += n
    return out


CASES = {
    "linear": lambda x, w, b: (blocks.linear(x, w["a"]), x @ w["a"].mT),
    "rmsnorm": lambda x, w, b: (blocks.rmsnorm(x) * w["g"], plain_rmsnorm(x) * w["g"]),
    "rmsnorm heads": lambda x, w, b: (
        blocks.rmsnorm(x, 4),
        plain_rmsnorm(x.unflatten(-1, (4, -1))).flatten(-2),
    ),
    "embed": lambda x, w, b: (
        blocks.embed(w["t"], b.tokens) * x,
        plain_embed(w["t"], b.tokens) * x,
    ),
    "rope": lambda x, w, b: (blocks.rope(x, b, 4), plain_rope(x, b.positions, 4)),
    "attention": lambda x, w, b: (
        blocks.attention(x @ w["a"].mT, x, x * 2, b, 4),
        plain_attention(x @ w["a"].mT, x, x * 2, b, 4),
    ),
    "dropout off": lambda x, w, b: (blocks.dropout(x, b), x),
}
for act in ("relu", "relu2", "gelu"):
    for norm in (False, True):
        CASES[f"mlp {act}{' norm' if norm else ''}"] = lambda x, w, b, a=act, n=norm: (
            blocks.mlp(x, w["f1"], w["f2"], a, norm=n),
            plain_mlp(plain_rmsnorm(x) if n else x, w["f1"], w["f2"], a),
        )
for qk in (False, True):
    for rp in (False, True):
        for norm in (False, True):
            label = f"self_attention{' qk' if qk else ''}{' rope' if rp else ''}"
            label += " norm" if norm else ""
            CASES[label] = lambda x, w, b, q=qk, r=rp, n=norm: (
                blocks.self_attention(x, w["a"], w["b"], w["c"], w["o"], b, 4, q, r, n),
                plain_self_attention(x, w["a"], w["b"], w["c"], w["o"], b, 4, q, r, n),
            )
BLOCK_SHAPES = {
    "a": (16, 16), "b": (16, 16), "c": (16, 16), "o": (16, 16), "g": (1, 16),
    "t": (27, 16), "f1": (24, 16), "f2": (16, 24),
}  # fmt: skip


@pytest.mark.parametrize("runs", [None, 3], ids=["solo", "stack3"])
@pytest.mark.parametrize("sinks", [False, True], ids=["autograd", "net"])
@pytest.mark.parametrize("case", list(CASES))
def test_block_against_plain_autograd(case, sinks, runs, docs):
    """The block's output, and the gradients of its input and weights, against the same
    function in plain torch ops: alone and over a stack's run axis; with the weights as
    autograd leaves, and as the net's leaves (gradients added into the flat buffer)."""
    batch = packed(docs, runs)
    lead = (runs,) if runs else ()
    N = batch.tokens.shape[-1]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*lead, N, 16, generator=g, dtype=F64).requires_grad_()
    dy = torch.randn(*lead, N, 16, generator=g, dtype=F64)
    w = weights_of(BLOCK_SHAPES, lead, sinks)
    ref = {n: t.detach().clone().requires_grad_() for n, t in w.items()}
    x_ref = x.detach().clone().requires_grad_()
    got, _ = CASES[case](x, w, batch)
    _, want = CASES[case](x_ref, ref, batch)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
    got.backward(dy)
    want.backward(dy)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-11, atol=1e-12)
    for name, t in w.items():
        expected = ref[name].grad
        if expected is None:  # a weight the case does not use
            assert t.grad is None or not bool(t.grad.any()), name
            continue
        torch.testing.assert_close(t.grad, expected, rtol=1e-11, atol=1e-12, msg=name)


def test_blocks_pass_gradcheck(docs):
    """Finite differences, float64, on the blocks that are autograd Functions."""
    batch = packed(docs[:2], None)
    N = batch.tokens.shape[-1]
    g = torch.Generator().manual_seed(2)

    def leaf(*shape):
        return torch.randn(*shape, generator=g, dtype=F64).requires_grad_()

    x, a, b, c, o = leaf(N, 8), leaf(8, 8), leaf(8, 8), leaf(8, 8), leaf(8, 8)
    f1, f2, table = leaf(12, 8), leaf(8, 12), leaf(27, 8)
    checks = [
        (lambda x: blocks.rmsnorm(x), (x,)),
        (lambda x, a, b, c, o: blocks.self_attention(x, a, b, c, o, batch, 2, True, True, True),
         (x, a, b, c, o)),
        (lambda x, f1, f2: blocks.mlp(x, f1, f2, "gelu", norm=True), (x, f1, f2)),
        (lambda t: blocks.embed(t, batch.tokens), (table,)),
        (lambda x: blocks.rope(x, batch, 2), (x,)),
        (lambda x, a: blocks.attention(x @ a.mT, x, x, batch, 2), (x, a)),
        (lambda x, a: blocks.linear(x, a), (x, a)),
    ]  # fmt: skip
    for f, inputs in checks:
        assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8)


def test_dropout_draws_the_runs_own_masks(docs):
    """With dropout, a stack's blocks draw each run's masks as its solo run does: the reference
    forward of a stack equals each run's solo forward, mask for mask."""
    from microgpt.tensor.stack import RunGenerators

    config = config_for()
    shapes = config.param_shapes()
    packer = Packer(16, torch.device("cpu"), F64, F64)
    halves = [docs[0::2], docs[1::2]]
    w = weights_of(shapes, (2,), sinks=False)
    stacked = packer.pack_runs(halves)
    rng = RunGenerators(2, torch.device("cpu"))
    rng.start([11, 12], stacked)
    with torch.no_grad():
        got = blocks.reference_forward(w, blocks.design_batch(stacked, 0.3, rng), config)
        for s, half in enumerate(halves):
            solo = packer.pack(half, per_token=False)
            gen = torch.Generator().manual_seed(11 + s)
            ws = {n: t[s] for n, t in w.items()}
            want = blocks.reference_forward(ws, blocks.design_batch(solo, 0.3, gen), config)
            r, width = solo.rows, solo.width
            mine = got[s].view(stacked.rows, stacked.width, -1)[:r, :width].reshape(r * width, -1)
            torch.testing.assert_close(mine, want, rtol=1e-13, atol=1e-14)


# the net: gradients in place, evaluation ---------------------------------------------------------


@pytest.fixture(scope="module")
def reference_file():
    return load(REFERENCE)


def checked_for(file, config: ModelConfig, docs) -> Checked:
    return check(file, config, file.resolve(), docs)


def options(dtype: str = "float64") -> TensorOptions:
    return TensorOptions(device="cpu", dtype=dtype, threads=1)


@pytest.mark.parametrize("stacked", [False, True], ids=["solo", "stack"])
def test_gradients_accumulate_in_place(reference_file, docs, stacked):
    """After a step every weight's `.grad` is still its view of the flat gradient buffer (no
    copy anywhere), and the buffer holds autograd's gradient of the loss."""
    c = checked_for(reference_file, config_for(), docs)
    _, prep = prepare(None, SIZES, TrainConfig())
    tcs = [TrainConfig(seed=s) for s in range(2)]
    net = c.net(options())
    if stacked:
        gpt = Stack(c.config, [prep.weights] * 2, tcs, options(), net)
        loss = torch.tensor(gpt.stack_step([docs[:3], docs[3:]], [0.0, 0.0]), dtype=F64)
    else:
        gpt = TensorGPT(c.config, prep.weights, tcs[0], options(), net)
        loss = gpt.compute_grad(docs[:3])
    views = gpt.layout.views(gpt.grad)
    for name, leaf in gpt.views.w.items():
        assert leaf.grad.data_ptr() == views[name].data_ptr(), name
        assert leaf.grad.stride() == views[name].stride(), name
    assert float(gpt.grad.abs().max()) > 0
    # the same gradient from autograd alone, on fresh leaves
    fresh = {n: t.detach().clone().requires_grad_() for n, t in gpt.views.w.items()}
    packer = gpt.packer
    batch = packer.pack_runs([docs[:3], docs[3:]]) if stacked else packer.pack(docs[:3])
    want_loss = blocks.cross_entropy(c.forward(fresh, blocks.design_batch(batch)), batch)
    grads = torch.autograd.grad(want_loss.sum(), list(fresh.values()))
    torch.testing.assert_close(loss.view(-1), want_loss.detach().view(-1), rtol=1e-14, atol=0)
    for (name, want), got in zip(zip(fresh, grads), views.values()):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15, msg=name)


def test_evaluation_equals_the_hand_written_model(reference_file, docs):
    """eval_loss, eval_token_loss, logits, diagnostics and run_model of the reference design
    against TensorGPT's, float64, after a few steps."""
    c = checked_for(reference_file, config_for(), docs)
    tc = TrainConfig(seed=3)
    _, prep = prepare(None, SIZES, tc)
    hand = TensorGPT(c.config, prep.weights, tc, options())
    mine = TensorGPT(c.config, prep.weights, tc, options(), c.net(options()))
    for step in range(5):
        hand.train_step(docs[step : step + 2], 0.01)
        mine.train_step(docs[step : step + 2], 0.01)
    assert mine.eval_loss(docs) == pytest.approx(hand.eval_loss(docs), rel=1e-12)
    got, want = mine.eval_token_loss(docs), hand.eval_token_loss(docs)
    assert got[1] == want[1] and got[0] == pytest.approx(want[0], rel=1e-12)
    assert mine.logits(docs[0][:4]) == pytest.approx(hand.logits(docs[0][:4]), rel=1e-11)
    assert mine.diagnostics(docs) == pytest.approx(hand.diagnostics(docs), rel=1e-11)
    assert mine.export_state().keys() == hand.export_state().keys()
    trains = [tc, TrainConfig(seed=4)]
    stack = Stack(c.config, [prep.weights] * 2, trains, options(), c.net(options()))
    stack.stack_step([docs[:2], docs[2:4]], [0.01, 0.01])
    solo = stack.run_model(1)
    assert solo.net is stack.net and solo.step == 1
    assert torch.equal(solo.flat, stack.flat[1])
    stack.keep_runs([1])
    assert stack.stack_step([docs[4:]], [0.01]) == pytest.approx(
        [solo.train_step(docs[4:], 0.01)], rel=1e-12
    )


def test_bfloat16_and_float32_train(reference_file, docs):
    """bfloat16 (float32 master weights; gradients added after the backward) and float32 run
    and stay near float64."""
    c = checked_for(reference_file, config_for(), docs)
    tc = TrainConfig()
    _, prep = prepare(None, SIZES, tc)
    losses = {}
    for dtype in ("float64", "float32", "bfloat16"):
        gpt = TensorGPT(c.config, prep.weights, tc, options(dtype), c.net(options(dtype)))
        losses[dtype] = [gpt.train_step(docs[s % 6 : s % 6 + 2], 0.01) for s in range(10)]
    assert losses["float32"] == pytest.approx(losses["float64"], rel=1e-5)
    assert losses["bfloat16"] == pytest.approx(losses["float64"], rel=5e-2)


def test_compile_is_refused(reference_file, docs):
    c = checked_for(reference_file, config_for(), docs)
    _, prep = prepare(None, SIZES, TrainConfig())
    opts = TensorOptions(device="cpu", dtype="float64", compile=True)
    with pytest.raises(UserError, match="--compile"):
        TensorGPT(c.config, prep.weights, TrainConfig(), opts, c.net(opts))


# the reference as a design file against the hand-written model, float64 --------------------------


@dataclass
class Runs:
    """Runs of one shape as `microgpt train` makes them (as test_stack.py)."""

    config: ModelConfig
    trains: list[TrainConfig]
    weights: list[dict]
    step_docs: list

    def docs(self, step: int):
        return [d(step) for d in self.step_docs]

    def lrs(self, step: int):
        return [lr_at(step, tc) for tc in self.trains]


def make_runs(switches: dict, batch: int, steps: int, runs=RUNS, **train) -> Runs:
    trains = [
        TrainConfig(steps=steps, batch_size=batch, seed=seed, learning_rate=lr, **train)
        for seed, lr in runs
    ]
    prepared = [prepare(None, {**SIZES, **switches}, tc) for tc in trains]
    config = prepared[0][0]
    data = [token_data(p, tc, config.block_size)[0] for (_, p), tc in zip(prepared, trains)]
    return Runs(config, trains, [p.weights for _, p in prepared], data)


def relative_error(got, want) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


def buffers(gpt) -> list:
    """The weights and the optimizer's state (Adam's moments) of a model or stack."""
    return [gpt.flat, *gpt.optimizer.state().values()]


def state_error(mine, want, s=None, t=None) -> float:
    """The largest relative error, per matrix, of the weights and Adam moments of `mine`
    (run s of it, if a stack) against `want`'s (run t of it, if a stack)."""
    worst = 0.0
    for a, b in zip(buffers(mine), buffers(want)):
        a = a if s is None else a[s]
        b = b if t is None else b[t]
        got, expected = mine.layout.views(a), want.layout.views(b)
        worst = max(worst, *(relative_error(got[n], expected[n]) for n in want.layout.shapes))
    return worst


def design_pair(file, runs: Runs, stacked: bool, docs):
    """The hand-written model and the design file's, from the same initial weights."""
    c = checked_for(file, runs.config, docs)
    assert c.shapes == runs.config.param_shapes()  # the reference's layout, in its order
    opts = options()
    if stacked:
        hand = Stack(runs.config, runs.weights, runs.trains, opts)
        mine = Stack(runs.config, runs.weights, runs.trains, opts, c.net(opts))
    else:
        hand = TensorGPT(runs.config, runs.weights[0], runs.trains[0], opts)
        mine = TensorGPT(runs.config, runs.weights[0], runs.trains[0], opts, c.net(opts))
    return hand, mine


def step_both(hand, mine, runs: Runs, step: int, stacked: bool) -> None:
    if stacked:
        docs, lrs = runs.docs(step), runs.lrs(step)
        want, got = hand.stack_step(docs, lrs), mine.stack_step(docs, lrs)
    else:
        docs, lr = runs.docs(step)[0], runs.lrs(step)[0]
        want, got = [hand.train_step(docs, lr)], [mine.train_step(docs, lr)]
    for g, w in zip(got, want):
        assert abs(g - w) <= LOSS_REL * abs(w), (step, g, w)


STACKED = pytest.mark.parametrize("stacked", [False, True], ids=["solo", "stacked"])
BATCHES = pytest.mark.parametrize("batch", [1, 8], ids=["batch1", "batch8"])


def assert_free_running(reference_file, runs, stacked, docs, steps):
    """`steps` free-running steps of the hand-written model and the file's from the same
    weights; then each run's weights and moments within STATE_REL (step losses: `step_both`)."""
    hand, mine = design_pair(reference_file, runs, stacked, docs)
    for step in range(steps):
        step_both(hand, mine, runs, step, stacked)
    for s in range(len(RUNS)) if stacked else [None]:
        assert state_error(mine, hand, s, s) <= STATE_REL


@STACKED
@BATCHES
def test_reference_file_is_the_hand_written_model(reference_file, docs, batch, stacked):
    """The issue's check: examples/designs/reference.py, 200 free-running steps, float64,
    with dropout, weight decay and clipping; three runs of different seeds and learning rates
    when stacked: every step's loss within 1e-12, the final weights and moments within 1e-10."""
    runs = make_runs({}, batch, 200, **REGULARISED)
    assert_free_running(reference_file, runs, stacked, docs, 200)


@STACKED
def test_reference_file_with_z_loss_and_the_token_average(reference_file, docs, stacked):
    """The loss's other settings (z-loss, --loss-average token) reach a design's step as the
    hand-written model's: 50 free-running steps at batch 8."""
    runs = make_runs({}, 8, 50, z_loss=1e-3, loss_average="token", **REGULARISED)
    assert_free_running(reference_file, runs, stacked, docs, 50)


# as in test_stack.py: designs whose free-running float64 runs are chaotic (a run at learning
# rate 0.02 amplifies the last bits of the CPU's kernels past 1e-12 within 200 steps, in the
# hand-written stack against its own solo runs too): compared teacher-forced only, below
CHAOTIC = {"all"}


def free_running_cases():
    for design in DESIGNS:
        if design in CHAOTIC:
            continue
        for stacked in (False, True):
            label = f"{design}-{'stacked' if stacked else 'solo'}"
            yield pytest.param(design, stacked, id=label, marks=pytest.mark.slow)


@BATCHES
@pytest.mark.parametrize("design,stacked", list(free_running_cases()))
def test_each_switch_through_the_file_free_running(reference_file, docs, design, stacked, batch):
    """Every built-in switch's design but the chaotic one through reference.py, free-running
    over 200 steps."""
    runs = make_runs(DESIGNS[design], batch, 200, **REGULARISED)
    assert_free_running(reference_file, runs, stacked, docs, 200)


@STACKED
@BATCHES
@pytest.mark.parametrize("design", [pytest.param(d, marks=pytest.mark.slow) for d in DESIGNS])
def test_each_switch_through_the_file_is_the_hand_written_model(
    reference_file, docs, design, batch, stacked
):
    """Every built-in switch's design (`designs.DESIGNS`) through reference.py, teacher-forced
    over 200 steps (before each step the design takes the hand-written model's weights and
    moments): each step's loss within 1e-12, the state after it within 1e-10."""
    runs = make_runs(DESIGNS[design], batch, 200, **REGULARISED)
    hand, mine = design_pair(reference_file, runs, stacked, docs)
    for step in range(200):
        for mine_t, hand_t in zip(buffers(mine), buffers(hand)):
            mine_t.copy_(hand_t)
        step_both(hand, mine, runs, step, stacked)
        for s in range(len(RUNS)) if stacked else [None]:
            assert state_error(mine, hand, s, s) <= STATE_REL, (step, s)


BUILT_IN_TWINS = {  # an example design file, and the built-in settings that are the same model
    "softcap": {"logit_softcap": 15.0},  # softcap.py's default cap
    "zero_init": {"init": "zero"},
}


@STACKED
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("example", list(BUILT_IN_TWINS))
def test_the_built_in_softcap_and_zero_init_are_their_example_files(docs, example, tied, stacked):
    """`--logit-softcap 15` and `--init zero` of the hand-written model against
    examples/designs/softcap.py and zero_init.py, float64, batch 8, with dropout, weight decay
    and clipping, with an untied and a tied head (both files honour tie_lm_head; zero_init's
    small head is lm_head's, and a tied head is wte, which keeps its draws in both): the same
    initial weights (the file's drawn from the stream as a run draws them), every step's loss
    within 1e-12 over 200 free-running steps, the final weights and moments within 1e-10."""
    file = load(EXAMPLES / f"{example}.py")
    head = {"tie_lm_head": tied}
    built_in = make_runs({**BUILT_IN_TWINS[example], **head}, 8, 200, **REGULARISED)
    assert built_in.config.tie_lm_head == tied
    trains = built_in.trains
    preps = [prepare(None, {**SIZES, **head}, tc, file.run(file.resolve()))[1] for tc in trains]
    weights, c = [p.weights for p in preps], preps[0].design
    assert weights == built_in.weights  # the built-in init is the file's, draw for draw
    opts = options()
    if stacked:
        hand = Stack(built_in.config, built_in.weights, trains, opts)
        design = Stack(c.config, weights, trains, opts, c.net(opts))
    else:
        hand = TensorGPT(built_in.config, built_in.weights[0], trains[0], opts)
        design = TensorGPT(c.config, weights[0], trains[0], opts, c.net(opts))
    for step in range(200):
        step_both(hand, design, built_in, step, stacked)
    for s in range(len(RUNS)) if stacked else [None]:
        assert state_error(design, hand, s, s) <= STATE_REL


def test_blocks_reference_forward_is_the_file(reference_file, docs):
    """`blocks.reference_forward` (what the example designs build on) and reference.py give
    the same logits in every design."""
    for switches in DESIGNS.values():
        config = config_for(**switches)
        w = weights_of(config.param_shapes(), (), sinks=False)
        batch = packed(docs, None)
        with torch.no_grad():
            want = reference_file.bind(config, Settings({}))(w, batch)
            assert torch.equal(blocks.reference_forward(w, batch, config), want)


# the honesty checks, each against a design broken on purpose --------------------------------------

BROKEN = {
    # logits at position i see target i, the next token of the document
    "non-causal": (
        "    onehot = torch.nn.functional.one_hot(batch.targets[..., 0], config.vocab_size)\n"
        "    return logits + onehot.to(logits.dtype)\n",
        "its logits are not causal: changing token 1 of a document changed the logits before it",
    ),
    # every position sees the mean over the whole batch
    "cross-document": (
        "    return logits + logits.mean(-2, keepdim=True)\n",
        "documents packed in one batch see each other",
    ),
    # in a stack, every run sees the mean over the runs
    "run-mixing": (
        "    return logits + logits.mean(0, keepdim=True) if logits.dim() == 3 else 2 * logits\n",
        "the runs of a stack mix: a run's loss in a stack differs from its own",
    ),
    "nondeterministic": (
        "    return logits + 1e-3 * torch.rand_like(logits)\n",
        "two calls give different logits: the forward is not deterministic",
    ),
    "nan": (
        "    return logits * torch.tensor(float('nan'), dtype=logits.dtype)\n",
        "its logits at the initial weights are not finite",
    ),
    "wrong shape": (
        "    return logits[..., :-1]\n",
        r"forward returned torch.float64 logits of shape \(\d+, 26\) at the initial weights; "
        r"expected \(\d+, 27\) \(positions, vocabulary\)",
    ),
    "not a tensor": ("    return logits.tolist()\n", "forward returned list, not logits"),
    "raises": (
        "    return logits @ logits\n",
        r"forward at the initial weights failed: RuntimeError: .* \(line 10\)",
    ),
    "no weights": (
        "    return torch.zeros_like(logits.detach())\n",
        "its logits do not depend on any weight",
    ),
    "reads an untrained weight": (
        "    return logits + w['bias'].detach()\n\n\n"
        "def weights(config, s):\n    return {'bias': zeros(1, 1)}\n",
        "forward reads bias, but its logits do not depend on it through autograd",
    ),
}
BROKEN_HEAD = """import torch
from microgpt.design import zeros
from microgpt.tensor.blocks import reference_forward

switches = "all"


def forward(w, batch, config, s):
    logits = reference_forward(w, batch, config)
"""


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_design_fails_its_check_in_one_line(tmp_path, docs, case):
    tail, message = BROKEN[case]
    path = write(tmp_path, BROKEN_HEAD + tail, "broken.py")
    d = load(path)
    with pytest.raises(UserError, match=message) as e:
        check(d, config_for(), d.resolve(), docs)
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(f"design file {path}: ")


def test_check_finds_the_weights_a_design_uses(docs):
    """SwiGLU at matched parameters replaces the MLP's two matrices: they are dropped, not
    counted; its own three are counted; the layout keeps the draw order."""
    d = load(EXAMPLES / "swiglu.py")
    config = config_for()
    c = check(d, config, d.resolve(), docs)
    assert c.unused == ("layer0.mlp_fc1", "layer0.mlp_fc2", "layer1.mlp_fc1", "layer1.mlp_fc2")
    H = round(8 * 16 / 3)
    assert c.num_params == config.num_params() - 2 * 2 * 64 * 16 + 2 * 3 * H * 16
    assert list(c.shapes) == [n for n in d.shapes(config, d.resolve()) if n not in c.unused]
    weights = c.initial_weights(random.Random(0))
    assert list(weights) == list(c.shapes)
    assert weights["wte"] == init_weights(config, random.Random(0))["wte"]


def test_check_runs_at_noisy_weights(tmp_path, docs):
    """A leak behind a zero-initialised weight (silent at initialisation) is still found."""
    text = BROKEN_HEAD + "    return logits + w['leak'] * logits.mean(-2, keepdim=True)\n"
    text += "\n\ndef weights(config, s):\n    return {'leak': zeros(1, 1)}\n"
    d = load(write(tmp_path, text))
    with pytest.raises(UserError, match="documents packed in one batch see each other"):
        check(d, config_for(), d.resolve(), docs)


# the example designs ------------------------------------------------------------------------------

EXAMPLE_FILES = sorted(p.stem for p in EXAMPLES.glob("*.py"))


def test_the_examples_are_there():
    assert set(EXAMPLE_FILES) >= {
        "reference", "softcap", "value_embeddings", "parallel", "swiglu", "layernorm",
        "zero_init",
    }  # fmt: skip


@pytest.mark.parametrize("example", EXAMPLE_FILES)
@pytest.mark.parametrize("switches", ["reference", "all"])
def test_example_passes_the_checks(docs, example, switches):
    """At the reference's switches, and at every switch's last value that the file honours."""
    d = load(EXAMPLES / f"{example}.py")
    design = {  # a switch it does not honour at the reference's; the soft-cap (the net's) as is
        n: v if n in d.switches or n not in SWITCHES else REFERENCE_DESIGN[n]
        for n, v in DESIGNS[switches].items()
    }
    for settings in [{}] + ([{"affine": True}] if "affine" in d.settings else []):
        c = check(d, config_for(**design), d.resolve(settings), docs)
        assert c.num_params > 0 and c.design is d


@pytest.mark.parametrize(
    "example,steps,batch",
    [(e, 30, 1) for e in EXAMPLE_FILES]
    + [pytest.param(e, 200, 8, marks=pytest.mark.slow) for e in EXAMPLE_FILES],
)
def test_example_stacked_runs_are_its_solo_runs(docs, example, steps, batch):
    """Three runs (seeds, learning rates) with dropout, weight decay and clipping, stacked and
    alone, teacher-forced: every step's loss within 1e-12, the state within 1e-10."""
    d = load(EXAMPLES / f"{example}.py")
    settings = d.resolve({"affine": True} if "affine" in d.settings else {})
    runs = make_runs({}, batch, steps, **REGULARISED)
    c = check(d, runs.config, settings, docs)
    weights = [c.initial_weights(random.Random(seed)) for seed, _ in RUNS]
    opts = options()
    net = c.net(opts)
    stack = Stack(runs.config, weights, runs.trains, opts, net)
    solos = [TensorGPT(runs.config, w, tc, opts, net) for w, tc in zip(weights, runs.trains)]
    for step in range(steps):
        for s, solo in enumerate(solos):
            for mine, theirs in zip(buffers(stack), buffers(solo)):
                mine[s].copy_(theirs)
        docs_, lrs = runs.docs(step), runs.lrs(step)
        got = stack.stack_step(docs_, lrs)
        for s, solo in enumerate(solos):
            want = solo.train_step(docs_[s], lrs[s])
            assert abs(got[s] - want) <= LOSS_REL * abs(want), (step, s, got[s], want)
            assert state_error(stack, solo, s) <= STATE_REL, (step, s)


# the benchmark still runs -------------------------------------------------------------------------


def test_design_speed_runs():
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, "bench/design_speed.py", "--rounds", "1", "--steps-scale", "0.05"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["scenarios"]) == {"batch1", "stack20", "batch32"}
    assert all(r["ratio"] > 0 for r in summary["scenarios"].values())


def test_the_docs_walk_through_the_softcap_file_as_it_is():
    """docs/designs.md shows examples/designs/softcap.py whole: the page's file is the tested
    one."""
    page = (ROOT / "docs" / "designs.md").read_text(encoding="utf-8")
    assert f"```python\n{(EXAMPLES / 'softcap.py').read_text()}```" in page


def test_a_design_drawing_its_own_dropout_masks_is_refused_for_runs_with_dropout(tmp_path, docs):
    """Masks from torch's global generator (not the run's own, `blocks.dropout`): without
    dropout the design passes; checked for runs that train with dropout, a stack's runs differ
    from their solo runs, and the check says so in one line. The reference passes both."""
    text = BROKEN_HEAD + (
        "    return torch.nn.functional.dropout(logits, batch.dropout, batch.dropout > 0)\n"
    )
    d = load(write(tmp_path, text, "own_masks.py"))
    check(d, config_for(), d.resolve(), docs)
    with pytest.raises(UserError, match="with dropout 0.1 the runs of a stack mix") as e:
        check(d, config_for(), d.resolve(), docs, dropout=0.1)
    assert "blocks.dropout" in str(e.value) and "\n" not in str(e.value)
    reference = load(REFERENCE)
    check(reference, config_for(), reference.resolve(), docs, dropout=0.1)


def test_scaled_rescales_a_reference_weights_own_draws(tmp_path):
    """`scaled(f)`: a reference weight's own draws times f, drawing nothing, so the weights
    after it keep their draws; on a weight of the file's own it is a one-line error."""
    text = SOFTCAP + (
        "\nfrom microgpt.design import normal, scaled\n\n"
        "def weights(config, s):\n"
        "    return {'lm_head': scaled(0.5), 'extra': normal(1, 2)}\n"
    )
    d = load(write(tmp_path, text))
    config, s = config_for(), d.resolve()
    got = d.initial_weights(config, s, random.Random(3))
    rng = random.Random(3)
    want = init_weights(config, rng)
    assert got["lm_head"] == [[0.5 * x for x in row] for row in want["lm_head"]]
    assert got["extra"] == [[rng.gauss(0, 0.08) for _ in range(2)]]
    assert d.shapes(config, s) == {**config.param_shapes(), "extra": (1, 2)}
    bad = load(write(tmp_path, text.replace("'lm_head': scaled", "'mine': scaled"), "bad.py"))
    with pytest.raises(UserError, match="scaled\\(\\) multiplies a reference weight's own draws"):
        bad.shapes(config, s)
