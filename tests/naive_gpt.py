"""The naive microGPT: the architecture written plainly from the facts in REFERENCE.md.

A deliberately slow, faithful scalar-autograd GPT: one `Value` graph node per elementary
operation and a recursive topological sort on every `backward()`. Standard library only;
nothing runs at import time. It serves as

1. the speed baseline of `bench/scalar_speed.py` (keep it naive on purpose; do not optimise),
2. the trusted reference of the tests: scalar mode follows it step by step
   (`test_reference.py`; it reproduces the reference's per-step losses and samples bit for bit,
   because it keeps the reference's order of floating-point operations), and tensor mode's
   loss and gradients are checked against it (`test_tensor_parity.py`).

Besides the reference design it implements every design switch of `microgpt.config` (each a
keyword argument with the reference's value as default): `tie_lm_head`, `input_rmsnorm`,
`final_rmsnorm`, `mlp_activation` (relu, relu2, gelu in tanh form), `qk_norm` and `position`
(learned, or rope: no wpe, pairs (x[i], x[i + D/2]) of each head's q and k rotated by
pos * 10000**(-2i/D)) and `init` (gaussian, or zero: the same draws, then every attn_wo and
mlp_fc2 zero and lm_head times 1/80; a tied head keeps wte's draws); and the logit soft-cap,
`logit_softcap` C (0: off): the logits become C * tanh(logits / C).

    NaiveGPT(vocab_size, rng, n_layer=1, ..., **switches)   the model: weights drawn from rng
    NaiveRun(docs, seed=42, **model)                        the reference script around it:
        .train_step(s, num_steps) -> loss, .sample()        shuffle, vocabulary, train, sample
"""

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

    def tanh(self):
        t = math.tanh(self.data)
        return Value(t, (self,), (1 - t * t,))

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

        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 100_000))  # deep graphs: wide layers, long documents
        try:
            build_topo(self)
        finally:  # a raised limit left behind lets C code (json) overflow the stack instead
            sys.setrecursionlimit(limit)
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


def activation(kind, x):
    if kind == "relu":
        return [h.relu() for h in x]
    if kind == "relu2":
        return [h.relu() ** 2 for h in x]
    if kind == "gelu":  # tanh form, GPT-2's
        c = math.sqrt(2 / math.pi)
        return [0.5 * h * (1 + (c * (h + 0.044715 * h**3)).tanh()) for h in x]
    raise ValueError(kind)


def rope(x, pos):
    """Rotate pairs (x[i], x[i + D/2]) of one head by pos * 10000**(-2i/D)."""
    half = len(x) // 2
    angles = [pos * 10000 ** (-2 * i / len(x)) for i in range(half)]
    cos, sin = [math.cos(a) for a in angles], [math.sin(a) for a in angles]
    first = [x[i] * cos[i] - x[i + half] * sin[i] for i in range(half)]
    second = [x[i] * sin[i] + x[i + half] * cos[i] for i in range(half)]
    return first + second


