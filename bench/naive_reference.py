"""Naive microGPT baseline, written from the facts in /work/shared/REFERENCE.md.

This is a deliberately slow, faithful re-implementation of the reference algorithm
(a scalar-autograd GPT): one `Value` graph node per elementary operation and a recursive
topological sort on every `backward()`.  It serves two purposes:

1. the speed baseline of the benchmark (keep it naive on purpose; do not optimise), and
2. the trusted reference in tests (it reproduces the reference's per-step losses and samples
   bit for bit, because it keeps the reference's order of floating-point operations).

Standard library only.  Nothing runs at import time.

    python3 bench/naive_reference.py --input /work/shared/data/names.txt --steps 1000

API:
    train(docs, *, steps=1000, seed=42, ..., step_callback=None) -> dict(losses, samples, ...)
    NaiveGPT(docs, seed=42, ...)  with .train_step(s, num_steps) -> float  (time N steps)
"""

import argparse
import math
import random
import sys


class Value:
    """A scalar graph node: data, grad, children and the local gradients w.r.t. them."""

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0
        self._children = children
        self._local_grads = local_grads

    # elementary ops: each creates exactly one node, local gradients stored at creation
    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, other):  # other: int/float constant
        return Value(self.data**other, (self,), (other * self.data ** (other - 1),))

    def log(self):
        return Value(math.log(self.data), (self,), (1 / self.data,))

    def exp(self):
        return Value(math.exp(self.data), (self,), (math.exp(self.data),))

    def relu(self):
        return Value(max(0, self.data), (self,), (float(self.data > 0),))

    # derived ops, composed from the above exactly as micrograd does
    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other**-1

    def __rtruediv__(self, other):
        return other * self**-1

    def backward(self):
        # recursive depth-first topological sort with a visited set (the slow part)
        topo, visited = [], set()

        def build_topo(v):
            if v not in visited:
                visited.add(v)
                for child in v._children:
                    build_topo(child)
                topo.append(v)

        build_topo(self)
        self.grad = 1
        for v in reversed(topo):
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad


# ---- model building blocks (reference op order) ----


def linear(x, w):
    return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]


