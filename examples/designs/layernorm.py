"""LayerNorm in place of RMSNorm: every norm of the residual stream (the input's, each block's,
the final one if on) subtracts the mean before it scales, (x - mean) / sqrt(var + 1e-5); with
`affine` it also has a learned gain (ones) and bias (zeros) per norm, as GPT-2's. qk-norm, if
on, stays an RMSNorm of each head."""

import torch

from microgpt.design import ones, zeros
from microgpt.tensor.blocks import dropout, embed, linear, mlp, self_attention

settings = {"affine": False}
switches = "all"


def norms(config):
    return [
        "input",
        *(f"layer{i}.{b}" for i in range(config.n_layer) for b in ("attn", "mlp")),
        "final",
    ]


def weights(config, s):
    if not s.affine:
        return {}
    C, out = config.n_embd, {}
    for n in norms(config):
        out[f"{n}.ln_gain"] = ones(1, C)
        out[f"{n}.ln_bias"] = zeros(1, C)
    return out


def layer_norm(x, w, name, s):
    x = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=1e-5)
    return x * w[f"{name}.ln_gain"] + w[f"{name}.ln_bias"] if s.affine else x


def forward(w, batch, config, s):
    x = embed(w["wte"], batch.tokens)
    if config.position == "learned":
        x = x + embed(w["wpe"], batch.positions)
    x = dropout(x, batch)
    if config.input_rmsnorm:
        x = layer_norm(x, w, "input", s)
    rope = config.position == "rope"
    for i in range(config.n_layer):
        attn = [w[f"layer{i}.attn_{m}"] for m in ("wq", "wk", "wv", "wo")]
        h = layer_norm(x, w, f"layer{i}.attn", s)
        x = x + dropout(self_attention(h, *attn, batch, config.n_head, config.qk_norm, rope), batch)
        h = layer_norm(x, w, f"layer{i}.mlp", s)
        fc1, fc2 = w[f"layer{i}.mlp_fc1"], w[f"layer{i}.mlp_fc2"]
        x = x + dropout(mlp(h, fc1, fc2, config.mlp_activation), batch)
    if config.final_rmsnorm:
        x = layer_norm(x, w, "final", s)
    return linear(x, w["wte" if config.tie_lm_head else "lm_head"])
