"""Tensor mode's fused ops: each hand-written backward against autograd and finite differences,
and the flat Adam against torch.optim.Adam. All in float64."""

import pytest

torch = pytest.importorskip("torch")

from microgpt.config import TrainConfig  # noqa: E402
from microgpt.tensor import ops  # noqa: E402
from microgpt.tensor.optim import FlatAdam  # noqa: E402

F64 = torch.float64
EPS = torch.tensor(ops.RMS_EPS, dtype=F64)


def as_function(forward, backward):
    """Wrap a (forward, backward) pair as an autograd Function, so gradcheck can probe it."""

    class Op(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            out, saved = forward(*inputs)
            ctx.save_for_backward(*inputs, *saved)
            return out

        @staticmethod
        def backward(ctx, grad):
            return backward(grad, *ctx.saved_tensors)

    return Op.apply


def leaf(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64).requires_grad_()


def block_causal_mask(starts: list[int], rows: int = 1) -> torch.Tensor:
    """Additive (rows, W, W) mask for rows whose documents start at `starts`."""
    W = 7
    doc = torch.zeros(W, dtype=torch.long)
    for s in starts:
        doc[s:] += 1
    i = torch.arange(W)
    allowed = (doc[:, None] == doc[None, :]) & (i[None, :] <= i[:, None])
    mask = torch.zeros(W, W, dtype=F64).masked_fill_(~allowed, float("-inf"))
    return mask.expand(rows, W, W).contiguous()


# rmsnorm ------------------------------------------------------------------------------------------


def rmsnorm_reference(x):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)


def rmsnorm_forward(x):
    y, rstd = ops.rmsnorm(x, EPS)
    return y, (y, rstd)


def rmsnorm_backward(dy, x, y, rstd):
    return (ops.rmsnorm_backward(dy, y, rstd),)


rmsnorm_op = as_function(rmsnorm_forward, rmsnorm_backward)