def softmax(logits):
    m = max(v.data for v in logits)
    exps = [(v - m).exp() for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


class NaiveGPT:
    """Weights, Adam state and the per-position forward of the reference microGPT."""

    def __init__(
        self,
        docs,
        *,
        seed=42,
        n_layer=1,
        n_embd=16,
        n_head=4,
        block_size=16,
        tie_lm_head=False,
        input_rmsnorm=True,
    ):
        self.rng = random.Random(seed)
        self.docs = list(docs)
        self.rng.shuffle(self.docs)  # first use of the RNG stream
        self.uchars = sorted(set("".join(self.docs)))
        self.BOS = len(self.uchars)
        self.vocab_size = len(self.uchars) + 1
        self.n_layer, self.n_embd, self.n_head = n_layer, n_embd, n_head
        self.head_dim = n_embd // n_head
        self.block_size = block_size
        self.tie_lm_head, self.input_rmsnorm = tie_lm_head, input_rmsnorm

        def matrix(nout, nin, std=0.08):  # drawn row by row
            return [[Value(self.rng.gauss(0, std)) for _ in range(nin)] for _ in range(nout)]

        sd = {"wte": matrix(self.vocab_size, n_embd), "wpe": matrix(block_size, n_embd)}
        if not tie_lm_head:
            sd["lm_head"] = matrix(self.vocab_size, n_embd)
        for i in range(n_layer):
            for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
                sd[f"layer{i}.{name}"] = matrix(n_embd, n_embd)
            sd[f"layer{i}.mlp_fc1"] = matrix(4 * n_embd, n_embd)
            sd[f"layer{i}.mlp_fc2"] = matrix(n_embd, 4 * n_embd)
        self.sd = sd
        self.params = [p for mat in sd.values() for row in mat for p in row]
        self.m = [0.0] * len(self.params)  # Adam first moments
        self.v = [0.0] * len(self.params)  # Adam second moments

    def encode(self, doc):
        return [self.BOS] + [self.uchars.index(ch) for ch in doc] + [self.BOS]

    def gpt(self, token_id, pos_id, keys, values):
        sd, hd = self.sd, self.head_dim
        x = [t + p for t, p in zip(sd["wte"][token_id], sd["wpe"][pos_id])]
        if self.input_rmsnorm:
            x = rmsnorm(x)
        for li in range(self.n_layer):
            # 1) multi-head attention
            x_residual = x
            x = rmsnorm(x)
            q = linear(x, sd[f"layer{li}.attn_wq"])
            k = linear(x, sd[f"layer{li}.attn_wk"])
            v = linear(x, sd[f"layer{li}.attn_wv"])
            keys[li].append(k)
            values[li].append(v)
            x_attn = []
            for h in range(self.n_head):
                hs = h * hd
                q_h = q[hs : hs + hd]
                k_h = [ki[hs : hs + hd] for ki in keys[li]]
                v_h = [vi[hs : hs + hd] for vi in values[li]]
                attn_logits = [
                    sum(q_h[j] * k_h[t][j] for j in range(hd)) / hd**0.5 for t in range(len(k_h))
                ]
                w = softmax(attn_logits)
                head_out = [sum(w[t] * v_h[t][j] for t in range(len(v_h))) for j in range(hd)]
                x_attn.extend(head_out)
            x = linear(x_attn, sd[f"layer{li}.attn_wo"])
            x = [a + b for a, b in zip(x, x_residual)]
            # 2) MLP
            x_residual = x
            x = rmsnorm(x)
            x = linear(x, sd[f"layer{li}.mlp_fc1"])
            x = [xi.relu() for xi in x]
            x = linear(x, sd[f"layer{li}.mlp_fc2"])
            x = [a + b for a, b in zip(x, x_residual)]
        return linear(x, sd["wte"] if self.tie_lm_head else sd["lm_head"])

    def doc_loss(self, doc):
        """Mean next-token NLL over one document, as a graph node."""
        tokens = self.encode(doc)
        n = min(self.block_size, len(tokens) - 1)
        keys = [[] for _ in range(self.n_layer)]
        values = [[] for _ in range(self.n_layer)]
        losses = []
        for pos_id in range(n):
            probs = softmax(self.gpt(tokens[pos_id], pos_id, keys, values))
            losses.append(-probs[tokens[pos_id + 1]].log())
        return (1 / n) * sum(losses)

    def train_step(self, s, num_steps, lr=0.01, beta1=0.85, beta2=0.99, eps=1e-8):
        """One training step s (0-based) on docs[s % len(docs)]; returns the loss."""
        loss = self.doc_loss(self.docs[s % len(self.docs)])
        loss.backward()
        lr_t = lr * (1 - s / num_steps)
        for i, p in enumerate(self.params):
            self.m[i] = beta1 * self.m[i] + (1 - beta1) * p.grad
            self.v[i] = beta2 * self.v[i] + (1 - beta2) * p.grad**2
            m_hat = self.m[i] / (1 - beta1 ** (s + 1))
            v_hat = self.v[i] / (1 - beta2 ** (s + 1))
            p.data -= lr_t * m_hat / (v_hat**0.5 + eps)
            p.grad = 0
        return loss.data

    def sample(self, temperature=0.5):
        """Draw one document from the shared RNG stream."""
        keys = [[] for _ in range(self.n_layer)]
        values = [[] for _ in range(self.n_layer)]
        token_id, out = self.BOS, []
        for pos_id in range(self.block_size):
            logits = self.gpt(token_id, pos_id, keys, values)
            probs = softmax([l / temperature for l in logits])
            token_id = self.rng.choices(range(self.vocab_size), weights=[p.data for p in probs])[0]
            if token_id == self.BOS:
                break
            out.append(self.uchars[token_id])
        return "".join(out)


def train(
    docs,
    *,
    steps=1000,
    seed=42,
    n_layer=1,
    n_embd=16,
    n_head=4,
    block_size=16,
    tie_lm_head=False,
    input_rmsnorm=True,
    num_samples=20,
    temperature=0.5,
    val_docs=None,
    step_callback=None,
):
    """Train from scratch, then sample. Returns {'losses', 'samples', 'val_loss', 'model'}.

    step_callback(step, loss) is called after each step with the 1-based step number.
    val_docs (optional): mean per-document loss over them after training (draws no RNG).
    """
    if sys.getrecursionlimit() < 10000:  # recursive topo sort on deeper configs
        sys.setrecursionlimit(10000)
    model = NaiveGPT(
        docs,
        seed=seed,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        block_size=block_size,
        tie_lm_head=tie_lm_head,
        input_rmsnorm=input_rmsnorm,
    )
    losses = []
    for s in range(steps):
        losses.append(model.train_step(s, steps))
        if step_callback is not None:
            step_callback(s + 1, losses[-1])
    val_loss = None
    if val_docs:
        val_loss = sum(model.doc_loss(d).data for d in val_docs) / len(val_docs)
    samples = [model.sample(temperature) for _ in range(num_samples)]
    return {"losses": losses, "samples": samples, "val_loss": val_loss, "model": model}


def load_docs(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="text file, one document per line")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args(argv)
    out = train(
        load_docs(args.input),
        steps=args.steps,
        seed=args.seed,
        num_samples=args.samples,
        step_callback=lambda k, loss: print(f"step {k} loss {loss:.6f}", flush=True),
    )
    for i, s in enumerate(out["samples"], 1):
        print(f"sample {i}: {s}")


if __name__ == "__main__":
    main()
