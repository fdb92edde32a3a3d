"""The scalar engine: every op against finite differences, fused ops against their elementary
composition, and everything against PyTorch float64 when torch is installed."""

import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt.scalar.engine import (
    Tape,
    Value,
    cross_entropy,
    dot,
    linear,
    topological_order,
    vsum,
)

FD_STEP = 1e-6
FD_TOL = 1e-6  # central differences of smooth functions with inputs of order 1

# name -> (function of a list of Values, number of inputs, input range)
OPS = {
    "add": (lambda x: x[0] + x[1], 2, (-2, 2)),
    "mul": (lambda x: x[0] * x[1], 2, (-2, 2)),
    "pow": (lambda x: x[0] ** 3, 1, (-2, 2)),
    "pow_neg_half": (lambda x: x[0] ** -0.5, 1, (0.5, 2)),
    "exp": (lambda x: x[0].exp(), 1, (-2, 2)),
    "log": (lambda x: x[0].log(), 1, (0.5, 3)),
    "tanh": (lambda x: x[0].tanh(), 1, (-3, 3)),
    "relu": (lambda x: x[0].relu(), 1, (-2, 2)),
    "neg": (lambda x: -x[0], 1, (-2, 2)),
    "sub": (lambda x: x[0] - x[1], 2, (-2, 2)),
    "div": (lambda x: x[0] / x[1], 2, (0.5, 2)),
    "radd": (lambda x: 1.5 + x[0], 1, (-2, 2)),
    "rsub": (lambda x: 1.5 - x[0], 1, (-2, 2)),
    "rmul": (lambda x: 1.5 * x[0], 1, (-2, 2)),
    "rdiv": (lambda x: 1.5 / x[0], 1, (0.5, 2)),
    "vsum": (lambda x: vsum(x), 5, (-2, 2)),
    "dot": (lambda x: dot(x[:4], x[4:]), 8, (-2, 2)),
    "dot_self": (lambda x: dot(x, x), 4, (-2, 2)),
    "linear": (lambda x: dot(linear(x[:3], [x[3:6], x[6:9]]), x[9:]), 11, (-2, 2)),
    "cross_entropy": (lambda x: cross_entropy(x, 2), 5, (-3, 3)),
    "composite": (lambda x: (x[0] * x[1] + x[0].exp()).log() * x[1] - x[0] / 3, 2, (0.2, 2)),
}


def grads(fn, xs):
    vs = [Value(x) for x in xs]
    out = fn(vs)
    out.backward()
    return out.data, [v.grad for v in vs]


@pytest.mark.parametrize("name", OPS)
def test_gradient_matches_finite_differences(name):
    fn, n, (lo, hi) = OPS[name]
    rng = random.Random(name)
    for _ in range(5):
        xs = [rng.uniform(lo, hi) for _ in range(n)]
        if name == "relu" and abs(xs[0]) < 10 * FD_STEP:
            continue  # no derivative at the kink
        _, analytic = grads(fn, xs)
        for i in range(n):
            up = xs.copy()
            down = xs.copy()
            up[i] += FD_STEP
            down[i] -= FD_STEP
            numeric = (fn([Value(x) for x in up]).data - fn([Value(x) for x in down]).data) / (
                2 * FD_STEP
            )
            assert analytic[i] == pytest.approx(numeric, rel=FD_TOL, abs=FD_TOL), (name, i)


def chain_sum(xs):
    """What the reference's Python sum() of Values builds: 0 + x0 + x1 + ..."""
    total = 0
    for x in xs:
        total = total + x if isinstance(total, Value) else x + total
    return total


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_vsum_equals_chain_of_adds(xs):
    fused, g_fused = grads(vsum, xs)
    chained, g_chained = grads(chain_sum, xs)
    assert fused == chained  # the same floats, bit for bit
    assert g_fused == g_chained


@given(
    st.integers(1, 20).flatmap(
        lambda n: st.lists(st.floats(-10, 10), min_size=2 * n, max_size=2 * n)
    )
)
@settings(max_examples=200, deadline=None)
def test_dot_equals_elementary_graph(xs):
    n = len(xs) // 2

    def fused(v):
        return dot(v[:n], v[n:])

    def elementary(v):
        return chain_sum([w * x for w, x in zip(v[:n], v[n:])])

    out_f, g_f = grads(fused, xs)
    out_e, g_e = grads(elementary, xs)
    assert out_f == out_e
    assert g_f == g_e


@given(st.integers(1, 6), st.integers(1, 6), st.data())
@settings(max_examples=100, deadline=None)
def test_linear_equals_one_dot_per_row(rows, cols, data):
    floats = st.floats(-10, 10)
    xs = data.draw(
        st.lists(floats, min_size=cols + rows * cols + rows, max_size=cols + rows * cols + rows)
    )

    def split(v):
        x, w, g = v[:cols], v[cols : cols + rows * cols], v[cols + rows * cols :]
        return x, [w[r * cols : (r + 1) * cols] for r in range(rows)], g

    def fused(v):
        x, w, g = split(v)
        return dot(linear(x, w), g)

    def per_row(v):
        x, w, g = split(v)
        return dot([dot(row, x) for row in w], g)

    out_f, g_f = grads(fused, xs)
    out_r, g_r = grads(per_row, xs)
    assert out_f == out_r
    assert g_f == g_r


