"""Parallel attention and MLP (GPT-J, PaLM): each layer adds both branches, computed from the
same normed input, x + attention(norm(x)) + mlp(norm(x)), in place of one after the other."""

from microgpt.tensor.blocks import attention_branch, embeddings, head, mlp_branch

switches = "all"


def forward(w, batch, config, s):
    x = embeddings(w, batch, config)
    for i in range(config.n_layer):
        x = x + attention_branch(x, w, i, batch, config) + mlp_branch(x, w, i, batch, config)
    return head(x, w, config)
