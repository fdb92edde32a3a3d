"""A stack (`tensor.stack.Stack`) against its runs alone: every run of a stack is the same run as
alone. In float64 each run's loss at every step is within 1e-12 relative of its solo run's, and
its weights and Adam moments within 1e-10 relative (per matrix, as in test_tensor_parity.py), in
every design of `designs.DESIGNS`, at batch 1 and batch 8, with dropout, weight decay and
clipping (each run clips its own gradient's global norm, never the stack's), three runs of
different seeds and learning rates a stack.

Two ways of comparing:

- teacher-forced: before every step the stack's run is given its solo run's weights and
  moments, so each step is compared from the same state; this holds at every one of 200 steps
  in every design, "all" included, on any CPU: one step's rounding, not its amplification.
- free-running: the stack and the solo runs each go their own way from the same initial
  weights. The stack's kernels are not the solo's (batched matmuls, its own softmax), so the
  two differ in the last bits from the first step on, and training amplifies that. Every design
  but the chaotic ones (`CHAOTIC`) stays far inside the tolerances over 30 and 200 steps, so
  the verdict does not hang on the CPU's kernels; a chaotic design is compared teacher-forced
  only.

Then the stack's other promises: the token average, `keep_runs`, `run_model`, float32 and
bfloat16, a diverging run that leaves its neighbours alone, and what may differ between runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
from designs import DESIGNS

torch = pytest.importorskip("torch")

from microgpt.config import ModelConfig, TrainConfig  # noqa: E402
from microgpt.init import Matrix  # noqa: E402
from microgpt.modes import TensorOptions  # noqa: E402
from microgpt.schedule import lr_at  # noqa: E402
from microgpt.tensor import Stack, TensorGPT, net  # noqa: E402
from microgpt.train import InStudy, prepare, token_data, train, train_stack  # noqa: E402

LOSS_REL = 1e-12  # a step's loss, relative to the solo run's
STATE_REL = 1e-10  # weights and Adam moments, per matrix, relative to the solo run's largest
SIZES = dict(n_layer=2, n_embd=16, n_head=4)  # block_size 16, the names' 27 characters
RUNS = ((0, 0.01), (1, 0.003), (2, 0.02))  # each run's (seed, peak learning rate)
REGULARISED = dict(dropout=0.1, weight_decay=0.1, grad_clip=0.5)  # clip 0.5: most steps clip


def options(dtype: str = "float64") -> TensorOptions:
    # one thread: at these sizes more only adds synchronisation, which crawls on a loaded machine
    return TensorOptions(device="cpu", dtype=dtype, threads=1)


@dataclass
class Runs:
    """Runs of one shape, each from `prepare` and `token_data` as `microgpt train` makes them:
    its own shuffle, initial weights and documents."""

    config: ModelConfig
    trains: list[TrainConfig]
    weights: list[dict[str, Matrix]]
    step_docs: list  # per run: step -> that step's documents
    held_out: list[list[list[int]]]  # per run: its held-out documents

    def stack(self, dtype: str = "float64") -> Stack:
        return Stack(self.config, self.weights, self.trains, options(dtype))

    def solos(self, dtype: str = "float64") -> list[TensorGPT]:
        pairs = zip(self.weights, self.trains)
        return [TensorGPT(self.config, w, tc, options(dtype)) for w, tc in pairs]

    def docs(self, step: int) -> list[list[list[int]]]:
        return [step_docs(step) for step_docs in self.step_docs]

    def lrs(self, step: int) -> list[float]:
        return [lr_at(step, tc) for tc in self.trains]


def make_runs(design: dict, batch: int, steps: int, runs=RUNS, **train) -> Runs:
    """One run per (seed, learning rate[, min_lr]) of `runs`, all else shared."""
    trains = [
        TrainConfig(
            steps=steps, batch_size=batch, seed=seed, learning_rate=lr, min_lr=sum(floor), **train
        )
        for seed, lr, *floor in runs
    ]
    prepared = [prepare(None, {**SIZES, **design}, tc) for tc in trains]
    config = prepared[0][0]
    data = [token_data(prep, tc, config.block_size) for (_, prep), tc in zip(prepared, trains)]
    return Runs(
        config,
        trains,
        [prep.weights for _, prep in prepared],
        [step_docs for step_docs, _ in data],
        [held_out for _, held_out in data],
    )


def relative_error(got, want) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


def state_error(stack: Stack, s: int, solo: TensorGPT) -> float:
    """The largest relative error, per matrix, of run s's weights and Adam moments."""
    layout, worst = stack.layout, 0.0
    for mine, its in ((stack.flat, solo.flat), (stack.optimizer.m, solo.optimizer.m)):
        got, want = layout.views(mine[s]), layout.views(its)
        worst = max(worst, *(relative_error(got[n], want[n]) for n in layout.shapes))
    got, want = layout.views(stack.optimizer.v[s]), layout.views(solo.optimizer.v)
    return max(worst, *(relative_error(got[n], want[n]) for n in layout.shapes))


