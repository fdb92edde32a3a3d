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
        y, att = ops.attention(q, k, v, mask)
        return y, (att,)

    def backward(dy, q, k, v, att):
        return tuple(ops.attention_backward(dy, q, k, v, att, out=dy.new_empty(3, H * R, W, D)))

    return as_function(forward, backward)


@pytest.mark.parametrize("starts", [[], [3], [2, 5]])
def test_attention_matches_autograd(starts):
    H, R, W, D = 2, 3, 7, 3
    mask = torch.cat([block_causal_mask(starts), block_causal_mask([4]), block_causal_mask([])])
    q, k, v = leaf(H * R, W, D, seed=1), leaf(H * R, W, D, seed=2), leaf(H * R, W, D, seed=3)
    dy = torch.randn(H * R, W, D, dtype=F64)
    as_4d = [t.view(H, R, W, D) for t in (q, k, v)]
    want_y = attention_reference(*as_4d, mask).reshape(H * R, W, D)
    want = torch.autograd.grad(want_y, (q, k, v), dy)
    y, att = ops.attention(q.detach(), k.detach(), v.detach(), mask)
    torch.testing.assert_close(y, want_y.detach(), rtol=1e-13, atol=0)
    assert torch.all(att.view(H, R, W, W)[mask.expand(H, R, W, W).isinf()] == 0)
    got = ops.attention_backward(
        dy, q.detach(), k.detach(), v.detach(), att, out=dy.new_empty(3, H * R, W, D)
    )
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


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


def test_relu_backward():
    pre = leaf(4, 6)
    dy = torch.randn(4, 6, dtype=F64)
    (want,) = torch.autograd.grad(torch.relu(pre), pre, dy)
    torch.testing.assert_close(ops.relu_backward(dy, torch.relu(pre.detach())), want)


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
        adam.update(lr, step)
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
