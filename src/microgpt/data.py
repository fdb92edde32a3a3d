"""Documents, the character tokenizer and the train/validation split.

A document is one stripped, non-empty line of a UTF-8 text file. The seeded RNG's first use is
shuffling the documents; the vocabulary is every character of every document, plus BOS.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from microgpt.errors import UserError

BUNDLED = "names.txt"  # ships in microgpt/assets, the default input


def read_documents(path: str | Path | None = None) -> list[str]:
    """The documents of `path`, or of the bundled names when `path` is None."""
    if path is None:
        raw = resources.files("microgpt.assets").joinpath(BUNDLED).read_bytes()
        where = f"bundled {BUNDLED}"
    else:
        p = Path(path)
        fix = "pass --input a UTF-8 text file with one document per line"
        if p.is_dir():
            raise UserError(f"input {p} is a directory, not a file: {fix}")
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise UserError(f"input file {p} does not exist: {fix}") from None
        except OSError as e:
            raise UserError(f"cannot read input {p}: {e.strerror}: {fix}") from None
        where = f"input {p}"
    if b"\x00" in raw:
        raise UserError(f"{where} looks binary (it has NUL bytes): give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{where} is not valid UTF-8 (byte {e.start}): convert it to UTF-8 first"
        ) from None
    docs = [line.strip() for line in text.split("\n")]
    docs = [d for d in docs if d]
    if not docs:
        raise UserError(f"{where} has no documents (it is empty or only whitespace)")
    return docs


@dataclass(frozen=True)
class Tokenizer:
    """Characters get ids 0..n-1 in sorted order; BOS = n begins and ends every document."""

    chars: str

    @classmethod
    def from_documents(cls, docs: list[str]) -> Tokenizer:
        return cls("".join(sorted(set("".join(docs)))))

    @property
    def bos(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError:
            unknown = "".join(sorted(set(text) - self._index.keys()))
            raise UserError(
                f"characters {unknown!r} are not in the vocabulary {self.chars!r}: "
                "use only those characters"
            ) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids if i != self.bos)

    def encode_document(self, doc: str) -> list[int]:
        """`[BOS] + ids + [BOS]`: the tokens a training document is cut from."""
        return [self.bos, *self.encode(doc), self.bos]


@dataclass(frozen=True)
class Split:
    train: list[str]
    val: list[str]


def shuffle_and_split(docs: list[str], rng: random.Random, val_fraction: float) -> Split:
    """Shuffle in place with `rng` (its first use), then hold out the last `val_fraction`.

    The training documents are the first 90% (by default) of the reference's shuffled order, so
    step s still trains on the reference's document s."""
    rng.shuffle(docs)
    n_val = int(len(docs) * val_fraction)
    if n_val == len(docs):
        raise UserError(
            "no training documents are left after the validation split: "
            "lower --val-fraction or give more documents"
        )
    return Split(train=docs[: len(docs) - n_val], val=docs[len(docs) - n_val :])


def batch_indices(step: int, batch_size: int, n_docs: int) -> list[int]:
    """The documents of step `step` (0-based): the next `batch_size` in order, wrapping around."""
    start = step * batch_size
    return [(start + j) % n_docs for j in range(batch_size)]


def training_pairs(tokens: list[int], block_size: int) -> tuple[list[int], list[int]]:
    """Inputs and targets of one encoded document, cut to `block_size` predictions."""
    n = min(block_size, len(tokens) - 1)
    return tokens[:n], tokens[1 : n + 1]