def loss_error(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


def force(stack: Stack, s: int, solo: TensorGPT) -> None:
    """Give the stack's run s its solo run's weights and Adam moments."""
    stack.flat[s].copy_(solo.flat)
    stack.optimizer.m[s].copy_(solo.optimizer.m)
    stack.optimizer.v[s].copy_(solo.optimizer.v)


# every run of a stack is its solo run -------------------------------------------------------------

# Designs whose free-running float64 runs are chaotic: their run at learning rate 0.02 amplifies
# the last bits so fast that whether it crosses the tolerances is a fact about the CPU's kernels.
# "all": past 1e-12 at step 33 at batch 1 and step 103 at batch 8 of 200 on an Intel Xeon, never
# at batch 8 on an AMD EPYC; its solo run alone, its initial weights moved by one ulp, drifts as
# far. With the zero init and the soft-cap in it too: at steps 54 and 41 on the Xeon. The
# teacher-forced test holds it at every step. (The zero init and the soft-cap alone stay within
# a thousandth of the tolerances over 200 steps, free-running.)
CHAOTIC = {"all"}
BATCHES = pytest.mark.parametrize("batch", [1, 8], ids=["batch1", "batch8"])


def free_running_cases():
    """Every design but the chaotic ones, over 30 steps and (slow) over 200."""
    for steps, marks in ((30, ()), (200, (pytest.mark.slow,))):
        for design in DESIGNS:
            if design not in CHAOTIC:
                yield pytest.param(design, steps, id=f"{design}-{steps}steps", marks=marks)


@BATCHES
@pytest.mark.parametrize("design,steps", list(free_running_cases()))
def test_runs_of_a_stack_are_their_solo_runs(design, steps, batch):
    """The issue's check: three runs (seeds 0, 1, 2; learning rates 0.01, 0.003, 0.02) with
    dropout, weight decay and clipping, stacked and alone: every step's loss, then the weights
    and Adam moments."""
    runs = make_runs(DESIGNS[design], batch, steps, **REGULARISED)
    stack, solos = runs.stack(), runs.solos()
    clipped = [0] * len(solos)  # the steps at which each solo run clipped
    worst = 0.0
    for step in range(steps):
        docs, lrs = runs.docs(step), runs.lrs(step)
        got = stack.stack_step(docs, lrs)
        assert isinstance(got, list) and len(got) == len(solos)
        for s, solo in enumerate(solos):
            want = solo.train_step(docs[s], lrs[s])
            err = loss_error(got[s], want)
            assert err <= LOSS_REL, (step, s, got[s], want)
            worst = max(worst, err)
            clipped[s] += float(solo.optimizer.last_grad_norm) > REGULARISED["grad_clip"]
    assert stack.step == steps
    for s, solo in enumerate(solos):
        err = state_error(stack, s, solo)
        assert err <= STATE_REL, (s, err)
    assert any(clipped), "no run ever clipped: the test does not test clipping"
    print(f"max relative loss difference over {steps} steps: {worst:.1e}; clipped {clipped}")


@BATCHES
@pytest.mark.parametrize("design", [pytest.param(d, marks=pytest.mark.slow) for d in DESIGNS])
def test_each_step_of_a_stack_is_its_runs_solo_step(design, batch):
    """Teacher-forced, 200 steps: before each step every run of the stack takes its solo run's
    weights and moments; then the step's loss, each run's gradient norm (each clips by its own),
    and the weights and moments after it."""
    steps, clip = 200, REGULARISED["grad_clip"]
    runs = make_runs(DESIGNS[design], batch, steps, **REGULARISED)
    stack, solos = runs.stack(), runs.solos()
    clipped = 0
    for step in range(steps):
        for s, solo in enumerate(solos):
            force(stack, s, solo)
        docs, lrs = runs.docs(step), runs.lrs(step)
        got = stack.stack_step(docs, lrs)
        norms = stack.optimizer.last_grad_norm.view(-1).tolist()
        for s, solo in enumerate(solos):
            want = solo.train_step(docs[s], lrs[s])
            assert loss_error(got[s], want) <= LOSS_REL, (step, s, got[s], want)
            solo_norm = float(solo.optimizer.last_grad_norm)
            assert loss_error(norms[s], solo_norm) <= LOSS_REL, (step, s, norms[s], solo_norm)
            clipped += solo_norm > clip
            err = state_error(stack, s, solo)
            assert err <= STATE_REL, (step, s, err)
    assert clipped, "no run ever clipped: the test does not test clipping"


@pytest.mark.parametrize("design", ["reference", "all"])
def test_weight_gradients_written_in_place_are_the_same(design, monkeypatch):
    """A large matrix's gradient is written by the batched product straight into the stack's
    gradient (`net.OUT_MIN`; the reference's are all small): with every matrix written so,
    each of 30 steps, teacher-forced, is each run's solo step, loss, weights and moments."""
    monkeypatch.setattr(net, "OUT_MIN", 1)
    runs = make_runs(DESIGNS[design], 8, 30, **REGULARISED)
    stack, solos = runs.stack(), runs.solos()
    for step in range(30):
        for s, solo in enumerate(solos):
            force(stack, s, solo)
        docs, lrs = runs.docs(step), runs.lrs(step)
        got = stack.stack_step(docs, lrs)
        for s, solo in enumerate(solos):
            want = solo.train_step(docs[s], lrs[s])
            assert loss_error(got[s], want) <= LOSS_REL, (step, s, got[s], want)
            assert state_error(stack, s, solo) <= STATE_REL, (step, s)


@BATCHES
def test_a_stack_of_one_is_its_solo_run(batch):
    """A stack of one run (its few attention scores through torch's softmax at batch 1,
    `ops.FEW_SCORES`; its gradients written by the product in place, `net.accumulate`), 30
    free-running steps with dropout, weight decay and clipping: each step's loss, then the
    weights and moments, are its solo run's."""
    runs = make_runs(DESIGNS["all"], batch, 30, runs=RUNS[:1], **REGULARISED)
    stack, (solo,) = runs.stack(), runs.solos()
    for step in range(30):
        docs, lrs = runs.docs(step), runs.lrs(step)
        (got,) = stack.stack_step(docs, lrs)
        want = solo.train_step(docs[0], lrs[0])
        assert loss_error(got, want) <= LOSS_REL, (step, got, want)
    assert state_error(stack, 0, solo) <= STATE_REL


@pytest.mark.parametrize("batch", [1, 8], ids=["batch1", "batch8"])
def test_token_loss_average(batch):
    """--loss-average token: each run's mean over its own predicted tokens, not the stack's; and
    runs that differ in min_lr (their schedules' floor) too."""
    runs = make_runs(
        DESIGNS["reference"],
        batch,
        50,
        runs=((3, 0.01, 0.001), (4, 0.005, 0.0), (5, 0.02, 0.01)),
        loss_average="token",
        **REGULARISED,
    )
    stack, solos = runs.stack(), runs.solos()
    assert stack.per_token
    for step in range(50):
        docs, lrs = runs.docs(step), runs.lrs(step)
        got = stack.stack_step(docs, lrs)
        for s, solo in enumerate(solos):
            want = solo.train_step(docs[s], lrs[s])
            assert loss_error(got[s], want) <= LOSS_REL, (step, s, got[s], want)
    for s, solo in enumerate(solos):
        assert state_error(stack, s, solo) <= STATE_REL


@pytest.mark.parametrize("design", ["reference", "all"])
def test_a_batch1_stack_pads_with_nothing_that_counts(design):
    """At batch 1 a stack packs each run's one document in a row under the plain causal mask
    (`Packer._pack_singles`): each run's tokens, targets and weights are its solo batch's, then
    padding of weight 0; and changing what the padding positions hold (tokens, targets and the
    positions they take) changes no loss and no gradient, bit for bit: nothing flows from them."""
    runs = make_runs(DESIGNS[design], 1, 1)
    stack = runs.stack()
    docs = runs.docs(0)
    batch = stack.packer.pack_runs(docs)
    assert batch.rows == 1 and batch.width == max(n for _, n in batch.runs)
    for s, (doc,) in enumerate(docs):
        alone = stack.packer.pack([doc])
        n = alone.width
        assert batch.runs[s] == (1, n)
        assert torch.equal(batch.tokens[s, :n], alone.tokens)
        assert torch.equal(batch.targets[s, :n], alone.targets)
        assert torch.equal(batch.weights[s, :n], alone.weights)
        assert not batch.weights[s, n:].any()
    loss0 = stack._loss_and_grad(batch).clone()
    grad0 = stack.grad.clone()
    pad = batch.weights[..., 0] == 0
    assert pad.any()
    tokens, targets = batch.tokens.clone(), batch.targets.clone()
    tokens[pad], targets[pad] = 3, 5
    positions = batch.positions.clone()
    positions[pad] = 2
    changed = replace(batch, tokens=tokens, targets=targets, positions=positions)
    assert torch.equal(stack._loss_and_grad(changed), loss0)
    assert torch.equal(stack.grad, grad0)


def test_keep_runs_drops_runs_and_the_others_go_on():
    """keep_runs([0, 2]) after 10 steps, keep_runs([1]) (the third run) after 20: the runs kept
    go on exactly as their solo runs, dropout masks, clipping and Adam's step count included."""
    runs = make_runs(DESIGNS["reference"], 8, 30, **REGULARISED)
    stack, solos = runs.stack(), runs.solos()
    alive = [0, 1, 2]  # the original index of each run still in the stack
    for step in range(30):
        if step == 10:
            stack.keep_runs([0, 2])
            alive = [0, 2]
        if step == 20:
            stack.keep_runs([1])
            alive = [2]
        assert stack.runs == len(alive)
        assert stack.flat.shape == stack.optimizer.m.shape == stack.optimizer.v.shape
        assert stack.flat.shape[0] == len(alive)
        docs, lrs = runs.docs(step), runs.lrs(step)
        got = stack.stack_step([docs[r] for r in alive], [lrs[r] for r in alive])
        assert len(got) == len(alive)
        for s, r in enumerate(alive):
            want = solos[r].train_step(docs[r], lrs[r])
            assert loss_error(got[s], want) <= LOSS_REL, (step, r, got[s], want)
        for s, r in enumerate(alive):
            assert state_error(stack, s, solos[r]) <= STATE_REL, (step, r)
    assert stack.step == 30
    assert stack.train_configs == [runs.trains[2]]


def test_run_model_is_the_solo_run():
    """run_model(s) after 20 steps: a solo model with run s's weights, moments and step, whose
    held-out losses and logits are the solo run's, which trains on as the solo run does, and
    which the stack's later steps leave alone."""
    runs = make_runs(DESIGNS["reference"], 8, 30, **REGULARISED)
    stack, solos = runs.stack(), runs.solos()
    for step in range(20):
        docs, lrs = runs.docs(step), runs.lrs(step)
        stack.stack_step(docs, lrs)
        for solo, d, lr in zip(solos, docs, lrs):
            solo.train_step(d, lr)
    copies = [stack.run_model(s) for s in range(len(solos))]
    for s, (copy, solo) in enumerate(zip(copies, solos)):
        assert type(copy) is TensorGPT and copy.flat.shape == solo.flat.shape
        assert copy.step == solo.step == 20
        assert copy.train_config == runs.trains[s]
        held_out = runs.held_out[s][:200]
        want = solo.eval_loss(held_out)
        assert loss_error(copy.eval_loss(held_out), want) <= LOSS_REL
        got_total, got_tokens = copy.eval_token_loss(held_out)
        want_total, want_tokens = solo.eval_token_loss(held_out)
        assert got_tokens == want_tokens and loss_error(got_total, want_total) <= LOSS_REL
        context = held_out[0][:5]
        got_logits = torch.tensor(copy.logits(context), dtype=torch.float64)
        want_logits = torch.tensor(solo.logits(context), dtype=torch.float64)
        assert relative_error(got_logits, want_logits) <= STATE_REL
    before = [copy.flat.clone() for copy in copies]
    for step in range(20, 30):  # the copies train on; the stack goes on without them
        docs, lrs = runs.docs(step), runs.lrs(step)
        stack.stack_step(docs, lrs)
        for s, (copy, solo) in enumerate(zip(copies, solos)):
            want = solo.train_step(docs[s], lrs[s])
            assert loss_error(copy.train_step(docs[s], lrs[s]), want) <= LOSS_REL
    for copy, solo, flat in zip(copies, solos, before):
        assert relative_error(copy.flat, solo.flat) <= STATE_REL
        assert not torch.equal(copy.flat, flat)  # they did train


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_low_precision_stacks_stay_close_to_their_solo_runs(dtype):
    """float32 and bfloat16 (float32 master weights) stacks, 30 steps of the reference design at
    batch 8, against the solo runs in the same dtype, teacher-forced (each step from the solo
    run's weights and moments: one step's rounding, whatever the CPU): every loss within 1e-5
    (float32; measured 4.8e-7) or 0.05 (bfloat16; measured 9e-4), and each run's gradient norm
    within the same, relative (1.2e-7; 1.5e-3). The weights after a step are not compared: where
    a gradient is as small as Adam's eps, lr * m / (sqrt(v) + eps) turns its last digits into
    differences of up to 2 lr, so they hang on the CPU's kernels (float32: 1e-6 of the largest
    weight on an Intel Xeon, 4e-5 with torch's portable kernels); float64 compares them above."""
    tolerance = {"float32": 1e-5, "bfloat16": 0.05}[dtype]
    runs = make_runs(DESIGNS["reference"], 8, 30, **REGULARISED)
    stack, solos = runs.stack(dtype), runs.solos(dtype)
    worst = worst_norm = 0.0
    for step in range(30):
        for s, solo in enumerate(solos):
            force(stack, s, solo)
        docs, lrs = runs.docs(step), runs.lrs(step)
        got = stack.stack_step(docs, lrs)
        norms = stack.optimizer.last_grad_norm.view(-1).tolist()
        for s, solo in enumerate(solos):
            want = solo.train_step(docs[s], lrs[s])
            assert math.isfinite(got[s])
            worst = max(worst, abs(got[s] - want))
            worst_norm = max(worst_norm, loss_error(norms[s], float(solo.optimizer.last_grad_norm)))
    print(f"{dtype}: max |loss difference| {worst:.2e}, gradient norm {worst_norm:.2e} relative")
    assert worst <= tolerance
    assert worst_norm <= tolerance
    assert stack.flat.dtype == torch.float32  # the master weights, in bfloat16 too


def test_a_diverging_run_leaves_its_neighbours_alone():
    """The middle run at learning rate 1e4 (weight decay 0.1 then scales its weights by -999 a
    step) goes to inf and NaN; the runs either side stay their solo runs to the end, 10 steps
    past the first non-finite loss; then keep_runs drops it and they go on."""
    steps = 50
    runs = make_runs(
        DESIGNS["reference"],
        8,
        steps,
        runs=((0, 0.01), (1, 1e4), (2, 0.003)),
        dropout=0.1,
        weight_decay=0.1,
    )
    stack, solos = runs.stack(), runs.solos()
    first_bad = None
    for step in range(steps):
        docs, lrs = runs.docs(step), runs.lrs(step)
        got = stack.stack_step(docs, lrs)
        if first_bad is None and not math.isfinite(got[1]):
            first_bad = step
        for s in (0, 2):
            want = solos[s].train_step(docs[s], lrs[s])
            assert loss_error(got[s], want) <= LOSS_REL, (step, s, got[s], want)
        if first_bad is not None and step >= first_bad + 10:
            break
    assert first_bad is not None and step == first_bad + 10, "the middle run never diverged"
    assert not bool(torch.isfinite(stack.flat[1]).all())
    assert torch.isnan(stack.flat[1]).any()
    for s in (0, 2):
        assert bool(torch.isfinite(stack.flat[s]).all())
        assert state_error(stack, s, solos[s]) <= STATE_REL
    stack.keep_runs([0, 2])
    last = step
    for step in range(last + 1, last + 6):
        docs, lrs = runs.docs(step), runs.lrs(step)
        got = stack.stack_step([docs[0], docs[2]], [lrs[0], lrs[2]])
        for i, s in enumerate((0, 2)):
            want = solos[s].train_step(docs[s], lrs[s])
            assert loss_error(got[i], want) <= LOSS_REL, (step, s, got[i], want)


def test_a_stack_steps_adam_each_run_at_its_own_rate():
    """A stack's Adam steps the runs of each learning rate together (`FlatAdam._update_stack`,
    one fused call per rate): five runs at four learning rates, two of them sharing one, with
    weight decay and clipping, are each their solo run: every step's loss and gradient norm,
    then the weights and moments."""
    steps = 20
    rates = ((0, 0.01), (1, 0.003), (2, 0.01), (3, 0.006), (4, 0.04))
    runs = make_runs(DESIGNS["reference"], 8, steps, runs=rates, weight_decay=0.1, grad_clip=0.5)
    stack, solos = runs.stack(), runs.solos()
    clipped = 0
    for step in range(steps):
        docs, lrs = runs.docs(step), runs.lrs(step)
        got = stack.stack_step(docs, lrs)
        norms = stack.optimizer.last_grad_norm.view(-1).tolist()
        assert len(norms) == len(solos)
        for s, solo in enumerate(solos):
            want = solo.train_step(docs[s], lrs[s])
            assert loss_error(got[s], want) <= LOSS_REL, (step, s, got[s], want)
            solo_norm = float(solo.optimizer.last_grad_norm)
            assert loss_error(norms[s], solo_norm) <= LOSS_REL, (step, s, norms[s], solo_norm)
            clipped += solo_norm > 0.5
    for s, solo in enumerate(solos):
        assert state_error(stack, s, solo) <= STATE_REL, s
    assert clipped, "no run ever clipped: the test does not test clipping"


def test_runs_diverging_at_different_steps_leave_a_stack_in_order():
    """`train_stack` with four runs, two of them at learning rates that overflow float64 at
    different steps: run 1 (1e150) goes non-finite at step 2, run 3 (1e250) at step 3, when run
    1 has left and run 3 is the stack's run 2. Each survivor's losses, evaluations, diagnostics
    and held-out figures are its solo run's (`train` in a study), and each diverged run's (step,
    last finite loss) is its solo run's. These rates overflow by far at once: a run that creeps
    up to float64's edge (at 1e20, losses near 1e176 by step 4) went non-finite in a stack two
    steps before its solo run did, as the two sets of kernels meet overflow at different steps."""
    steps = 30
    rates = ((0, 0.01), (1, 1e150), (2, 0.003), (3, 1e250))
    shared = dict(steps=steps, batch_size=8, weight_decay=0.1, dropout=0.1, eval_every=10)
    held_out = dict(val_docs=100, eval_docs=100)
    trains = [TrainConfig(seed=s, learning_rate=lr, **shared, **held_out) for s, lr in rates]
    prepared = [prepare(None, SIZES, tc) for tc in trains]
    config, preps = prepared[0][0], [prep for _, prep in prepared]
    study = InStudy(diagnostics_every=10, diagnostic_docs=8)
    stacked = train_stack(config, trains, preps, options(), studies=[study] * len(trains))
    solos = [
        train("tensor", config, tc, p, options(), study=study)[1] for tc, p in zip(trains, preps)
    ]
    assert [r.diverged and r.diverged[0] for r in solos] == [None, 2, None, 3]
    for s, (got, want) in enumerate(zip(stacked, solos)):
        assert len(got.losses) == len(want.losses), s
        for step, (a, b) in enumerate(zip(got.losses, want.losses), start=1):
            assert loss_error(a, b) <= LOSS_REL, (s, step, a, b)
        if want.diverged:
            assert got.diverged[0] == want.diverged[0], s
            assert loss_error(got.diverged[1], want.diverged[1]) <= LOSS_REL, s
            assert got.val_loss is got.val_loss_per_token is None and not got.evals
            continue
        assert got.diverged is None, s
        for key in ("val_loss", "val_loss_per_token"):
            assert loss_error(getattr(got, key), getattr(want, key)) <= LOSS_REL, (s, key)
        assert [e[0] for e in got.evals] == [10, 20, 30] == [e[0] for e in want.evals]
        for (_, a), (_, b) in zip(got.evals, want.evals):
            assert loss_error(a, b) <= LOSS_REL, s
        assert [d[0] for d in got.diagnostics] == [10, 20, 30] == [d[0] for d in want.diagnostics]
        for a, b in zip(got.diagnostics, want.diagnostics):
            assert all(loss_error(x, y) <= LOSS_REL for x, y in zip(a[1:], b[1:])), (s, a, b)


# what a stack refuses: every setting but the seed and the schedule's (config.STACK_PER_RUN; a
# stack of runs on different schedules: test_settings) -----------------------------------------

DIFFERENT = {
    "steps": 7,
    "batch_size": 2,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-6,
    "weight_decay": 0.2,
    "grad_clip": 1.0,
    "z_loss": 1e-4,
    "dropout": 0.2,
    "loss_average": "token",
    "reshuffle": True,
    "val_fraction": 0.2,
}


@pytest.mark.parametrize("field,value", DIFFERENT.items(), ids=DIFFERENT.keys())
def test_a_stack_refuses_runs_that_differ_in_more_than_seed_and_learning_rate(field, value):
    runs = make_runs(DESIGNS["reference"], 1, 5, runs=((0, 0.01), (1, 0.02)))
    trains = [runs.trains[0], replace(runs.trains[1], **{field: value})]
    with pytest.raises(ValueError, match="seed and learning-rate schedule only"):
        Stack(runs.config, runs.weights, trains, options())


def test_a_stack_takes_runs_that_differ_in_seed_learning_rate_and_min_lr():
    runs = make_runs(DESIGNS["reference"], 1, 5, runs=((0, 0.01, 0.0), (1, 0.02, 0.005)))
    stack = runs.stack()
    assert stack.runs == 2 and stack.flat.shape == (2, stack.layout.numel)
    assert all(math.isfinite(x) for x in stack.stack_step(runs.docs(0), runs.lrs(0)))


def test_a_stack_refuses_mismatched_or_no_runs():
    runs = make_runs(DESIGNS["reference"], 1, 5, runs=((0, 0.01), (1, 0.02)))
    with pytest.raises(ValueError, match="one set of weights and one TrainConfig per run"):
        Stack(runs.config, runs.weights[:1], runs.trains, options())
    with pytest.raises(ValueError, match="one set of weights and one TrainConfig per run"):
        Stack(runs.config, [], [], options())
    compiled = replace(options(), compile=True)
    with pytest.raises(ValueError, match="eagerly"):
        Stack(runs.config, runs.weights, runs.trains, compiled)
