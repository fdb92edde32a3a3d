"""Zero-initialised output projections and a small head (as modded-nanogpt and nanochat start
them): every layer's attn_wo and mlp_fc2 start at zero, so each block starts as the identity
and the residual stream as the embeddings alone; lm_head starts as its own draws times 1/80
(std 0.001). The model is the reference's; so are its initial weights but these (the built-in
--init zero, written as a design file)."""

from microgpt.design import scaled, zeros
from microgpt.tensor.blocks import reference_forward

# every switch but init: this file is an init of its own
switches = (
    "tie_lm_head",
    "input_rmsnorm",
    "final_rmsnorm",
    "mlp_activation",
    "qk_norm",
    "position",
)


def weights(config, s):
    C = config.n_embd
    out = {}
    for i in range(config.n_layer):
        out[f"layer{i}.attn_wo"] = zeros(C, C)
        out[f"layer{i}.mlp_fc2"] = zeros(C, 4 * C)
    if not config.tie_lm_head:  # a tied head is wte, which keeps its draws
        out["lm_head"] = scaled(1 / 80)
    return out


def forward(w, batch, config, s):
    return reference_forward(w, batch, config)
