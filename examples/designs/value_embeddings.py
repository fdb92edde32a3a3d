"""Value embeddings (modded-nanogpt, nanochat): each layer has a table of its own, V x C,
looked up by the input token and added, weighted by a learned scalar per layer (0.5 at the
start), to the attention's values, v = x @ wv.T + lambda * ve[token]."""

from microgpt.design import constant, normal
from microgpt.tensor.blocks import (
    attention,
    dropout,
    embed,
    embeddings,
    head,
    linear,
    mlp_branch,
    rmsnorm,
    rope,
)

switches = "all"


def weights(config, s):
    out = {}
    for i in range(config.n_layer):
        # a table looked up by token, as wte is: with --optimizer muon, AdamW's (as wte)
        out[f"layer{i}.value_embed"] = normal(config.vocab_size, config.n_embd, muon=False)
        out[f"layer{i}.value_lambda"] = constant(1, 1, 0.5)
    return out


def attention_with_value_embeddings(x, w, i, batch, config):
    x = rmsnorm(x)
    q, k, v = (linear(x, w[f"layer{i}.attn_{m}"]) for m in ("wq", "wk", "wv"))
    v = v + w[f"layer{i}.value_lambda"] * embed(w[f"layer{i}.value_embed"], batch.tokens)
    if config.qk_norm:
        q, k = rmsnorm(q, config.n_head), rmsnorm(k, config.n_head)
    if config.position == "rope":
        q, k = rope(q, batch, config.n_head), rope(k, batch, config.n_head)
    y = attention(q, k, v, batch, config.n_head)
    return dropout(linear(y, w[f"layer{i}.attn_wo"]), batch)


def forward(w, batch, config, s):
    x = embeddings(w, batch, config)
    for i in range(config.n_layer):
        x = x + attention_with_value_embeddings(x, w, i, batch, config)
        x = x + mlp_branch(x, w, i, batch, config)
    return head(x, w, config)
