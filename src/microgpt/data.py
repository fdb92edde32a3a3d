"""Documents or a character stream, the character tokenizer and the train/validation split.

Two kinds of data (`TrainConfig.data`):
- lines (the reference): a document is one stripped, non-empty line of a UTF-8 text file. The
  seeded RNG's first use is shuffling the documents; the vocabulary is every character of every
  document, plus BOS, which begins and ends each document.
- stream: the whole file is one text, newlines included (CRLF and CR read as newlines, as
  Python's text mode reads them); nothing is stripped. The vocabulary is the file's characters
  and nothing else: there is no BOS, since no stream position is the start of a document. The
  last `val_fraction` of the characters are held out, as nanoGPT splits Tiny Shakespeare; a
  training example is a window of block_size + 1 characters inside the training part.

`--input` takes a path, or the name of a bundled text (`BUNDLED`: names, shakespeare). A file
that exists at the given path always wins, so a bundled name never hides a file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path

from microgpt.errors import UserError

# bundled texts, in microgpt/assets, by the name --input knows them by; names is the default
BUNDLED = {"names": "names.txt", "shakespeare": "tinyshakespeare.txt"}
STEP_SEED = 2**32  # stream windows of step s: random.Random(seed * STEP_SEED + s)


def _read(path: str | Path | None) -> tuple[str, str]:
    """The decoded text of `path` (None: the bundled names) and how to call it in a message."""
    if path is None or (str(path) in BUNDLED and not Path(path).exists()):
        name = BUNDLED[str(path) if path is not None else "names"]
        raw = resources.files("microgpt.assets").joinpath(name).read_bytes()
        where = f"bundled {name}"
    else:
        p = Path(path)
        fix = f"pass --input a UTF-8 text file, or a bundled text ({', '.join(BUNDLED)})"
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
        return raw.decode("utf-8"), where
    except UnicodeDecodeError as e:
        raise UserError(
            f"{where} is not valid UTF-8 (byte {e.start}): convert it to UTF-8 first"
        ) from None


def read_documents(path: str | Path | None = None) -> list[str]:
    """The documents of `path`, or of the bundled names when `path` is None."""
    text, where = _read(path)
    docs = [line.strip() for line in text.split("\n")]
    docs = [d for d in docs if d]
    if not docs:
        raise UserError(f"{where} has no documents (it is empty or only whitespace)")
    return docs


def read_stream(path: str | Path | None = None) -> str:
    """The whole text of `path` as one stream (newlines normalised to "\\n", nothing stripped)."""
    text, where = _read(path)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(set(text)) < 2:
        raise UserError(f"{where} has fewer than 2 distinct characters: nothing to learn")
    return text


@dataclass(frozen=True)
class Tokenizer:
    """Characters get ids 0..n-1 in sorted order; with `has_bos` (lines), BOS = n begins and
    ends every document; without (stream), the vocabulary is the n characters alone."""

    chars: str
    has_bos: bool = True

    @classmethod
    def from_documents(cls, docs: list[str]) -> Tokenizer:
        return cls("".join(sorted(set("".join(docs)))))

    @classmethod
    def from_text(cls, text: str) -> Tokenizer:
        """The vocabulary of a stream: its characters, no BOS."""
        return cls("".join(sorted(set(text))), has_bos=False)

    @classmethod
    def for_data(cls, chars: str, data: str) -> Tokenizer:
        """The tokenizer of a checkpoint's vocabulary, trained on `data` (lines or stream)."""
        return cls(chars, has_bos=data == "lines")

    @property
    def bos(self) -> int | None:
        return len(self.chars) if self.has_bos else None

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + (1 if self.has_bos else 0)

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
        """`[BOS] + ids + [BOS]`: the tokens a training document is cut from. Kept: the same
        document gives the same list again (the runs of a study that share a tokenizer encode
        each document once), so read it, never change it."""
        tokens = self._documents.get(doc)
        if tokens is None:
            assert self.has_bos, "a stream has no documents to frame with BOS"
            tokens = self._documents[doc] = [self.bos, *self.encode(doc), self.bos]
        return tokens

    @cached_property
    def _documents(self) -> dict[str, list[int]]:
        return {}  # document -> its tokens, as `encode_document` made them


@dataclass(frozen=True)
class Split:
    """lines: the training and the held-out documents. stream: one training text, and the
    held-out text cut into its evaluation windows (`held_out_windows`)."""

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


def batch_indices(
    step: int, batch_size: int, n_docs: int, reshuffle: bool = False, seed: int = 0
) -> list[int]:
    """The documents of step `step` (0-based): the next `batch_size` in order, wrapping around
    (the reference: every epoch in the same order), or with `reshuffle` in each epoch's own
    order (`epoch_order`). Either depends on the step alone, so a resumed run reads the same."""
    start = step * batch_size
    if not reshuffle:
        if batch_size == 1:  # every step of a batch-1 run: no comprehension
            return [start % n_docs]
        return [(start + j) % n_docs for j in range(batch_size)]
    positions = (divmod(start + j, n_docs) for j in range(batch_size))
    return [epoch_order(seed, epoch, n_docs)[i] for epoch, i in positions]


@lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n_docs: int) -> tuple[int, ...]:
    """The order of the training documents in epoch `epoch` with --reshuffle: the first epoch
    in the given order (as without it), each later one a permutation drawn from (seed, epoch)
    by its own RNG (a string seed: the same on every platform and Python)."""
    order = list(range(n_docs))
    if epoch > 0:
        random.Random(f"microgpt epoch {seed} {epoch}").shuffle(order)
    return tuple(order)


def training_pairs(tokens: list[int], block_size: int) -> tuple[list[int], list[int]]:
    """Inputs and targets of one encoded document, cut to `block_size` predictions."""
    n = min(block_size, len(tokens) - 1)
    return tokens[:n], tokens[1 : n + 1]


# streams ----------------------------------------------------------------------------------------


def split_stream(text: str, val_fraction: float, block_size: int) -> Split:
    """The first characters train, the last `val_fraction` are held out (nanoGPT's cut,
    `int(len * 0.9)` by default); the held-out text is cut into its evaluation windows."""
    cut = int(len(text) * (1 - val_fraction))
    if cut < block_size + 1:
        raise UserError(
            f"the training part of the text has {cut:,} characters, fewer than block_size + 1 = "
            f"{block_size + 1}: lower --block-size or --val-fraction, or give a longer text"
        )
    return Split(train=[text[:cut]], val=held_out_windows(text[cut:], block_size))


def held_out_windows(seq, block_size: int) -> list:
    """Every non-overlapping window of `seq` (text or token ids) that predicts block_size
    tokens: window i is seq[i*T : i*T + T + 1]; consecutive windows share one element (the last
    target of one is the first input of the next), so every element after the first is predicted
    exactly once, up to an incomplete tail of fewer than T, which is left out."""
    T = block_size
    return [seq[i : i + T + 1] for i in range(0, len(seq) - T, T)]


def stream_offsets(seed: int, step: int, batch_size: int, n_train: int, block_size: int):
    """Where step `step`'s `batch_size` training windows start: uniform draws from
    0 .. n_train - block_size - 1, so each window of block_size + 1 tokens lies inside the
    training part. They depend on (seed, step) alone (their own RNG, not the run's), so a
    resumed run draws the same windows with no state saved."""
    rng = random.Random(seed * STEP_SEED + step)
    return [rng.randrange(n_train - block_size) for _ in range(batch_size)]
