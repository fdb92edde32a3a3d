"""Logit soft-capping (Gemma 2): the logits pass through cap * tanh(logits / cap), so that none
grows past +-cap."""

import torch

from microgpt.tensor.blocks import reference_forward

settings = {"cap": 15.0}
switches = "all"


def forward(w, batch, config, s):
    logits = reference_forward(w, batch, config)
    return s.cap * torch.tanh(logits / s.cap)