def elementary_cross_entropy(logits, target):
    m = max(v.data for v in logits)
    exps = [(v - m).exp() for v in logits]
    total = chain_sum(exps)
    probs = [e / total for e in exps]
    return -probs[target].log()


@given(st.lists(st.floats(-20, 20), min_size=2, max_size=30), st.data())
@settings(max_examples=200, deadline=None)
def test_cross_entropy_equals_elementary_graph(logits, data):
    target = data.draw(st.integers(0, len(logits) - 1))
    out_f, g_f = grads(lambda v: cross_entropy(v, target), logits)
    out_e, g_e = grads(lambda v: elementary_cross_entropy(v, target), logits)
    assert out_f == out_e  # forward: bit for bit
    assert g_f == pytest.approx(g_e, rel=1e-9, abs=1e-12)  # backward: same math, other order


def test_tape_backward_equals_graph_search():
    rng = random.Random(0)
    xs = [rng.uniform(-1, 1) for _ in range(12)]

    def expr(v):
        h = [dot(v[:6], v[6:]).relu() + v[0], (v[1] * v[2]).exp(), vsum(v[3:9]) ** 2]
        return cross_entropy(h, 1) * v[11] + dot(h, h)

    _, searched = grads(expr, xs)
    vs = [Value(x) for x in xs]
    with Tape() as tape:
        out = expr(vs)
    tape.backward(out)
    assert [v.grad for v in vs] == searched


def test_backward_is_iterative():
    x = Value(1.0)
    y = x
    for _ in range(5 * sys.getrecursionlimit()):
        y = y + 1.0
    y.backward()
    assert x.grad == 1.0
    assert len(topological_order(y)) == 5 * sys.getrecursionlimit()


def test_shared_subexpression_gets_both_paths():
    x = Value(3.0)
    y = x * x + x  # dy/dx = 2x + 1
    y.backward()
    assert x.grad == 7.0


def test_children_order_is_deterministic():
    a, b = Value(1.0), Value(2.0)
    assert dot([a], [b]).children == (a, b)
    assert vsum([b, a]).children == (b, a)


# against PyTorch float64 --------------------------------------------------------------------

TORCH_OPS = {
    "add": lambda x: x[0] + x[1],
    "mul": lambda x: x[0] * x[1],
    "pow": lambda x: x[0] ** 3,
    "exp": lambda x: x[0].exp(),
    "log": lambda x: x[0].log(),
    "tanh": lambda x: x[0].tanh(),
    "relu": lambda x: x[0].relu(),
    "sub": lambda x: x[0] - x[1],
    "div": lambda x: x[0] / x[1],
    "rdiv": lambda x: 1.5 / x[0],
    "composite": lambda x: (x[0] * x[1] + x[0].exp()).log() * x[1] - x[0] / 3,
}


@pytest.mark.parametrize("name", TORCH_OPS)
def test_matches_torch_float64(name):
    torch = pytest.importorskip("torch")
    fn, n, (lo, hi) = OPS[name]
    rng = random.Random(name)
    for _ in range(5):
        xs = [rng.uniform(max(lo, 0.1) if name == "relu" else lo, hi) for _ in range(n)]
        out, g = grads(fn, xs)
        ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
        t_out = TORCH_OPS[name](ts)
        t_out.backward()
        assert out == pytest.approx(t_out.item(), rel=1e-12)
        assert g == pytest.approx([t.grad.item() for t in ts], rel=1e-12)


def test_fused_ops_match_torch_float64():
    torch = pytest.importorskip("torch")
    rng = random.Random(1)
    xs = [rng.uniform(-2, 2) for _ in range(10)]
    out, g = grads(lambda v: cross_entropy([dot(v[:5], v[5:]), vsum(v[:3]), v[9]], 0), xs)
    t = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    logits = torch.stack([t[:5] @ t[5:], t[:3].sum(), t[9]])
    t_out = torch.nn.functional.cross_entropy(logits[None], torch.tensor([0]))
    t_out.backward()
    assert out == pytest.approx(t_out.item(), rel=1e-12)
    assert g == pytest.approx(t.grad.tolist(), rel=1e-10, abs=1e-14)


def test_no_grad_gives_the_same_floats_without_edges():
    """Evaluation's mode: the fused ops keep their forward floats and record no children."""
    from microgpt.scalar.engine import no_grad

    rng = random.Random(3)
    w = [[Value(rng.gauss(0, 1)) for _ in range(5)] for _ in range(4)]
    x = [Value(rng.gauss(0, 1)) for _ in range(5)]

    def forward():
        h = linear(x, w)
        return [vsum(h), dot(h, h), cross_entropy(h, 2), *h]

    want = forward()
    with no_grad():
        got = forward()
    assert [v.data for v in got] == [v.data for v in want]
    assert all(v.children == () for v in got) and all(v.children for v in want)
    assert linear(x, w)[0].children  # back to recording after the block
