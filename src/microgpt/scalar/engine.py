"""A scalar reverse-mode autograd engine, standard library only.

Every `Value` holds a float, its gradient, the nodes it was computed from (`children`, a tuple,
so the order is fixed) and d(self)/d(child) for each of them (`local_grads`), computed in the
forward pass. `backward()` walks the graph once in reverse topological order and applies the
chain rule: child.grad += local_grad * node.grad. A `Tape` gives that order for free when the
graph is built inside a `with` block, which is how the model trains.

The elementary ops are +, *, ** (by a constant), exp, log, tanh and relu; -, / and the reflected
forms are built from them. Fused ops make the model fast without changing its numbers: `dot`
and `vsum` (one node for a whole sum instead of one per +), `linear` (a `dot` per row of a
matrix) and `cross_entropy` (one node for -log softmax(logits)[target], whose local gradients
are softmax - onehot). Each fused op
computes its forward value with exactly the float operations, in the order, that the
elementary ops would, so results are bit-for-bit the same.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from functools import partial, reduce
from operator import add, mul

# Add floats strictly left to right, like a chain of `+`. The builtin sum() does that up to
# Python 3.11 and is the fastest way; from 3.12 on it compensates rounding, which is more
# accurate but no longer equal to the chain.
sum_in_order = sum if sys.version_info < (3, 12) else partial(reduce, add)


class Value:
    """A scalar in the graph: its value, its gradient, and how to pass the gradient on."""

    __slots__ = ("data", "grad", "children", "local_grads")

    def __init__(self, data: float, children: tuple = (), local_grads: tuple = ()):
        self.data = data
        self.grad = 0.0
        self.children = children
        self.local_grads = local_grads
        if children and _recording is not None:
            _recording.append(self)

    def __repr__(self) -> str:
        return f"Value(data={self.data}, grad={self.grad})"

    # elementary ops --------------------------------------------------------------------------

    def __add__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0))

    def __mul__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, k: float) -> Value:
        assert isinstance(k, (int, float)), "only constant exponents"
        return Value(self.data**k, (self,), (k * self.data ** (k - 1),))

    def exp(self) -> Value:
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def log(self) -> Value:
        return Value(math.log(self.data), (self,), (1.0 / self.data,))

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        return Value(t, (self,), (1.0 - t * t,))

    def relu(self) -> Value:
        return Value(max(0.0, self.data), (self,), (float(self.data > 0),))

    # derived ops -----------------------------------------------------------------------------

    def __neg__(self) -> Value:
        return self * -1.0

    def __sub__(self, other: Value | float) -> Value:
        return self + (-other)

    def __truediv__(self, other: Value | float) -> Value:
        return self * other**-1

    def __radd__(self, other: float) -> Value:
        return self + other

    def __rmul__(self, other: float) -> Value:
        return self * other

    def __rsub__(self, other: float) -> Value:
        return other + (-self)

    def __rtruediv__(self, other: float) -> Value:
        return other * self**-1

    # backward --------------------------------------------------------------------------------

    def backward(self) -> None:
        """Accumulate d(self)/d(node) into node.grad for every node self depends on."""
        self.grad = 1.0
        _chain_rule(reversed(topological_order(self)))


def _chain_rule(nodes_last_first) -> None:
    for node in nodes_last_first:
        g = node.grad
        if g:  # a zero gradient (behind an inactive ReLU, say) has nothing to pass on
            for child, local_grad in zip(node.children, node.local_grads):
                child.grad += local_grad * g


def topological_order(root: Value) -> list[Value]:
    """The interior nodes (those with children) under `root`, each after all of its children.

    Depth-first with an explicit stack, so deep graphs cannot overflow Python's recursion
    limit. Leaves are skipped: they have nothing to pass their gradient on to."""
    order: list[Value] = []
    visited = {root}
    stack = [(root, iter(root.children))]
    while stack:
        node, pending = stack[-1]
        for child in pending:
            if child.children and child not in visited:
                visited.add(child)
                stack.append((child, iter(child.children)))
                break
        else:  # every child is done
            stack.pop()
            order.append(node)
    return order


# the tape: a faster backward for a graph built inside one `with` block -------------------------

_recording: list[Value] | None = None  # the active tape's nodes, while one is active


class Tape:
    """Records every interior node made inside `with Tape() as tape:` in creation order.

    A node is always made after its children, so creation order is already topological:
    `tape.backward(root)` needs no graph search, which saves about a fifth of a training step.
    Nodes the root does not depend on keep a zero gradient and cost one check each."""

    def __init__(self) -> None:
        self.nodes: list[Value] = []
        self._outer: list[Value] | None = None

    def __enter__(self) -> Tape:
        global _recording
        self._outer, _recording = _recording, self.nodes
        return self

    def __exit__(self, *exc) -> None:
        global _recording
        _recording = self._outer

    def backward(self, root: Value) -> None:
        root.grad = 1.0
        _chain_rule(reversed(self.nodes))


# no graph: evaluation only -----------------------------------------------------------------------

_grad_enabled = True  # False inside `no_grad()`: the fused ops record no children


@contextmanager
def no_grad():
    """Inside, the fused ops (where nearly all the graph's edges are) make nodes without children
    or local gradients: the same forward floats, no backward, a fraction of the work."""
    global _grad_enabled
    outer, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = outer


# fused ops -------------------------------------------------------------------------------------


def vsum(xs: list[Value]) -> Value:
    """x0 + x1 + ... as one node (the same float as Python's `sum` of Values)."""
    if not _grad_enabled:
        return Value(sum_in_order(x.data for x in xs))
    return Value(sum_in_order(x.data for x in xs), tuple(xs), (1.0,) * len(xs))


def dot(ws: list[Value], xs: list[Value]) -> Value:
    """w0*x0 + w1*x1 + ... as one node; d/dw_i = x_i and d/dx_i = w_i."""
    wd = [w.data for w in ws]
    xd = [x.data for x in xs]
    if not _grad_enabled:
        return Value(sum_in_order(map(mul, wd, xd)))
    return Value(sum_in_order(map(mul, wd, xd)), (*ws, *xs), (*xd, *wd))


def linear(x: list[Value], w: list[list[Value]]) -> list[Value]:
    """y_i = sum_j W[i][j] x_j (no bias): one `dot` node per row, reading x's floats once."""
    xd = [v.data for v in x]
    if not _grad_enabled:
        return [Value(sum_in_order(map(mul, [p.data for p in row], xd))) for row in w]
    xs = tuple(x)
    out = []
    for row in w:
        wd = [p.data for p in row]
        out.append(Value(sum_in_order(map(mul, wd, xd)), (*row, *xs), (*xd, *wd)))
    return out


def cross_entropy(logits: list[Value], target: int) -> Value:
    """-log softmax(logits)[target] as one node; d/dlogit_i = p_i - [i == target].

    The forward repeats the elementary graph's floats: exp(l - max), their sum, p = e * sum**-1.
    """
    m = max(v.data for v in logits)
    exps = [math.exp(v.data - m) for v in logits]
    inv_total = sum_in_order(exps) ** -1
    probs = [e * inv_total for e in exps]
    if not _grad_enabled:
        return Value(-math.log(probs[target]))
    local_grads = probs.copy()
    local_grads[target] -= 1.0
    return Value(-math.log(probs[target]), tuple(logits), tuple(local_grads))
