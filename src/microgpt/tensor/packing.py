"""Packing documents into rows, so a batch wastes almost no work on padding.

A document gives n = min(block_size, len - 1) predictions. Documents are placed whole into rows
of block_size positions (best fit, longest first), so a row of names holds two or three of them
and only the tail of a row is padding (about 7% of positions on names, against about half when
every document is padded to block_size). Inside a row each document restarts its positions at 0
and its queries see only its own earlier keys: the attention mask is block diagonal and causal,
so a document's numbers do not depend on its neighbours. Padding positions have weight 0 in the
loss and attend only to themselves, so nothing flows from them or to them.

The plan is plain Python over the document lengths; each field then becomes a tensor through
one `array` (`torch.tensor` on a list of ints is far slower).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """Documents packed into R rows of W positions (N = R * W), ready for the model.

    A stack's batch (`Packer.pack_runs`) has a leading axis of S runs on every field but the
    mask, written (*S, ...) below: each run's documents packed exactly as its solo batch, then
    padded to the widest run's W and the longest run's R, so position (row r, column j) of run s
    is position (r, j) of its solo batch. A solo batch has no S axis at all."""

    rows: int  # R
    width: int  # W
    tokens: Tensor  # (*S, N) input token at each position (0 at padding)
    positions: Tensor  # (*S, N) position inside its own document (0 at padding)
    targets: Tensor  # (*S, N, 1) next token (0 at padding)
    weights: Tensor  # (*S, N, 1) the position's share of the loss (see `Packer.pack`); 0 at padding
    neg_weights: Tensor  # (*S, N, 1) -weights
    mask: Tensor  # (S * R, W, W) additive: 0 where query i may see key j, else -inf
    runs: tuple[tuple[int, int], ...] | None = None  # in a stack: each run's own (rows, width)
    keep: Tensor | None = None  # in a stack: (S * R, W, W), 1 where mask is 0, else 0 (`ops`)


def plan_rows(lengths: list[int], width: int) -> list[list[int]]:
    """Group document indices into rows whose lengths sum to at most `width`.

    Best fit decreasing: longest document first, each into the fullest row that still has room
    (a new row if none has). Deterministic: ties go to the most recently filled row."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    rows: list[list[int]] = []
    by_room: dict[int, list[int]] = {}  # room left -> the rows with exactly that room
    rooms: list[int] = []  # the keys of by_room, sorted
    for d in order:
        n = lengths[d]
        i = bisect_left(rooms, n)
        if i < len(rooms):  # the fullest row with room for n
            room = rooms[i]
            r = by_room[room].pop()
            if not by_room[room]:
                del by_room[room], rooms[i]
        else:
            room, r = width, len(rows)
            rows.append([])
        rows[r].append(d)
        left = room - n
        if left not in by_room:
            by_room[left] = []
            insort(rooms, left)
        by_room[left].append(r)
    return rows


