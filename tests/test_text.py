"""The word-level tokenizer: ids, special tokens, batches, unknown words, every ShapesWorld caption."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from clipcourse import data, text
from clipcourse.data import fix_articles
from clipcourse.text import Tokenizer, split_words


def test_special_token_ids(tok):
    assert tok.vocab[:4] == ["<pad>", "<sot>", "<eot>", "<unk>"]
    assert (tok.pad_id, tok.sot_id, tok.eot_id, tok.unk_id) == (0, 1, 2, 3)
    assert [tok.index[s] for s in text.SPECIALS] == [0, 1, 2, 3]


def test_vocabulary_is_small_sorted_and_unique(tok):
    words = tok.vocab[4:]
    assert words == sorted(set(words))
    assert len(tok) == len(tok.vocab) < 64  # fits the default TextEncoderConfig.vocab_size
    for w in list(data.COLORS) + list(data.SHAPES) + list(data.SIZES) + ["a", "an", "of", "and"]:
        assert w in tok.index, w


def test_encode_places_sot_and_eot(tok):
    ids = tok.encode("a red circle")
    assert ids[0] == tok.sot_id and ids[-1] == tok.eot_id
    assert ids[1:-1] == [tok.index["a"], tok.index["red"], tok.index["circle"]]


def test_batch_is_padded_to_context_length(tok):
    captions = ["a red circle", "a small blue square on the left", "a green cross and a white ring"]
    batch = tok(captions)
    assert batch.shape == (3, tok.context_length) and batch.dtype == torch.long
    for row, caption in zip(batch, captions):
        n = len(split_words(caption))
        assert row[0] == tok.sot_id
        assert row[n + 1] == tok.eot_id
        assert bool((row[n + 2:] == tok.pad_id).all())
        assert int((row == tok.eot_id).sum()) == 1 and int((row == tok.sot_id).sum()) == 1
        assert row.tolist()[:n + 2] == tok.encode(caption)


def test_a_single_string_is_a_batch_of_one(tok):
    assert torch.equal(tok("a red circle"), tok(["a red circle"]))
    assert tok([]).shape == (0, tok.context_length)


def test_decode_round_trip(tok):
    caption = "a large orange triangle left of a small cyan diamond"
    assert tok.decode(tok(caption)[0]) == caption
    assert tok.decode(tok.encode(caption)) == caption


def test_case_and_spacing_are_normalised(tok):
    assert torch.equal(tok("A  Red   CIRCLE"), tok("a red circle"))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_round_trip_of_any_word_sequence(tok, draw):
    words = draw.draw(st.lists(st.sampled_from(tok.vocab[4:]), min_size=0, max_size=tok.context_length - 2))
    caption = " ".join(words)
    ids = tok(caption)[0]
    assert tok.decode(ids) == caption
    assert ids[len(words) + 1] == tok.eot_id
    assert bool((ids[len(words) + 2:] == tok.pad_id).all())


def test_unknown_word_raises_and_names_it(tok):
    with pytest.raises(ValueError, match="cirle"):
        tok("a red cirle")
    with pytest.raises(ValueError, match="unknown='unk'"):
        tok(["a red circle", "a purple hexagon"])


def test_unknown_unk_maps_to_unk_id():
    tok = Tokenizer.for_shapesworld(unknown="unk")
    ids = tok("a red hexagon")[0]
    assert ids[3] == tok.unk_id
    assert tok.decode(ids) == "a red <unk>"


def test_too_long_caption_raises(tok):
    fits = " ".join(["red"] * (tok.context_length - 2))
    assert tok(fits).shape == (1, tok.context_length)
    with pytest.raises(ValueError, match="context_length"):
        tok(fits + " red")


def test_non_string_raises_type_error(tok):
    with pytest.raises(TypeError, match="str"):
        tok.encode(5)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown"):
        Tokenizer(["a"], unknown="ignore")
    with pytest.raises(ValueError, match="context_length"):
        Tokenizer(["a"], context_length=2)


def test_custom_context_length():
    tok = Tokenizer.for_shapesworld(context_length=24)
    assert tok("a red circle").shape == (1, 24)


def test_from_captions_builds_a_vocabulary():
    tok = Tokenizer.from_captions(["A dog runs.", "two dogs run"])
    assert set(tok.vocab[4:]) == {"a", "dog", "runs", ".", "two", "dogs", "run"}
    assert tok.decode(tok("a dog runs .")[0]) == "a dog runs ."
    assert tok.decode(tok("A dog runs.")[0]) == "a dog runs ."


def test_every_shapesworld_caption_tokenizes(tok):
    ds = data.ShapesWorld.generate(3000, split="all", seed=0, two_object_prob=0.5)
    tokens = tok(ds.captions)
    assert tokens.shape == (3000, tok.context_length)
    assert int((tokens == tok.unk_id).sum()) == 0
    # and every template, explicitly, for single and paired scenes, including the hard negatives
    scenes = data.sample_scenes(200, split="all", two_object_prob=0.5,
                                generator=torch.Generator().manual_seed(0))
    for t in range(max(len(data.SINGLE_TEMPLATES), len(data.PAIR_TEMPLATES))):
        captions = data.describe(scenes, template=t)
        assert [tok.decode(row) for row in tok(captions)] == captions
    tok(data.hard_negative_captions(scenes))
    tok(data.class_prompts())


@pytest.mark.parametrize("before,after", [
    ("a orange circle", "an orange circle"),
    ("a red circle and a orange ring", "a red circle and an orange ring"),
    ("A orange ring", "An orange ring"),
    ("a large cyan cross", "a large cyan cross"),
    ("an orange ring", "an orange ring"),
    ("banana a apple", "banana an apple"),
    ("panda orange", "panda orange"),   # 'a' inside a word is not an article
])
def test_fix_articles(before, after):
    assert fix_articles(before) == after


def test_split_words():
    assert split_words("A red, BIG circle!") == ["a", "red", ",", "big", "circle", "!"]
