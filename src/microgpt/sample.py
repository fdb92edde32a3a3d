"""Sampling from a trained model with the seeded Python RNG (the same in both modes).

lines: a document from BOS to BOS (the reference). stream: a continuation of a prompt, a fixed
number of characters, each drawn from the last block_size tokens of context. `top_k` keeps the k
most likely tokens of each draw; without it the draws are the reference's, unchanged.
"""

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


def keep_top_k(probs: list[float], k: int | None) -> list[float]:
    """`probs` with all but the k largest set to 0 (ties: the lower token id first); the rest
    need no renormalising, since `rng.choices` divides by the total weight."""
    if k is None or k >= len(probs):
        return probs
    keep = set(sorted(range(len(probs)), key=lambda i: -probs[i])[:k])
    return [p if i in keep else 0.0 for i, p in enumerate(probs)]


def sample(
    gpt: GPT,
    tokenizer: Tokenizer,
    rng: random.Random,
    temperature: float,
    prompt: str = "",
    top_k: int | None = None,
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
        probs = keep_top_k(softmax_probs(gpt.logits(context), temperature), top_k)
        token = rng.choices(candidates, weights=probs)[0]
        if token == tokenizer.bos:
            break
        context.append(token)
        out.append(token)
    return prompt + tokenizer.decode(out)


def sample_stream(
    gpt: GPT,
    tokenizer: Tokenizer,
    rng: random.Random,
    temperature: float,
    prompt: str,
    length: int,
    top_k: int | None = None,
) -> str:
    """`prompt` and `length` characters drawn after it, each from the last block_size tokens."""
    context = tokenizer.encode(prompt)
    if not context:
        raise UserError("in stream mode --prompt needs at least one character (default: newline)")
    block_size = gpt.config.block_size
    candidates = range(tokenizer.vocab_size)
    out = []
    for _ in range(length):
        probs = keep_top_k(softmax_probs(gpt.logits(context[-block_size:]), temperature), top_k)
        token = rng.choices(candidates, weights=probs)[0]
        context.append(token)
        out.append(token)
    return prompt + tokenizer.decode(out)


def check_temperature(temperature: float) -> None:
    if (
        not (isinstance(temperature, (int, float)) and math.isfinite(temperature))
        or temperature <= 0
    ):
        raise UserError(f"--temperature must be a positive number, got {temperature!r}")
