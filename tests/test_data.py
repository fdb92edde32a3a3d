import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgpt.config import ModelConfig, TrainConfig
from microgpt.data import (
    Tokenizer,
    batch_indices,
    read_documents,
    shuffle_and_split,
    training_pairs,
)
from microgpt.errors import UserError
from microgpt.init import init_weights, param_shapes


def test_bundled_names():
    docs = read_documents()
    assert len(docs) == 32033  # 32,032 newlines; the last name has none
    assert docs[:3] == ["emma", "olivia", "ava"]
    assert Tokenizer.from_documents(docs).vocab_size == 27


def test_lines_are_stripped_blank_lines_dropped_crlf_handled(tmp_path):
    p = tmp_path / "in.txt"
    p.write_bytes(b"  anna \r\n\r\n\t\nbob\r\n   \nzoe")
    assert read_documents(p) == ["anna", "bob", "zoe"]


@given(st.lists(st.text(st.characters(blacklist_categories=["Cs"]), min_size=1), min_size=1))
def test_tokenizer_round_trip(docs):
    tok = Tokenizer.from_documents(docs)
    for d in docs:
        ids = tok.encode(d)
        assert tok.decode(ids) == d
        assert all(0 <= i < tok.bos for i in ids)
        enc = tok.encode_document(d)
        assert enc[0] == enc[-1] == tok.bos


def test_unknown_character_is_a_user_error():
    with pytest.raises(UserError, match="not in the vocabulary"):
        Tokenizer("abc").encode("abz")


def test_split_keeps_the_reference_training_stream():
    docs = read_documents()
    reference = docs.copy()
    random.Random(42).shuffle(reference)
    split = shuffle_and_split(docs, random.Random(42), 0.1)
    assert split.train == reference[: len(split.train)]
    assert split.val == reference[len(split.train) :]
    assert len(split.val) == int(0.1 * len(reference))


def test_tiny_inputs_keep_every_document_for_training():
    split = shuffle_and_split(["a", "b"], random.Random(0), 0.4)
    assert sorted(split.train) == ["a", "b"] and split.val == []


def test_batches_walk_the_documents_in_order():
    assert batch_indices(0, 1, 10) == [0]
    assert batch_indices(12, 1, 10) == [2]
    assert batch_indices(1, 4, 10) == [4, 5, 6, 7]
    assert batch_indices(2, 4, 10) == [8, 9, 0, 1]


def test_reshuffled_epochs_each_see_every_document_once_in_a_new_order():
    n, B = 10, 3
    first = [i for step in range(4) for i in batch_indices(step, B, n, reshuffle=True, seed=7)]
    assert first[:n] == list(range(n)), "the first epoch keeps the given order"
    walk = [i for step in range(40) for i in batch_indices(step, B, n, reshuffle=True, seed=7)]
    epochs = [walk[e * n : (e + 1) * n] for e in range(len(walk) // n)]
    assert all(sorted(e) == list(range(n)) for e in epochs), "each epoch: every document once"
    assert len({tuple(e) for e in epochs}) == len(epochs), "each epoch in its own order"
    again = [i for step in range(40) for i in batch_indices(step, B, n, reshuffle=True, seed=7)]
    assert again == walk, "a function of (seed, step): a resumed run reads the same"
    other = [i for step in range(40) for i in batch_indices(step, B, n, reshuffle=True, seed=8)]
    assert other[:n] == walk[:n] and other != walk


def test_long_documents_are_cut_to_block_size():
    tokens = list(range(40))
    inputs, targets = training_pairs(tokens, 16)
    assert inputs == list(range(16)) and targets == list(range(1, 17))
    assert training_pairs([5, 1, 5], 16) == ([5, 1], [1, 5])


@pytest.mark.parametrize("tie", [False, True])
def test_parameter_counts_match_the_reference(tie):
    config = ModelConfig(vocab_size=27, tie_lm_head=tie)
    assert config.num_params() == (3760 if tie else 4192)
    shapes = param_shapes(config)
    assert sum(r * c for r, c in shapes.values()) == config.num_params()
    weights = init_weights(config, random.Random(0))
    assert {k: (len(m), len(m[0])) for k, m in weights.items()} == shapes


def test_tied_init_skips_the_lm_head_draws():
    untied = init_weights(ModelConfig(vocab_size=27), random.Random(1))
    tied = init_weights(ModelConfig(vocab_size=27, tie_lm_head=True), random.Random(1))
    assert tied["wte"] == untied["wte"] and tied["wpe"] == untied["wpe"]
    assert tied["layer0.attn_wq"][0][0] == untied["lm_head"][0][0]  # moved up in the stream


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_embd": 10, "n_head": 3},
        {"block_size": 0},
        {"n_layer": -1},
        {"n_head": 0},
    ],
)
def test_model_config_is_validated(kwargs):
    with pytest.raises(UserError):
        ModelConfig(vocab_size=27, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": -5},
        {"steps": 0},
        {"learning_rate": float("nan")},
        {"learning_rate": 0.0},
        {"batch_size": 0},
        {"val_fraction": 1.0},
        {"beta2": 1.0},
    ],
)
def test_train_config_is_validated(kwargs):
    with pytest.raises(UserError):
        TrainConfig(**kwargs)


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        TrainConfig().steps = 3
