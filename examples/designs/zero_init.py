"""Zero-initialised output projections (as modded-nanogpt and nanochat start them): every
layer's attn_wo and mlp_fc2 start at zero, so each block starts as the identity and the
residual stream as the embeddings alone. The model is the reference's."""

from microgpt.design import zeros
from microgpt.tensor.blocks import reference_forward

switches = "all"


def weights(config, s):
    C = config.n_embd
    out = {}
    for i in range(config.n_layer):
        out[f"layer{i}.attn_wo"] = zeros(C, C)
        out[f"layer{i}.mlp_fc2"] = zeros(C, 4 * C)
    return out


def forward(w, batch, config, s):
    return reference_forward(w, batch, config)
