"""The reference design written as a design file, from the blocks a design file gets.

The same model as the built-in reference (and every built-in switch honoured), so that a new
design can start as a copy of this file. Its runs equal the hand-written model's in float64
(`tests/test_design.py`).
"""

from microgpt.tensor.blocks import dropout, embed, linear, mlp, rmsnorm, self_attention

switches = "all"


def forward(w, batch, config, s):
    # the residual stream: token (and learned position) embeddings, dropped, normed
    x = embed(w["wte"], batch.tokens)
    if config.position == "learned":
        x = x + embed(w["wpe"], batch.positions)
    x = dropout(x, batch)
    if config.input_rmsnorm:
        x = rmsnorm(x)
    rope = config.position == "rope"
    for i in range(config.n_layer):
        # pre-norm attention: norm=True rmsnorms x inside the block
        wq, wk, wv, wo = (w[f"layer{i}.attn_{m}"] for m in ("wq", "wk", "wv", "wo"))
        y = self_attention(x, wq, wk, wv, wo, batch, config.n_head, config.qk_norm, rope, norm=True)
        x = x + dropout(y, batch)
        # pre-norm MLP
        y = mlp(x, w[f"layer{i}.mlp_fc1"], w[f"layer{i}.mlp_fc2"], config.mlp_activation, norm=True)
        x = x + dropout(y, batch)
    if config.final_rmsnorm:
        x = rmsnorm(x)
    return linear(x, w["wte" if config.tie_lm_head else "lm_head"])