class Packer:
    """Turns encoded documents into a `Batch` on one device; keeps the constant tensors."""

    def __init__(
        self,
        block_size: int,
        device: torch.device,
        compute_dtype: torch.dtype,
        loss_dtype: torch.dtype,
    ):
        self.block_size = block_size
        self.device, self.compute_dtype, self.loss_dtype = device, compute_dtype, loss_dtype
        T = block_size
        self._future = torch.ones(T, T, dtype=torch.bool, device=device).triu_(1)  # key > query
        self._columns = torch.arange(T, device=device)
        self._causal = torch.zeros(T, T, dtype=compute_dtype, device=device)
        self._causal.masked_fill_(self._future, float("-inf"))

        def single_weights(n: int) -> tuple[Tensor, Tensor]:  # one document of n predictions
            w = torch.full((n, 1), 1 / n, dtype=loss_dtype, device=device)
            return w, -w

        # made the first time a length needs them, then reused
        self._single_weights = _Lazy(single_weights)
        keep = self._future.logical_not().to(compute_dtype)  # 1 where the causal mask is 0

        def singles(shape: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            S, W = shape  # `_pack_singles`' constants of S runs, width W: row n of `shares` is
            # the weights of a document of n predictions; the mask, keep and positions
            shares = [[1 / n] * n + [0.0] * (W - n) for n in range(1, W + 1)]
            shares = torch.tensor([[0.0] * W, *shares], dtype=torch.float64)
            mask, keeps = self._causal[None, :W, :W], keep[None, :W, :W]
            shares = shares.to(device, loss_dtype)[:, :, None]
            return shares, mask, keeps, self._columns[:W].expand(S, W)

        self._singles = _Lazy(singles)  # (S, W) -> shares (W + 1, W, 1), mask, keep, positions
        self._ranges = _Lazy(lambda n: list(range(n)))  # the positions of n predictions
        self._reciprocals = _Lazy(lambda n: [1 / n] * n)  # their 1/n
        self._ones = _Lazy(lambda n: [1.0] * n)
        self._zeros = _Lazy(lambda n: [0] * n)  # n padding positions
        self._float_zeros = _Lazy(lambda n: [0.0] * n)

    def divisor(self, docs: list[list[int]], per_token: bool = False) -> int:
        """The default `divisor` of `pack(docs, per_token=per_token)`: the number of documents,
        or per token the number of predicted tokens."""
        if per_token:
            return sum(min(self.block_size, len(d) - 1) for d in docs)
        return len(docs)

    def pack(
        self, docs: list[list[int]], divisor: int | None = None, per_token: bool = False
    ) -> Batch:
        """Pack `docs`; each position of a document of n predictions weighs 1 / (divisor * n)
        (the mean over documents of each one's mean), or per token 1 / divisor (the mean over
        all predicted tokens); `divisor` defaults to `self.divisor(docs, per_token)`."""
        lengths = self._lengths(docs)
        divisor = divisor or self.divisor(docs, per_token)
        if len(docs) == 1 and divisor == (lengths[0] if per_token else 1):
            return self._pack_one(docs[0], lengths[0])
        plan = plan_rows(lengths, self.block_size)
        R, W = len(plan), max(sum(lengths[d] for d in row) for row in plan)
        lists = _Lists()
        self._fill(lists, docs, lengths, plan, W, per_token)
        return self._batch(lists, R, W, [1 / divisor])

    def pack_runs(self, docs: list[list[list[int]]], per_token: bool = False) -> Batch:
        """A stack's batch: `docs[s]` is run s's documents, packed as `pack(docs[s])` packs them
        (same rows, same order, same weights), then padded to the stack's R rows and W columns:
        a padding row is W padding positions. Fields get a leading axis of S runs."""
        if all(len(d) == 1 for d in docs):
            return self._pack_singles([d[0] for d in docs])
        plans, shapes, scales = [], [], []  # each run's plan, (rows, width), 1 / divisor
        lengths = [self._lengths(d) for d in docs]
        for run_docs, n in zip(docs, lengths):
            if len(n) == 1:  # one document, one row (as `_pack_one`); its mean, either average,
                # so its shares 1 / n are its weights: a scale of 1
                plans.append(ONE_ROW)
                shapes.append((1, n[0]))
                scales.append(1.0)
            else:
                plan = plan_rows(n, self.block_size)
                plans.append(plan)
                shapes.append((len(plan), max(sum(n[d] for d in row) for row in plan)))
                scales.append(1 / self.divisor(run_docs, per_token))
        R, W = max(r for r, _ in shapes), max(w for _, w in shapes)
        lists = _Lists()
        for run_docs, n, plan in zip(docs, lengths, plans):
            self._fill(lists, run_docs, n, plan, W, per_token and len(n) > 1)
            if len(plan) < R:
                lists.pad((R - len(plan)) * W, self)  # the rows this run lacks
        return self._batch(lists, R, W, scales, tuple(shapes))

    def _pack_singles(self, docs: list[list[int]]) -> Batch:
        """A stack's batch of one document a run (batch size 1): each run's document in one row,
        padded to the stack's W, under the plain causal mask, as `_pack_one` packs it alone.
        The mask lets a padding query see the real keys before it, where `pack_runs` lets it
        see itself only: either way no real query sees a padding key, and padding weighs 0 in
        the loss, so every gradient at a padding position is exactly 0 and the real positions'
        figures are the same. So a padding position takes its column as its position, and the
        mask, keep and positions are one (W, W), (W, W) and (W,) for every step of every run,
        not made anew each step."""
        T = self.block_size
        lengths = [min(T, len(d) - 1) for d in docs]
        if min(lengths) < 1:
            raise ValueError("give at least one document, each of at least 2 tokens")
        S, W = len(docs), max(lengths)
        tokens: list[int] = []
        targets: list[int] = []
        zeros = self._zeros
        for doc, n in zip(docs, lengths):
            pad = zeros[W - n]
            tokens += doc[:n]
            tokens += pad
            targets += doc[1 : n + 1]
            targets += pad
        ints = array("q", tokens)
        ints.extend(targets)
        ints = torch.frombuffer(ints, dtype=torch.int64)
        n = torch.frombuffer(array("q", lengths), dtype=torch.int64)
        if self.device.type != "cpu":
            ints, n = ints.to(self.device), n.to(self.device)
        shares, mask, keep, positions = self._singles[S, W]
        weights = shares.index_select(0, n)  # (S, W, 1): 1 / n, then 0
        tokens_, targets_ = ints.view(2, S, W).unbind()
        return Batch(
            rows=1,
            width=W,
            tokens=tokens_,
            positions=positions,
            targets=targets_.unsqueeze(-1),
            weights=weights,
            neg_weights=weights.neg(),
            mask=mask,
            runs=tuple((1, n) for n in lengths),
            keep=keep,
        )

    def _lengths(self, docs: list[list[int]]) -> list[int]:
        lengths = [min(self.block_size, len(d) - 1) for d in docs]
        if not lengths or min(lengths) < 1:
            raise ValueError("give at least one document, each of at least 2 tokens")
        return lengths

    def _fill(self, lists, docs, lengths, plan, W: int, per_token: bool) -> None:
        """Append the rows of `plan` to `lists`, each padded to W positions."""
        ranges, unit_shares = self._ranges, self._ones if per_token else self._reciprocals
        zeros, float_zeros = self._zeros, self._float_zeros
        tokens, targets, positions = lists.tokens, lists.targets, lists.positions
        share = lists.share
        for row in plan:
            fill = 0
            for d in row:
                doc, n = docs[d], lengths[d]
                tokens += doc[:n]
                targets += doc[1 : n + 1]
                positions += ranges[n]
                share += unit_shares[n]
                fill += n
            pad = zeros[W - fill]  # padding: token 0, target 0, position 0, weight 0
            tokens += pad
            targets += pad
            positions += pad
            share += float_zeros[W - fill]

    def _batch(self, lists, R: int, W: int, scales: list[float], runs=None) -> Batch:
        """Tensors from `lists` (S runs of R * W positions); each run's shares times its scale
        (1 / divisor). A solo batch (runs None) has no S axis."""
        S = len(runs) if runs is not None else 1
        lead = (S,) if runs is not None else ()
        ints = array("q", lists.tokens + lists.targets + lists.positions)
        ints = torch.frombuffer(ints, dtype=torch.int64).to(self.device).view(3, *lead, R * W)
        shares = torch.frombuffer(array("d", lists.share), dtype=torch.float64)
        shares = shares.to(self.device, self.loss_dtype).view(*lead, R * W, 1)
        # a key is blocked if it comes after the query or before the query's document starts;
        # a padding position starts its own document, so it sees only itself
        columns = self._columns[:W]
        starts = columns - ints[2].view(S * R, W)  # (S * R, W) column where each document starts
        blocked = torch.lt(columns, starts[:, :, None]).logical_or_(self._future[:W, :W])
        mask = torch.zeros(S * R, W, W, dtype=self.compute_dtype, device=self.device)
        mask.masked_fill_(blocked, float("-inf"))
        keep = None
        if runs is None:
            weights, neg_weights = shares * scales[0], shares * -scales[0]
        else:
            keep = blocked.logical_not_().to(self.compute_dtype)
            weights = shares
            if any(s != 1.0 for s in scales):  # else (batch 1) two kernels a step saved
                scale = torch.tensor(scales, dtype=torch.float64).to(self.device, self.loss_dtype)
                weights = shares * scale.view(S, 1, 1)
            neg_weights = -weights
        return Batch(
            rows=R,
            width=W,
            tokens=ints[0],
            positions=ints[2],
            targets=ints[1, ..., None],
            weights=weights,
            neg_weights=neg_weights,
            mask=mask,
            runs=runs,
            keep=keep,
        )

    def _pack_one(self, doc: list[int], n: int) -> Batch:
        """One document in one row: no padding, a plain causal mask (the batch-1 fast path)."""
        ints = torch.frombuffer(array("q", doc[: n + 1]), dtype=torch.int64).to(self.device)
        weights, neg_weights = self._single_weights[n]
        return Batch(
            rows=1,
            width=n,
            tokens=ints[:n],
            positions=self._columns[:n],
            targets=ints[1:, None],
            weights=weights,
            neg_weights=neg_weights,
            mask=self._causal[None, :n, :n],
        )


ONE_ROW = [[0]]  # the plan of one document


class _Lists:
    """The plain-Python fields of a batch as it is packed, position by position."""

    def __init__(self):
        self.tokens: list[int] = []
        self.targets: list[int] = []
        self.positions: list[int] = []
        self.share: list[float] = []  # 1 / n of the position's document (or 1 per token); 0: pad

    def pad(self, n: int, packer: Packer) -> None:
        """n padding positions: token 0, target 0, position 0, weight 0."""
        zeros = packer._zeros[n]
        self.tokens += zeros
        self.targets += zeros
        self.positions += zeros
        self.share += packer._float_zeros[n]


class _Lazy(dict):
    """n -> make(n), made on first use."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, n):
        value = self[n] = self.make(n)
        return value
