"""microGPT on the scalar engine: the model, its loss, Adam and Muon, one position at a time.

Reads beside REFERENCE.md: the forward for one token at position `pos` appends its keys and
values to a per-layer cache, so attention is causal by construction. Names and the order of
operations are the same as in tensor mode (`microgpt.tensor.model`).
"""

from __future__ import annotations

import gc
import math
from contextlib import contextmanager

from microgpt.config import GRAD_CLIP_EPS, ModelConfig, TrainConfig
from microgpt.data import training_pairs
from microgpt.init import Matrix
from microgpt.muon import muon_matrices, newton_schulz, update_scale
from microgpt.rope import rope_tables
from microgpt.scalar.engine import Tape, Value, cross_entropy, dot, linear, no_grad, vsum


def rmsnorm(x: list[Value]) -> list[Value]:
    ms = dot(x, x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def softmax(logits: list[Value]) -> list[Value]:
    m = max(v.data for v in logits)  # a constant shift: no gradient flows through it
    exps = [(v - m).exp() for v in logits]
    total = vsum(exps)
    return [e / total for e in exps]


def logsumexp(logits: list[Value]) -> Value:
    """log Z = log sum_i exp(logits_i), the log of the softmax's normaliser."""
    m = max(v.data for v in logits)  # a constant shift: no gradient flows through it
    return vsum([(v - m).exp() for v in logits]).log() + m


def softcap(logits: list[Value], cap: float) -> list[Value]:
    """Logit soft-capping (Gemma 2): cap * tanh(z / cap), within (-cap, cap) and close to z
    where |z| << cap; d/dz = 1 - tanh²(z / cap)."""
    return [cap * (z / cap).tanh() for z in logits]


# the MLP's activation (`mlp_activation`), elementwise over the hidden units ----------------------

GELU_C = math.sqrt(2 / math.pi)


def relu(x: list[Value]) -> list[Value]:
    return [h.relu() for h in x]


def relu2(x: list[Value]) -> list[Value]:
    """Squared ReLU: relu(h)²."""
    return [h.relu() ** 2 for h in x]


def gelu(x: list[Value]) -> list[Value]:
    """GELU, tanh form (GPT-2's): 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h³)))."""
    return [0.5 * h * (1 + (GELU_C * (h + 0.044715 * h**3)).tanh()) for h in x]


ACTIVATIONS = {"relu": relu, "relu2": relu2, "gelu": gelu}


def rotate(x: list[Value], cos: list[float], sin: list[float]) -> list[Value]:
    """RoPE on one head's D channels: pair (x[i], x[i + D/2]) turned by angle theta_i
    (`microgpt.rope`); cos and sin hold cos(theta_i), sin(theta_i) at this position (D/2)."""
    half = len(x) // 2
    x1, x2 = x[:half], x[half:]
    return [a * c - b * s for a, b, c, s in zip(x1, x2, cos, sin)] + [
        a * s + b * c for a, b, c, s in zip(x1, x2, cos, sin)
    ]


def per_head(f, x: list[Value], hd: int, *args) -> list[Value]:
    """f applied to each head's slice of hd channels, heads side by side again."""
    return [y for h in range(0, len(x), hd) for y in f(x[h : h + hd], *args)]


@contextmanager
def _evaluating():
    """No graph edges (`no_grad`) and no cyclic collection: for losses and logits only."""
    with no_grad(), _no_cycle_collection():
        yield


@contextmanager
def _no_cycle_collection():
    """The graph holds no cycles, so reference counting frees it. Pausing the cyclic garbage
    collector while it lives saves rescanning thousands of nodes (about a third of a step);
    free the graph before the block ends, or the next allocation after it will scan it all."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class ScalarGPT:
    """The model's weights as Values, with the training interface both modes share."""

    mode = "scalar"

    def __init__(self, config: ModelConfig, weights: dict[str, Matrix], train: TrainConfig):
        self.config = config
        self.train_config = train
        self.weights = {name: [[Value(w) for w in row] for row in m] for name, m in weights.items()}
        self.params = [p for m in self.weights.values() for row in m for p in row]
        self.adam_m = [0.0] * len(self.params)  # Adam's moments, one per parameter, same order
        self.adam_v = [0.0] * len(self.params)
        # --optimizer muon (the one read of it): Muon's matrices and their momentum; Adam keeps
        # the other parameters (all of them with adamw), `adam_index` their places in `params`
        self.muon_names = muon_matrices(config.param_shapes()) if train.optimizer == "muon" else []
        self.momentum = {name: _zeros(weights[name]) for name in self.muon_names}
        muon = {id(p) for name in self.muon_names for row in self.weights[name] for p in row}
        self.adam_index = [i for i, p in enumerate(self.params) if id(p) not in muon]
        self.adam_params = [self.params[i] for i in self.adam_index]
        self.step = 0  # optimizer updates done so far
        self.last_grad_norm: float | None = None  # before clipping; kept only when clipping
        self.activation = ACTIVATIONS[config.mlp_activation]  # the one read of mlp_activation
        self.rope = None  # (cos, sin), each (block_size, head_dim / 2), with RoPE
        if config.position == "rope":  # the one read of position
            self.rope = rope_tables(config.head_dim, config.block_size)
        self.softcap = config.logit_softcap  # the one read of logit_softcap (0: off)

    # forward -----------------------------------------------------------------------------------

    def forward(self, token: int, pos: int, keys: list, values: list) -> list[Value]:
        """Logits for the next token after `token` at `pos` (soft-capped with
        --logit-softcap); appends to the key/value cache."""
        c, w = self.config, self.weights
        x = w["wte"][token]
        if self.rope is None:  # learned positions: add wpe (RoPE turns q and k instead)
            x = [t + p for t, p in zip(x, w["wpe"][pos])]
        if c.input_rmsnorm:
            x = rmsnorm(x)
        for i in range(c.n_layer):
            x = self.attention(i, x, pos, keys[i], values[i])
            x = self.mlp(i, x)
        if c.final_rmsnorm:
            x = rmsnorm(x)
        logits = linear(x, w["wte"] if c.tie_lm_head else w["lm_head"])
        if self.softcap:
            logits = softcap(logits, self.softcap)
        return logits

    def attention(self, i: int, x: list[Value], pos: int, keys: list, values: list) -> list:
        """x + attn_wo · heads(rmsnorm(x)), each head over every cached position."""
        c, w, hd = self.config, self.weights, self.config.head_dim
        x_norm = rmsnorm(x)
        q = linear(x_norm, w[f"layer{i}.attn_wq"])
        k = linear(x_norm, w[f"layer{i}.attn_wk"])
        if c.qk_norm:
            q, k = per_head(rmsnorm, q, hd), per_head(rmsnorm, k, hd)
        if self.rope is not None:
            cos, sin = self.rope[0][pos], self.rope[1][pos]
            q, k = per_head(rotate, q, hd, cos, sin), per_head(rotate, k, hd, cos, sin)
        keys.append(k)
        values.append(linear(x_norm, w[f"layer{i}.attn_wv"]))
        x_attn = []
        for h in range(0, c.n_embd, hd):
            q_h = q[h : h + hd]
            scores = [dot(q_h, k[h : h + hd]) / hd**0.5 for k in keys]
            attn = softmax(scores)
            x_attn += [dot(attn, [v[j] for v in values]) for j in range(h, h + hd)]
        x_out = linear(x_attn, w[f"layer{i}.attn_wo"])
        return [a + b for a, b in zip(x_out, x)]

    def mlp(self, i: int, x: list[Value]) -> list[Value]:
        """x + mlp_fc2 · activation(mlp_fc1 · rmsnorm(x))."""
        w = self.weights
        hidden = self.activation(linear(rmsnorm(x), w[f"layer{i}.mlp_fc1"]))
        x_out = linear(hidden, w[f"layer{i}.mlp_fc2"])
        return [a + b for a, b in zip(x_out, x)]

    def token_losses(self, tokens: list[int], z_loss: float = 0.0) -> list[Value]:
        """-log p(next token) at each of the document's positions, plus z_loss * (log Z)² (Z
        the softmax's normaliser, of the soft-capped logits with --logit-softcap) when z_loss
        is not 0."""
        inputs, targets = training_pairs(tokens, self.config.block_size)
        keys = [[] for _ in range(self.config.n_layer)]
        values = [[] for _ in range(self.config.n_layer)]
        losses = []
        for pos, (tok, target) in enumerate(zip(inputs, targets)):
            logits = self.forward(tok, pos, keys, values)
            loss = cross_entropy(logits, target)
            if z_loss:
                loss = loss + z_loss * logsumexp(logits) ** 2
            losses.append(loss)
        return losses

    def document_loss(self, tokens: list[int], z_loss: float = 0.0) -> Value:
        """Mean over the document's positions of -log p(next token) (and the z-loss term)."""
        losses = self.token_losses(tokens, z_loss)
        return (1 / len(losses)) * vsum(losses)

    def batch_loss(self, docs: list[list[int]]) -> Value:
        """The training loss: the mean over documents of each document's mean loss (one
        document: the reference), or with --loss-average token the mean over all the documents'
        predicted tokens; each token's loss with its --z-loss term."""
        z_loss = self.train_config.z_loss
        if len(docs) == 1:
            return self.document_loss(docs[0], z_loss)
        if self.train_config.loss_average == "token":
            losses = [loss for d in docs for loss in self.token_losses(d, z_loss)]
            return (1 / len(losses)) * vsum(losses)
        return (1 / len(docs)) * vsum([self.document_loss(d, z_loss) for d in docs])

    # the interface the training loop uses ------------------------------------------------------

    def train_step(self, docs: list[list[int]], lr: float) -> float:
        try:
            with _no_cycle_collection():
                return self._step(docs, lr)  # the graph is freed on return, still inside
        except (ArithmeticError, ValueError):
            # Python floats raise (log of 0, overflow in **) where IEEE arithmetic, and so tensor
            # mode, gives inf or nan: report a diverged step the same way in both modes.
            return math.nan

    def _step(self, docs: list[list[int]], lr: float) -> float:
        with Tape() as tape:
            loss = self.batch_loss(docs)
        tape.backward(loss)
        if self.muon_names:
            self._muon(lr)
        else:
            self._adam(lr)
        return loss.data

    def _adam(self, lr: float, scale: float | None = None) -> None:
        """Adam, or AdamW with weight decay, on gradients clipped to a global norm if asked:

        g <- g * min(1, clip / (|g| + 1e-6)), |g| the L2 norm of all gradients together;
        p <- p * (1 - lr * weight_decay);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g²;
        p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

        On every parameter, or with Muon (`_muon`, which has counted the step and computed the
        clip's `scale`) on the embeddings and head."""
        tc = self.train_config
        if scale is None:
            self.step += 1
            scale = self._clip_scale() if tc.grad_clip > 0 else 1.0
        b1, b2, eps = tc.beta1, tc.beta2, tc.eps
        one_minus_b1, one_minus_b2 = 1 - b1, 1 - b2
        m_correction, v_correction = 1 - b1**self.step, 1 - b2**self.step
        ms, vs = self.adam_m, self.adam_v
        decay = 1 - lr * tc.weight_decay
        if scale == 1.0 and decay == 1.0:  # the reference's Adam: no extra work per parameter
            for i, p in zip(self.adam_index, self.adam_params):
                g = p.grad
                ms[i] = m = b1 * ms[i] + one_minus_b1 * g
                vs[i] = v = b2 * vs[i] + one_minus_b2 * g**2
                p.data -= lr * (m / m_correction) / ((v / v_correction) ** 0.5 + eps)
                p.grad = 0.0
            return
        for i, p in zip(self.adam_index, self.adam_params):
            g = p.grad * scale
            ms[i] = m = b1 * ms[i] + one_minus_b1 * g
            vs[i] = v = b2 * vs[i] + one_minus_b2 * g**2
            p.data *= decay
            p.data -= lr * (m / m_correction) / ((v / v_correction) ** 0.5 + eps)
            p.grad = 0.0

    def _muon(self, lr: float) -> None:
        """Muon (`microgpt.muon`) on each hidden matrix W, then AdamW on the rest, all from
        one gradient clipped to its global norm (the norm of every weight's gradient):

        G <- G * min(1, clip / (|g| + 1e-6));  buf <- beta buf + (1 - beta) G;
        U <- (1 - beta) G + beta buf;  O <- newton_schulz(U);
        W <- W * (1 - lr * weight_decay) - lr * 0.2 sqrt(max(rows, cols)) * O."""
        tc = self.train_config
        self.step += 1
        scale = self._clip_scale() if tc.grad_clip > 0 else 1.0
        beta = tc.muon_momentum
        one_minus_beta = 1 - beta
        decay = 1 - lr * tc.weight_decay
        for name in self.muon_names:
            W, buf = self.weights[name], self.momentum[name]
            U = []
            for w_row, buf_row in zip(W, buf):
                u_row = []
                for j, p in enumerate(w_row):
                    g = p.grad * scale
                    buf_row[j] = b = beta * buf_row[j] + one_minus_beta * g
                    u_row.append(one_minus_beta * g + beta * b)
                    p.grad = 0.0
                U.append(u_row)
            O = newton_schulz(U)
            step_size = lr * update_scale(len(W), len(W[0]))
            for w_row, o_row in zip(W, O):
                for p, o in zip(w_row, o_row):
                    p.data *= decay
                    p.data -= step_size * o
        self._adam(lr, scale)

    def _clip_scale(self) -> float:
        """min(1, clip / (|g| + 1e-6)) as torch.nn.utils.clip_grad_norm_; keeps |g|."""
        norm = math.sqrt(math.fsum(p.grad * p.grad for p in self.params))
        self.last_grad_norm = norm
        return min(1.0, self.train_config.grad_clip / (norm + GRAD_CLIP_EPS))

    def eval_loss(self, docs: list[list[int]]) -> float:
        with _evaluating():
            return sum(self.document_loss(d).data for d in docs) / len(docs)

    def eval_token_loss(self, docs: list[list[int]]) -> tuple[float, int]:
        total, count = 0.0, 0
        with _evaluating():
            for d in docs:
                losses = self.token_losses(d)
                for loss in losses:
                    total += loss.data
                count += len(losses)
        return total, count

    def logits(self, tokens: list[int]) -> list[float]:
        """Next-token logits after the context `tokens` (1 to block_size of them)."""
        if not 1 <= len(tokens) <= self.config.block_size:
            raise ValueError(f"context of {len(tokens)} tokens: give 1 to block_size of them")
        with _evaluating():
            return self._logits(tokens)  # the graph is freed on return, still inside

    def _logits(self, tokens: list[int]) -> list[float]:
        keys = [[] for _ in range(self.config.n_layer)]
        values = [[] for _ in range(self.config.n_layer)]
        for pos, tok in enumerate(tokens):
            out = self.forward(tok, pos, keys, values)
        return [v.data for v in out]

    # state, for checkpoints ---------------------------------------------------------------------

    def export_state(self) -> dict[str, dict[str, Matrix]]:
        """Weights and Adam's moments of every matrix (with Muon, the moments of its matrices
        stay 0), and with Muon its momentum, `momentum`, of its matrices alone."""
        flat = {
            "weights": [p.data for p in self.params],
            "adam_m": self.adam_m,
            "adam_v": self.adam_v,
        }
        state = {key: self._unflatten(values) for key, values in flat.items()}
        if self.muon_names:
            state["momentum"] = {name: [list(r) for r in m] for name, m in self.momentum.items()}
        return state

    def load_state(self, state: dict[str, dict[str, Matrix]], step: int) -> None:
        for p, w in zip(self.params, self._flatten(state["weights"])):
            p.data = w
        self.adam_m = self._flatten(state["adam_m"])
        self.adam_v = self._flatten(state["adam_v"])
        self.momentum = {
            name: [[float(x) for x in row] for row in state["momentum"][name]]
            for name in self.muon_names
        }
        self.step = step

    def _flatten(self, matrices: dict[str, Matrix]) -> list[float]:
        return [float(x) for name in self.weights for row in matrices[name] for x in row]

    def _unflatten(self, flat: list[float]) -> dict[str, Matrix]:
        out, i = {}, 0
        for name, m in self.weights.items():
            cols = len(m[0])
            out[name] = [flat[i + r * cols : i + (r + 1) * cols] for r in range(len(m))]
            i += len(m) * cols
        return out


def _zeros(m: Matrix) -> Matrix:
    return [[0.0] * len(row) for row in m]
