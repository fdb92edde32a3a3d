"""Tensor mode's options and interface: device and dtype selection, determinism, bfloat16,
state round trips, lazy import of torch, and the torch.compile fallback."""

import random
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from microgpt.config import ModelConfig, TrainConfig  # noqa: E402
from microgpt.errors import UserError  # noqa: E402
from microgpt.init import init_weights  # noqa: E402
from microgpt.modes import TensorOptions, make_gpt  # noqa: E402
from microgpt.scalar.model import ScalarGPT  # noqa: E402
from microgpt.tensor import TensorGPT, device  # noqa: E402

CONFIG = ModelConfig(vocab_size=10, n_layer=2, n_embd=16, n_head=4, block_size=8)


def make(options: TensorOptions, config: ModelConfig = CONFIG, seed: int = 0) -> TensorGPT:
    return TensorGPT(config, init_weights(config, random.Random(seed)), TrainConfig(), options)


def docs_for(step: int, batch: int) -> list[list[int]]:
    rng = random.Random(step)
    return [[9, *(rng.randrange(9) for _ in range(rng.randint(1, 10))), 9] for _ in range(batch)]


def train(t, steps: int, batch: int = 4) -> list[float]:
    return [t.train_step(docs_for(s, batch), 0.01 * (1 - s / steps)) for s in range(steps)]


# device and dtype ---------------------------------------------------------------------------------


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    for cuda, mps, want in [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]:
        monkeypatch.setattr(device, "_cuda_ok", lambda cuda=cuda: cuda)
        monkeypatch.setattr(device, "_mps_ok", lambda mps=mps: mps)
        assert device.resolve(TensorOptions()).device.type == want


@pytest.mark.parametrize(
    "options,words",
    [
        (TensorOptions(device="tpu"), "unknown --device 'tpu'"),
        (TensorOptions(dtype="float16"), "unknown --dtype 'float16'"),
        (TensorOptions(threads=0), "--threads must be a positive integer"),
        (TensorOptions(threads=True), "--threads must be a positive integer"),
    ],
)
def test_bad_options_are_one_line_user_errors(options, words):
    with pytest.raises(UserError, match=words) as e:
        device.resolve(options)
    assert "\n" not in str(e.value)


def test_unavailable_devices_say_what_to_do(monkeypatch):
    monkeypatch.setattr(device, "_cuda_ok", lambda: False)
    monkeypatch.setattr(device, "_mps_ok", lambda: False)
    with pytest.raises(UserError, match="--device cuda.*use --device cpu"):
        device.resolve(TensorOptions(device="cuda"))
    with pytest.raises(UserError, match="--device mps.*use --device cpu"):
        device.resolve(TensorOptions(device="mps"))
    monkeypatch.setattr(device, "_mps_ok", lambda: True)
    with pytest.raises(UserError, match="float64 is not supported on mps"):
        device.resolve(TensorOptions(device="mps", dtype="float64"))


def test_dtypes_and_master_copies():
    p = device.resolve(TensorOptions(device="cpu", dtype="bfloat16"))
    assert (p.compute_dtype, p.master_dtype, p.loss_dtype) == (
        torch.bfloat16,
        torch.float32,
        torch.float32,
    )
    p = device.resolve(TensorOptions(device="cpu", dtype="float64"))
    assert p.compute_dtype == p.master_dtype == torch.float64


