"""Sampling names from a trained model with the seeded Python RNG (the same in both modes)."""

from __future__ import annotations

import math
import random

from microgpt.data import Tokenizer
from microgpt.errors import UserError
from microgpt.modes import GPT
from microgpt.scalar.engine import sum_in_order


def softmax_probs(logits: list[float], temperature: float) -> list[float]:
    """softmax(logits / temperature), with the reference's floats: logits times
    temperature**-1, exp of each minus the max, and each exp times the sum's inverse."""
    scaled = [v * temperature**-1 for v in logits]
    m = max(scaled)
    exps = [math.exp(v - m) for v in scaled]
    inv_total = sum_in_order(exps) ** -1
    return [e * inv_total for e in exps]


def sample(
    gpt: GPT, tokenizer: Tokenizer, rng: random.Random, temperature: float, prompt: str = ""
) -> str:
    """One document: start from BOS (then the prompt), draw each next token with
    `rng.choices`, stop at BOS or when the context is full. Returns prompt + continuation."""
    block_size = gpt.config.block_size
    context = [tokenizer.bos, *tokenizer.encode(prompt)]
    if len(context) > block_size:
        raise UserError(f"--prompt is longer than block_size - 1 = {block_size - 1} characters")
    out = []
    candidates = range(tokenizer.vocab_size)
    while len(context) <= block_size:
        probs = softmax_probs(gpt.logits(context), temperature)
        token = rng.choices(candidates, weights=probs)[0]
        if token == tokenizer.bos:
            break
        context.append(token)
        out.append(token)
    return prompt + tokenizer.decode(out)


def check_temperature(temperature: float) -> None:
    if (
        not (isinstance(temperature, (int, float)) and math.isfinite(temperature))
        or temperature <= 0
    ):
        raise UserError(f"--temperature must be a positive number, got {temperature!r}")