class NaiveGPT:
    """Weights, Adam state and the per-position forward of microGPT, in every design."""

    def __init__(
        self,
        vocab_size,
        rng,
        *,
        n_layer=1,
        n_embd=16,
        n_head=4,
        block_size=16,
        tie_lm_head=False,
        input_rmsnorm=True,
        final_rmsnorm=False,
        mlp_activation="relu",
        qk_norm=False,
        position="learned",
        init="gaussian",
        logit_softcap=0.0,
    ):
        self.vocab_size = vocab_size
        self.n_layer, self.n_embd, self.n_head = n_layer, n_embd, n_head
        self.head_dim = n_embd // n_head
        self.block_size = block_size
        self.tie_lm_head, self.input_rmsnorm = tie_lm_head, input_rmsnorm
        self.final_rmsnorm, self.mlp_activation = final_rmsnorm, mlp_activation
        self.qk_norm, self.position = qk_norm, position
        self.logit_softcap = logit_softcap

        def matrix(nout, nin, std=0.08):  # drawn row by row
            return [[Value(rng.gauss(0, std)) for _ in range(nin)] for _ in range(nout)]

        sd = {"wte": matrix(vocab_size, n_embd)}
        if position == "learned":
            sd["wpe"] = matrix(block_size, n_embd)
        if not tie_lm_head:
            sd["lm_head"] = matrix(vocab_size, n_embd)
        for i in range(n_layer):
            for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
                sd[f"layer{i}.{name}"] = matrix(n_embd, n_embd)
            sd[f"layer{i}.mlp_fc1"] = matrix(4 * n_embd, n_embd)
            sd[f"layer{i}.mlp_fc2"] = matrix(n_embd, 4 * n_embd)
        if init == "zero":  # drawn as above, then the output projections zeroed, the head shrunk
            for i in range(n_layer):
                for name in ("attn_wo", "mlp_fc2"):
                    sd[f"layer{i}.{name}"] = [
                        [Value(0.0) for _ in row] for row in sd[f"layer{i}.{name}"]
                    ]
            if not tie_lm_head:
                sd["lm_head"] = [[Value(p.data * (1 / 80)) for p in row] for row in sd["lm_head"]]
        self.sd = sd
        self.params = [p for mat in sd.values() for row in mat for p in row]
        self.m = [0.0] * len(self.params)  # Adam first moments
        self.v = [0.0] * len(self.params)  # Adam second moments
        self.adam_steps = 0

    def gpt(self, token_id, pos_id, keys, values):
        sd, hd = self.sd, self.head_dim
        x = sd["wte"][token_id]
        if self.position == "learned":
            x = [t + p for t, p in zip(x, sd["wpe"][pos_id])]
        if self.input_rmsnorm:
            x = rmsnorm(x)
        for li in range(self.n_layer):
            # 1) multi-head attention
            x_residual = x
            x = rmsnorm(x)
            q = linear(x, sd[f"layer{li}.attn_wq"])
            k = linear(x, sd[f"layer{li}.attn_wk"])
            v = linear(x, sd[f"layer{li}.attn_wv"])
            heads = range(0, self.n_embd, hd)
            if self.qk_norm:
                q = [y for h in heads for y in rmsnorm(q[h : h + hd])]
                k = [y for h in heads for y in rmsnorm(k[h : h + hd])]
            if self.position == "rope":
                q = [y for h in heads for y in rope(q[h : h + hd], pos_id)]
                k = [y for h in heads for y in rope(k[h : h + hd], pos_id)]
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
            x = activation(self.mlp_activation, x)
            x = linear(x, sd[f"layer{li}.mlp_fc2"])
            x = [a + b for a, b in zip(x, x_residual)]
        if self.final_rmsnorm:
            x = rmsnorm(x)
        logits = linear(x, sd["wte"] if self.tie_lm_head else sd["lm_head"])
        if self.logit_softcap:
            c = self.logit_softcap
            logits = [c * (z / c).tanh() for z in logits]
        return logits

    def doc_loss(self, tokens):
        """Mean next-token NLL over one encoded document, as a graph node."""
        n = min(self.block_size, len(tokens) - 1)
        keys = [[] for _ in range(self.n_layer)]
        values = [[] for _ in range(self.n_layer)]
        losses = []
        for pos_id in range(n):
            probs = softmax(self.gpt(tokens[pos_id], pos_id, keys, values))
            losses.append(-probs[tokens[pos_id + 1]].log())
        return (1 / n) * sum(losses)

    def loss(self, docs):
        """Mean over encoded documents of each document's mean loss."""
        if len(docs) == 1:
            return self.doc_loss(docs[0])
        return (1 / len(docs)) * sum(self.doc_loss(d) for d in docs)

    def grads(self):
        """d loss / d weight after `backward()`, as `name: rows` of floats."""
        return {name: [[p.grad for p in row] for row in m] for name, m in self.sd.items()}

    def adam(self, lr, beta1=0.85, beta2=0.99, eps=1e-8):
        self.adam_steps += 1
        t = self.adam_steps
        for i, p in enumerate(self.params):
            self.m[i] = beta1 * self.m[i] + (1 - beta1) * p.grad
            self.v[i] = beta2 * self.v[i] + (1 - beta2) * p.grad**2
            m_hat = self.m[i] / (1 - beta1**t)
            v_hat = self.v[i] / (1 - beta2**t)
            p.data -= lr * m_hat / (v_hat**0.5 + eps)
            p.grad = 0


class NaiveRun:
    """The reference script: one RNG stream shuffles the documents, draws the weights, and
    after training draws the samples; step s trains on document s alone."""

    def __init__(self, docs, *, seed=42, **model):
        self.rng = random.Random(seed)
        self.docs = list(docs)
        self.rng.shuffle(self.docs)  # first use of the RNG stream
        self.uchars = sorted(set("".join(self.docs)))
        self.BOS = len(self.uchars)
        self.model = NaiveGPT(len(self.uchars) + 1, self.rng, **model)
        self.params = self.model.params

    def encode(self, doc):
        return [self.BOS] + [self.uchars.index(ch) for ch in doc] + [self.BOS]

    def train_step(self, s, num_steps, lr=0.01):
        """One training step s (0-based) on docs[s % len(docs)]; returns the loss."""
        loss = self.model.doc_loss(self.encode(self.docs[s % len(self.docs)]))
        loss.backward()
        self.model.adam(lr * (1 - s / num_steps))
        return loss.data

    def sample(self, temperature=0.5):
        """Draw one document from the shared RNG stream."""
        m = self.model
        keys = [[] for _ in range(m.n_layer)]
        values = [[] for _ in range(m.n_layer)]
        token_id, out = self.BOS, []
        for pos_id in range(m.block_size):
            logits = m.gpt(token_id, pos_id, keys, values)
            probs = softmax([l / temperature for l in logits])
            token_id = self.rng.choices(range(m.vocab_size), weights=[p.data for p in probs])[0]
            if token_id == self.BOS:
                break
            out.append(self.uchars[token_id])
        return "".join(out)
