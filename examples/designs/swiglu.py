"""SwiGLU MLP (Shazeer 2020; llama) at matched parameters: down(silu(gate x) * up x) with a
hidden width of 8C/3, so that its three matrices hold about as many weights as the reference's
two (4C wide). It replaces mlp_fc1 and mlp_fc2, which are then unused: dropped, not trained."""

import torch

from microgpt.design import normal
from microgpt.tensor.blocks import attention_branch, dropout, embeddings, head, linear, rmsnorm

switches = ("tie_lm_head", "input_rmsnorm", "final_rmsnorm", "qk_norm", "position")


def weights(config, s):
    C = config.n_embd
    H = round(8 * C / 3)
    out = {}
    for i in range(config.n_layer):
        out[f"layer{i}.mlp_gate"] = normal(H, C)
        out[f"layer{i}.mlp_up"] = normal(H, C)
        out[f"layer{i}.mlp_down"] = normal(C, H)
    return out


def swiglu(x, w, i):
    gate = torch.nn.functional.silu(linear(x, w[f"layer{i}.mlp_gate"]))
    return linear(gate * linear(x, w[f"layer{i}.mlp_up"]), w[f"layer{i}.mlp_down"])


def forward(w, batch, config, s):
    x = embeddings(w, batch, config)
    for i in range(config.n_layer):
        x = x + attention_branch(x, w, i, batch, config)
        x = x + dropout(swiglu(rmsnorm(x), w, i), batch)
    return head(x, w, config)