def test_threads_option_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        make(TensorOptions(device="cpu", threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_make_gpt_builds_tensor_mode():
    gpt = make_gpt(
        "tensor",
        CONFIG,
        init_weights(CONFIG, random.Random(0)),
        TrainConfig(),
        TensorOptions(device="cpu"),
    )
    assert gpt.mode == "tensor" and gpt.config == CONFIG and gpt.step == 0


# training behaviour -------------------------------------------------------------------------------


def test_float32_runs_are_bit_identical():
    a, b = make(TensorOptions(device="cpu")), make(TensorOptions(device="cpu"))
    assert train(a, 6) == train(b, 6)
    assert a.export_state() == b.export_state()


def test_loss_falls_on_learnable_documents():
    t = make(TensorOptions(device="cpu"))
    counting = [[9, *((a + i) % 9 for i in range(a % 4 + 2)), 9] for a in range(9)]
    losses = [t.train_step(counting, 0.01) for _ in range(60)]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_bfloat16_trains_close_to_float32():
    bf16 = make(TensorOptions(device="cpu", dtype="bfloat16"))
    f32 = make(TensorOptions(device="cpu"))
    got, want = train(bf16, 30), train(f32, 30)
    assert all(torch.isfinite(torch.tensor(got)))
    assert bf16.flat.dtype == torch.float32 and bf16.optimizer.m.dtype == torch.float32
    assert abs(sum(got[-10:]) - sum(want[-10:])) / 10 < 0.05
    docs = docs_for(99, 16)
    assert bf16.eval_loss(docs) == pytest.approx(f32.eval_loss(docs), abs=0.05)
    assert len(bf16.logits([9, 1, 2])) == CONFIG.vocab_size


def test_eval_and_logits_change_nothing_and_build_no_graph():
    t = make(TensorOptions(device="cpu"))
    docs = docs_for(0, 5)
    before = t.export_state()
    with torch.enable_grad():
        loss = t.eval_loss(docs)
        logits = t.logits([9, 3])
    assert not t.flat.requires_grad and not t.grad.requires_grad
    assert t.export_state() == before and t.step == 0
    assert loss == pytest.approx(t.train_step(docs, 0.01), rel=1e-6)
    assert len(logits) == CONFIG.vocab_size
    with pytest.raises(ValueError, match="block_size"):
        t.logits([9] * (CONFIG.block_size + 1))


# state --------------------------------------------------------------------------------------------


def test_export_load_round_trip_continues_identically():
    a = make(TensorOptions(device="cpu"))
    train(a, 3)
    state = a.export_state()
    assert set(state) == {"weights", "adam_m", "adam_v"}
    assert all(isinstance(x, float) for x in state["weights"]["wte"][0])
    b = make(TensorOptions(device="cpu"), seed=1)  # different initial weights, replaced below
    b.load_state(state, a.step)
    assert b.step == 3 and b.export_state() == state
    assert a.train_step(docs_for(7, 4), 0.005) == b.train_step(docs_for(7, 4), 0.005)
    assert a.export_state() == b.export_state()


def test_state_is_interchangeable_with_scalar_mode():
    t = make(TensorOptions(device="cpu", dtype="float64"))
    train(t, 2)
    s = ScalarGPT(CONFIG, init_weights(CONFIG, random.Random(1)), TrainConfig())
    s.load_state(t.export_state(), t.step)
    assert s.export_state() == t.export_state()
    docs = docs_for(5, 2)
    assert s.train_step(docs, 0.01) == pytest.approx(t.train_step(docs, 0.01), rel=1e-10)


def test_load_state_rejects_another_model():
    t = make(TensorOptions(device="cpu"))
    other = make(TensorOptions(device="cpu"), config=ModelConfig(vocab_size=10, n_embd=8))
    with pytest.raises(UserError, match="should be"):
        t.load_state(other.export_state(), 1)
    state = t.export_state()
    del state["adam_v"]["wpe"]
    with pytest.raises(UserError, match="no matrix 'wpe'"):
        t.load_state(state, 1)


# import and compile -------------------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_microgpt_does_not_import_torch():
    out = run_python(
        "import sys, microgpt, microgpt.modes, microgpt.tensor\nprint('torch' in sys.modules)"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_missing_torch_is_a_user_error():
    out = run_python(
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "from microgpt.errors import UserError\n"
        "try:\n"
        "    from microgpt.tensor import TensorGPT\n"
        "except UserError as e:\n"
        "    print(e)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("tensor mode needs PyTorch: pip install")


def test_compile_falls_back_with_one_warning(monkeypatch, capsys):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler\nsecond line")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    t = make(TensorOptions(device="cpu", compile=True))
    eager = make(TensorOptions(device="cpu"))
    assert train(t, 3) == train(eager, 3)
    err = capsys.readouterr().err
    assert err.count("warning: torch.compile") == 1 and "no C++ compiler" in err
    assert "second line" not in err


@pytest.mark.slow
def test_compiled_step_matches_eager():
    """torch.compile of the hand-written step gives eager's numbers (float64; compiles ~20 s)."""
    compiled = make(TensorOptions(device="cpu", dtype="float64", compile=True))
    eager = make(TensorOptions(device="cpu", dtype="float64"))
    for step in range(4):
        docs = docs_for(step, 1 + 2 * (step % 2))  # batch 1 and 3: shapes change
        assert compiled.train_step(docs, 0.01) == pytest.approx(
            eager.train_step(docs, 0.01), rel=1e-10
        )
    torch.testing.assert_close(compiled.flat, eager.flat, rtol=1e-10, atol=1e-14)