def test_rmsnorm_matches_autograd():
    x = leaf(5, 8)
    dy = torch.randn(5, 8, dtype=F64)
    (want,) = torch.autograd.grad(rmsnorm_reference(x), x, dy)
    y, rstd = ops.rmsnorm(x.detach(), EPS)
    torch.testing.assert_close(y, rmsnorm_reference(x).detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(ops.rmsnorm_backward(dy, y, rstd), want, rtol=1e-12, atol=1e-14)
    acc = torch.randn(5, 8, dtype=F64)
    expected = acc + want
    ops.rmsnorm_backward(dy, y, rstd, acc)  # adds into acc
    torch.testing.assert_close(acc, expected, rtol=1e-12, atol=1e-14)


def test_rmsnorm_finite_differences():
    assert torch.autograd.gradcheck(rmsnorm_op, (leaf(4, 6),))


# attention ----------------------------------------------------------------------------------------


def attention_reference(q, k, v, mask):
    """Per head and row, q, k, v (H, R, W, D) and mask (R, W, W)."""
    att = torch.softmax(q @ k.mT / q.shape[-1] ** 0.5 + mask, dim=-1)
    return att @ v


def attention_op(mask):
    H, R, W, D = 2, mask.shape[0], mask.shape[1], 3

    def forward(q, k, v):
        y, att, _ = ops.attention(q, k, v, mask)
        return y, (att,)

    def backward(dy, q, k, v, att):
        return tuple(ops.attention_backward(dy, q, k, v, att, out=dy.new_empty(3, H * R, W, D)))

    return as_function(forward, backward)


@pytest.mark.parametrize("starts", [[], [3], [2, 5]])
def test_attention_matches_autograd(starts):
    H, R, W, D = 2, 3, 7, 3
    mask = torch.cat([block_causal_mask(starts), block_causal_mask([4]), block_causal_mask([])])
    q, k = leaf(H * R, W, D, seed=1), leaf(H * R, W, D, seed=2)
    # values of one sign: every y = att @ v is a weighted mean well away from 0, so the relative
    # comparison measures rounding, not the cancellation of the kernels' sums (which varies by CPU)
    v = leaf(H * R, W, D, seed=3) + 4
    dy = torch.randn(H * R, W, D, dtype=F64)
    as_4d = [t.view(H, R, W, D) for t in (q, k, v)]
    want_y = attention_reference(*as_4d, mask).reshape(H * R, W, D)
    want = torch.autograd.grad(want_y, (q, k, v), dy)
    y, att, att_scale = ops.attention(q.detach(), k.detach(), v.detach(), mask)
    assert att_scale is None
    torch.testing.assert_close(y, want_y.detach(), rtol=1e-13, atol=0)
    assert torch.all(att.view(H, R, W, W)[mask.expand(H, R, W, W).isinf()] == 0)
    got = ops.attention_backward(
        dy, q.detach(), k.detach(), v.detach(), att, out=dy.new_empty(3, H * R, W, D)
    )
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


def test_max_attention_logit_is_over_the_keys_each_query_may_see():
    H, R, W, D = 2, 2, 7, 3
    mask = torch.cat([block_causal_mask([3]), block_causal_mask([])])
    q, k = leaf(H * R, W, D, seed=7).detach(), leaf(H * R, W, D, seed=8).detach()
    logits = (q @ k.mT / D**0.5).view(H, R, W, W)
    visible = (mask == 0).expand(H, R, W, W)
    want = max(logits[visible].tolist())
    assert ops.max_attention_logit(q, k, mask).item() == pytest.approx(want, rel=1e-14)
    assert want < logits.max().item()  # a masked pair's logit would have been larger


def test_attention_finite_differences():
    mask = torch.cat([block_causal_mask([3]), block_causal_mask([])])  # R = 2 rows
    inputs = tuple(leaf(2 * 2, 7, 3, seed=s) for s in (4, 5, 6))
    assert torch.autograd.gradcheck(attention_op(mask), inputs)


# cross-entropy ------------------------------------------------------------------------------------


def test_cross_entropy_matches_autograd():
    logits = leaf(6, 5)
    targets = torch.tensor([[0], [4], [2], [2], [1], [0]])
    weights = torch.tensor([[0.5], [0.25], [0.25], [0.0], [1.0], [0.0]], dtype=F64)
    per_position = torch.nn.functional.cross_entropy(logits, targets[:, 0], reduction="none")
    want_loss = (per_position * weights[:, 0]).sum()
    (want_grad,) = torch.autograd.grad(want_loss, logits)
    loss, dlogits = ops.cross_entropy_with_grad(logits.detach(), targets, weights, -weights)
    torch.testing.assert_close(loss.view(()), want_loss.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(dlogits, want_grad, rtol=1e-12, atol=1e-15)
    assert torch.all(dlogits[weights[:, 0] == 0] == 0), "a padding position got a gradient"
    no_grad_loss = ops.cross_entropy(logits.detach(), targets, -weights)
    torch.testing.assert_close(no_grad_loss, loss, rtol=0, atol=0)


def test_cross_entropy_finite_differences():
    targets = torch.tensor([[1], [3], [0]])
    weights = torch.tensor([[0.5], [0.3], [0.2]], dtype=F64)

    def forward(logits):
        loss, dlogits = ops.cross_entropy_with_grad(logits, targets, weights, -weights)
        return loss, (dlogits,)

    op = as_function(forward, lambda dloss, logits, dlogits: (dloss * dlogits,))
    assert torch.autograd.gradcheck(op, (leaf(3, 4),))


def z_loss_reference(logits, targets, weights, c):
    """sum_i w_i (cross-entropy_i + c logsumexp(logits_i)²), written out for autograd."""
    per_position = torch.nn.functional.cross_entropy(logits, targets[:, 0], reduction="none")
    per_position = per_position + c * torch.logsumexp(logits, -1) ** 2
    return (per_position * weights[:, 0]).sum()


@pytest.mark.parametrize("c", [1e-4, 0.3])
def test_cross_entropy_with_z_loss_matches_autograd(c):
    logits = leaf(6, 5) * 3 + 2  # log Z well away from 0, of both signs' worth of logits
    targets = torch.tensor([[0], [4], [2], [2], [1], [0]])
    weights = torch.tensor([[0.5], [0.25], [0.25], [0.0], [1.0], [0.0]], dtype=F64)
    want_loss = z_loss_reference(logits, targets, weights, c)
    (want_grad,) = torch.autograd.grad(want_loss, logits)
    loss, dlogits = ops.cross_entropy_with_grad(logits.detach(), targets, weights, -weights, c)
    torch.testing.assert_close(loss.view(()), want_loss.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(dlogits, want_grad, rtol=1e-12, atol=1e-15)
    assert torch.all(dlogits[weights[:, 0] == 0] == 0), "a padding position got a gradient"
    # the z term alone: c sum_i w_i (log Z_i)², and its gradient 2 c w_i log Z_i softmax_i
    x = logits.detach()
    plain_loss, plain_grad = ops.cross_entropy_with_grad(x, targets, weights, -weights)
    log_z = torch.logsumexp(x, -1, keepdim=True)
    z_term = c * (weights * log_z**2).sum()
    torch.testing.assert_close((loss - plain_loss).view(()), z_term, rtol=1e-11, atol=0)
    z_grad = 2 * c * weights * log_z * torch.softmax(x, -1)
    torch.testing.assert_close(dlogits - plain_grad, z_grad, rtol=1e-9, atol=1e-15)


def test_cross_entropy_with_z_loss_finite_differences():
    targets = torch.tensor([[1], [3], [0]])
    weights = torch.tensor([[0.5], [0.3], [0.2]], dtype=F64)

    def forward(logits):
        loss, dlogits = ops.cross_entropy_with_grad(logits, targets, weights, -weights, 0.2)
        return loss, (dlogits,)

    op = as_function(forward, lambda dloss, logits, dlogits: (dloss * dlogits,))
    assert torch.autograd.gradcheck(op, (leaf(3, 4, seed=5) * 2 + 1,))


def test_cross_entropy_without_z_loss_is_the_plain_formula_bit_for_bit():
    """z_loss = 0 (the default) computes exactly what the op computed before it had z_loss."""
    logits, targets = leaf(6, 5).detach(), torch.tensor([[0], [4], [2], [2], [1], [0]])
    weights = torch.tensor([[0.5], [0.25], [0.25], [0.0], [1.0], [0.0]], dtype=F64)
    logp = torch.log_softmax(logits, dim=-1)
    want_loss = logp.gather(1, targets).mT @ -weights
    want_grad = logp.exp().mul_(weights).scatter_add_(1, targets, -weights)
    for got in (
        ops.cross_entropy_with_grad(logits, targets, weights, -weights),
        ops.cross_entropy_with_grad(logits, targets, weights, -weights, 0.0),
    ):
        assert torch.equal(got[0], want_loss) and torch.equal(got[1], want_grad)


# logit soft-capping -------------------------------------------------------------------------------


def softcap_op(cap):
    def forward(z):
        y, t = ops.softcap(z, cap)
        return y, (t,)

    return as_function(forward, lambda dy, z, t: (ops.softcap_backward(dy, t),))


@pytest.mark.parametrize("cap", [0.5, 3.0, 30.0])
def test_softcap_matches_autograd(cap):
    z = leaf(6, 5) * 4  # logits from well inside the cap to several times it
    dy = torch.randn(6, 5, dtype=F64)
    want_y = cap * torch.tanh(z / cap)
    (want,) = torch.autograd.grad(want_y, z, dy)
    y, t = ops.softcap(z.detach(), cap)
    torch.testing.assert_close(y, want_y.detach(), rtol=1e-14, atol=0)
    assert y.abs().max() < cap
    torch.testing.assert_close(ops.softcap_backward(dy, t), want, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(want, dy * (1 - torch.tanh(z.detach() / cap) ** 2))


@pytest.mark.parametrize("cap", [0.5, 3.0])
def test_softcap_finite_differences(cap):
    assert torch.autograd.gradcheck(softcap_op(cap), (leaf(4, 6, seed=2) * 2,))


def test_softcap_then_cross_entropy_matches_autograd():
    """The order of the training loss: soft-cap, then the cross-entropy with its z-loss term,
    whose log Z is of the capped logits; the gradient back through both to the raw logits."""
    cap, c = 2.0, 0.1
    z = leaf(6, 5) * 3
    targets = torch.tensor([[0], [4], [2], [2], [1], [0]])
    weights = torch.tensor([[0.5], [0.25], [0.25], [0.0], [1.0], [0.0]], dtype=F64)
    want_loss = z_loss_reference(cap * torch.tanh(z / cap), targets, weights, c)
    (want,) = torch.autograd.grad(want_loss, z)
    y, t = ops.softcap(z.detach(), cap)
    loss, dy = ops.cross_entropy_with_grad(y, targets, weights, -weights, c)
    torch.testing.assert_close(loss.view(()), want_loss.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(ops.softcap_backward(dy, t), want, rtol=1e-12, atol=1e-15)


# the MLP's activations ---------------------------------------------------------------------------


def gelu_tanh_reference(x):
    """GPT-2's GELU written out: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))."""
    return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))


ACTIVATION_REFERENCES = {
    "relu": torch.relu,
    "relu2": lambda x: torch.relu(x) ** 2,
    "gelu": gelu_tanh_reference,
}


def activation_op(name):
    forward, backward = ops.ACTIVATIONS[name]

    def fwd(x):
        y, saved = forward(x.clone())  # relu and relu2 work in place
        return y, (saved,)

    return as_function(fwd, lambda dy, x, saved: (backward(dy, saved),))


def test_every_activation_is_tested():
    from microgpt.config import SWITCHES

    assert (
        set(ops.ACTIVATIONS) == set(ACTIVATION_REFERENCES) == set(SWITCHES["mlp_activation"].values)
    )


@pytest.mark.parametrize("name", ACTIVATION_REFERENCES)
def test_activation_matches_autograd(name):
    x = leaf(4, 6) * 2
    dy = torch.randn(4, 6, dtype=F64)
    want_y = ACTIVATION_REFERENCES[name](x)
    (want,) = torch.autograd.grad(want_y, x, dy)
    forward, backward = ops.ACTIVATIONS[name]
    y, saved = forward(x.detach().clone())
    torch.testing.assert_close(y, want_y.detach(), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(backward(dy, saved), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ACTIVATION_REFERENCES)
def test_activation_finite_differences(name):
    x = leaf(4, 6, seed=3)
    with torch.no_grad():  # keep away from relu's kink, where there is no derivative
        x[x.abs() < 1e-3] = 0.5
    assert torch.autograd.gradcheck(activation_op(name), (x,))


def test_gelu_is_torch_tanh_form():
    x = torch.linspace(-5, 5, 101, dtype=F64)
    want = torch.nn.functional.gelu(x, approximate="tanh")
    torch.testing.assert_close(gelu_tanh_reference(x), want, rtol=1e-14, atol=1e-15)


# RoPE -------------------------------------------------------------------------------------------


def rope_reference(x, positions, base=10000.0):
    """Pairs (x[i], x[i + D/2]) as complex numbers, times exp(i pos base^(-2i/D)). x (..., N, D)."""
    D = x.shape[-1]
    theta = positions[:, None].to(F64) * base ** (-torch.arange(0, D, 2, dtype=F64) / D)
    z = torch.complex(x[..., : D // 2], x[..., D // 2 :]) * torch.polar(
        torch.ones_like(theta), theta
    )
    return torch.cat((z.real, z.imag), -1)


def rope_op(positions, D):
    cos, sin = ops.rope_tables(D, 16, F64, torch.device("cpu"))
    cos, sin = cos[positions], sin[positions]
    return as_function(
        lambda x: (ops.rope(x, cos, sin), ()),
        lambda dy, x: (ops.rope_backward(dy, cos, sin),),
    )


def test_rope_matches_autograd():
    positions = torch.tensor([0, 1, 2, 3, 0, 1, 2, 0, 5, 15])  # packed: documents restart at 0
    x = leaf(3, 10, 6)  # (heads, N, D)
    dy = torch.randn(3, 10, 6, dtype=F64)
    want_y = rope_reference(x, positions)
    (want,) = torch.autograd.grad(want_y, x, dy)
    cos, sin = ops.rope_tables(6, 16, F64, torch.device("cpu"))
    y = ops.rope(x.detach(), cos[positions], sin[positions])
    torch.testing.assert_close(y, want_y.detach(), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(y[:, [0, 4, 7]], x.detach()[:, [0, 4, 7]], rtol=0, atol=0)  # pos 0
    got = ops.rope_backward(dy, cos[positions], sin[positions])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    # a rotation keeps lengths, and the backward undoes the forward
    torch.testing.assert_close(y.norm(dim=-1), x.detach().norm(dim=-1), rtol=1e-13, atol=0)
    back = ops.rope_backward(y, cos[positions], sin[positions])
    torch.testing.assert_close(back, x.detach(), rtol=1e-13, atol=1e-15)


def test_rope_finite_differences():
    positions = torch.tensor([0, 3, 1, 7])
    assert torch.autograd.gradcheck(rope_op(positions, 4), (leaf(2, 4, 4, seed=9),))


def test_rope_tables_match_scalar_mode():
    from microgpt.rope import rope_tables

    cos, sin = ops.rope_tables(6, 5, F64, torch.device("cpu"))
    want_cos, want_sin = rope_tables(6, 5)
    assert cos.tolist() == [row + row for row in want_cos]
    assert sin.tolist() == [[-s for s in row] + row for row in want_sin]


# qk-norm: the rmsnorm op over each head's D channels ---------------------------------------------


def test_rmsnorm_per_head_matches_autograd():
    x = leaf(2 * 3, 5, 4)  # (2H, N, D): queries and keys of 3 heads
    dy = torch.randn(2 * 3, 5, 4, dtype=F64)
    (want,) = torch.autograd.grad(rmsnorm_reference(x), x, dy)
    y, rstd = ops.rmsnorm(x.detach(), EPS)
    assert rstd.shape == (6, 5, 1)
    torch.testing.assert_close(y, rmsnorm_reference(x).detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(ops.rmsnorm_backward(dy, y, rstd), want, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(rmsnorm_op, (leaf(2, 3, 4, seed=2),))


# Adam ---------------------------------------------------------------------------------------------


def test_flat_adam_matches_torch_optim_and_scalar_formula():
    tc = TrainConfig()
    p0 = torch.randn(50, dtype=F64)
    grads = [torch.randn(50, dtype=F64) for _ in range(4)]
    lrs = [0.01, 0.0099, 0.0098, 0.0097]

    p, g = p0.clone(), torch.zeros(50, dtype=F64)
    adam = FlatAdam(p, g, tc)
    ref = p0.clone().requires_grad_()
    opt = torch.optim.Adam([ref], lr=0.01, betas=(tc.beta1, tc.beta2), eps=tc.eps, foreach=False)
    m, v, q = [0.0] * 50, [0.0] * 50, p0.tolist()  # scalar mode's loop, in Python floats
    for step, (grad, lr) in enumerate(zip(grads, lrs), start=1):
        g.copy_(grad)
        adam.update([lr], step)
        ref.grad = grad.clone()
        opt.param_groups[0]["lr"] = lr
        opt.step()
        for i, gi in enumerate(grad.tolist()):
            m[i] = tc.beta1 * m[i] + (1 - tc.beta1) * gi
            v[i] = tc.beta2 * v[i] + (1 - tc.beta2) * gi**2
            m_hat, v_hat = m[i] / (1 - tc.beta1**step), v[i] / (1 - tc.beta2**step)
            q[i] -= lr * m_hat / (v_hat**0.5 + tc.eps)
    torch.testing.assert_close(p, ref.detach(), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(p, torch.tensor(q, dtype=F64), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(adam.m, torch.tensor(m, dtype=F64), rtol=1e-13, atol=1e-16)
    torch.testing.assert_close(adam.v, torch.tensor(v, dtype=F64), rtol=1e-13, atol=1e-16)


def test_max_attention_logit_can_leave_out_the_padding_queries():
    H, R, W, D = 2, 1, 7, 3
    mask = block_causal_mask([4, 5, 6])  # a document of 4 positions, then 3 of padding
    q, k = leaf(H * R, W, D, seed=3).detach(), leaf(H * R, W, D, seed=4).detach()
    k[:, 4:] = q[:, 4:] * 100  # each padding position sees only itself, and scores it high
    logits = (q @ k.mT / D**0.5).view(H, R, W, W)
    real = torch.tensor([True] * 4 + [False] * 3)
    visible = (mask == 0).expand(H, R, W, W) & real.view(1, 1, W, 1)
    want = max(logits[visible].tolist())
    assert ops.max_attention_logit(q, k, mask, real).item() == pytest.approx(want, rel=1e-14)
    assert ops.max_attention_logit(q, k, mask).item() > want  # a padding query's is larger
