"""Lesson 06: the in-batch accuracy a batch's duplicate captions allow (evaluate.tied_accuracy), and the lesson
measuring it on the very batches its in-batch accuracy comes from."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clipcourse import data, evaluate, loss, train
from clipcourse.encoders import ImageEncoderConfig, TextEncoderConfig
from clipcourse.model import build_model
from clipcourse.text import Tokenizer

LESSON = Path(__file__).resolve().parents[1] / "notebooks" / "06_training_a_tiny_clip.ipynb"
DIRECTIONS = ("image_to_text", "text_to_image")


def same_words(captions):
    return torch.tensor([[a == b for b in captions] for a in captions])       # (B, B)


def test_word_for_word_twins_give_distinct_captions_over_b_both_ways():
    captions = ["a red square", "a blue ring", "a red square", "a red square", "a blue ring", "a cyan cross"]
    for direction in DIRECTIONS:                                              # 3 distinct captions among 6
        assert evaluate.tied_accuracy(same_words(captions), direction) == pytest.approx(3 / 6)


def test_captions_true_in_other_words_differ_by_direction():
    # picture 0: a white circle captioned "a circle"; pictures 1-3: a red, blue, green circle, each captioned
    # with its colour. "a circle" is true of all four pictures; a colour caption only of its own picture.
    fits = torch.eye(4, dtype=torch.bool)
    fits[:, 0] = True                                                         # caption 0 fits every picture
    # image -> text: picture 0 has one fitting caption, pictures 1-3 two each: (1 + 3 / 2) / 4
    assert evaluate.tied_accuracy(fits, "image_to_text") == pytest.approx(0.625)
    # text -> image: caption 0 fits four pictures, captions 1-3 one each: (1 / 4 + 3) / 4
    assert evaluate.tied_accuracy(fits, "text_to_image") == pytest.approx(0.8125)
    assert evaluate.tied_accuracy(fits) == evaluate.tied_accuracy(fits, "image_to_text")


def test_no_model_beats_the_twins_ceiling_and_one_reaches_it():
    captions = ["a", "b", "a", "c", "a", "b", "d", "c"]                      # 4 distinct of 8
    ceiling = evaluate.tied_accuracy(same_words(captions))
    index = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    g = torch.Generator().manual_seed(0)
    for _ in range(200):                                                      # random models: twins share a feature
        words = F.normalize(torch.randn(len(index), 8, generator=g), dim=-1)
        text_features = words[[index[c] for c in captions]]                   # (8, 8)
        image_features = F.normalize(text_features + torch.randn(8, 8, generator=g), dim=-1)
        assert loss.in_batch_accuracy(image_features, text_features) <= ceiling       # image -> text
        assert loss.in_batch_accuracy(text_features, image_features) <= ceiling       # text -> image
    # each picture equal to its caption's feature: argmax takes the first of tied twins, one hit per caption
    words = torch.eye(len(index))
    text_features = words[[index[c] for c in captions]]
    assert loss.in_batch_accuracy(text_features.clone(), text_features) == pytest.approx(ceiling)


@pytest.mark.parametrize("fits, error", [
    ([[True]], TypeError),                                                    # not a tensor
    (torch.ones(2, 2), TypeError),                                            # not bool
    (torch.ones(2, 3, dtype=torch.bool), ValueError),                         # not square
    (torch.ones(0, 0, dtype=torch.bool), ValueError),                         # empty
    (torch.zeros(2, 2, dtype=torch.bool), ValueError),                        # a caption that does not fit its picture
])
def test_tied_accuracy_refuses_bad_fits(fits, error):
    with pytest.raises(error, match="fits"):
        evaluate.tied_accuracy(fits)


def test_tied_accuracy_refuses_a_bad_direction():
    with pytest.raises(ValueError, match="direction"):
        evaluate.tied_accuracy(torch.eye(2, dtype=torch.bool), "both")


def test_batch_order_replays_the_batches_train_drew():
    # the lesson replays train.BatchOrder to find the pairs of the last steps: they are the ones train() used
    tok = Tokenizer.for_shapesworld()
    m = build_model(tok, seed=0, embed_dim=16, image=ImageEncoderConfig(resolution=16, widths=(8, 16)),
                    text=TextEncoderConfig(width=16, heads=2))
    world = data.ShapesWorld.generate(10, seed=0, resolution=16)
    cfg = train.TrainConfig(steps=7, batch_size=4, warmup_steps=1, seed=3)   # 2 batches an epoch: 3 reshuffles
    drawn = []

    class Record(train.Callback):
        def on_step_end(self, state):                                         # the pairs of the step just taken
            batch = (state.step - 1) % state.batches.n_batches
            drawn.append(state.batches.perm[batch * cfg.batch_size:(batch + 1) * cfg.batch_size].clone())

    train.train(m, world.images, tok(world.captions), cfg, callbacks=[Record()], progress=False)
    order = train.BatchOrder(len(world), cfg.batch_size, cfg.seed)
    replayed = [order.indices(step) for step in range(cfg.steps)]
    assert len(drawn) == cfg.steps and all(torch.equal(x, y) for x, y in zip(replayed, drawn))
    assert len({tuple(x.tolist()) for x in replayed}) > 2                     # new epochs, new batches


def _cells():
    return json.loads(LESSON.read_text(encoding="utf-8"))["cells"]


def test_the_lesson_counts_duplicates_on_the_batches_its_in_batch_accuracy_comes_from():
    code = ["".join(c["source"]) for c in _cells() if c["cell_type"] == "code"]
    ceiling_cell = next(s for s in code if "tied_accuracy" in s)
    assert "world.captions[:config.batch_size]" not in "".join(code)          # the first 128 pairs: no training batch
    batches_cell = next(s for s in code if "BatchOrder" in s)
    assert "config.seed" in batches_cell and "config.batch_size" in batches_cell
    accuracy_cell = next(s for s in code if "in_batch_accuracy" in s and "batches" in s)
    assert "alike" in accuracy_cell and "ceiling" in accuracy_cell            # the gap check uses both, same batches
    assert "image_to_text" in ceiling_cell
