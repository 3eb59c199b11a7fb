"""Lesson 11 (binding and hard negatives): the NegCLIP loss, the attribute swap, the training hook, the checker,
and the lesson's optional control cell."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clipcourse import data, loss, model, text, train
from clipcourse.exercises import lesson11


def _features(b=6, m=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(F.normalize(torch.randn(k, d, generator=g), dim=-1) for k in (b, b, m))


def _by_hand(img, txt, neg, tau):
    logits_per_image = img @ torch.cat([txt, neg]).T / tau              # (B, B + M)
    logits_per_text = (img @ txt.T / tau).T                             # (B, B)
    labels = torch.arange(len(img))
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


@pytest.mark.parametrize("b,m,tau", [(6, 6, 0.07), (5, 2, 0.5), (4, 9, 0.01)])
def test_negclip_loss_equals_the_hand_version(b, m, tau):
    img, txt, neg = _features(b, m)
    assert torch.allclose(loss.clip_loss_with_hard_negatives(img, txt, neg, tau), _by_hand(img, txt, neg, tau), atol=1e-6)


def test_without_hard_negatives_it_is_clip_loss():
    img, txt, neg = _features(7, 0)
    for tau in (0.02, torch.tensor(0.3)):
        assert torch.allclose(loss.clip_loss_with_hard_negatives(img, txt, neg, tau), loss.clip_loss(img, txt, tau))


def test_hard_negatives_only_raise_the_loss_and_get_gradients():
    img, txt, neg = _features()
    neg = neg.requires_grad_(True)
    value = loss.clip_loss_with_hard_negatives(img, txt, neg, 0.1)
    assert value > loss.clip_loss(img, txt, 0.1)               # more wrong answers in each image's row
    value.backward()
    assert neg.grad is not None and neg.grad.abs().sum() > 0


def test_negclip_loss_refuses_bad_input_naming_the_argument():
    img, txt, neg = _features()
    with pytest.raises(ValueError, match="hard_negative_features"):
        loss.clip_loss_with_hard_negatives(img, txt, neg[:, :4], 0.1)
    with pytest.raises(TypeError, match="hard_negative_features"):
        loss.clip_loss_with_hard_negatives(img, txt, neg.numpy(), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        loss.clip_loss_with_hard_negatives(img, txt, neg, 0.0)


def _two_objects(n=64, seed=0):
    return data.sample_scenes(n, two_object_prob=1.0, generator=torch.Generator().manual_seed(seed))


def test_swap_attribute_exchanges_one_attribute_and_keeps_the_words():
    scenes = _two_objects()
    keep = data.swap_changes_binding(scenes)
    assert keep.float().mean() > 0.5
    for attribute, col in (("color", data.COLOR), ("shape", data.SHAPE)):
        swapped = data.swap_attribute(scenes, attribute)
        assert torch.equal(swapped[:, 0, col], scenes[:, 1, col]) and torch.equal(swapped[:, 1, col], scenes[:, 0, col])
        others = [c for c in range(5) if c != col]
        assert torch.equal(swapped[..., others], scenes[..., others])
        assert torch.equal(data.swap_attribute(swapped, attribute), scenes)      # swapping twice undoes it
        true, false = data.describe(scenes[keep], template=1), data.describe(swapped[keep], template=1)
        assert all(t != f and sorted(t.replace("an ", "a ").split()) == sorted(f.replace("an ", "a ").split())
                   for t, f in zip(true, false))                                # a bag of words cannot tell them apart
    scene = torch.tensor([[[0, 1, 0, 0, 1], [2, 0, 1, 1, 1]]])                  # red circle, blue square
    assert data.describe(scene, template=1) == ["a red circle left of a blue square"]
    assert data.describe(data.swap_attribute(scene, "color"), template=1) == ["a blue circle left of a red square"]
    assert data.describe(data.swap_attribute(scene, "shape"), template=1) == ["a red square left of a blue circle"]


def test_swap_attribute_refuses_what_it_cannot_swap():
    with pytest.raises(ValueError, match="two objects"):
        data.swap_attribute(data.sample_scenes(8, two_object_prob=0.0), "color")
    with pytest.raises(ValueError, match="attribute"):
        data.swap_attribute(_two_objects(), "size")
    with pytest.raises(ValueError, match="scenes"):
        data.swap_attribute(torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="scenes"):
        data.swap_changes_binding([[0]])


def test_swap_changes_binding_only_where_both_swaps_rebind():
    # (colour, shape, size, position, present) for the left object, then the right one
    scenes = torch.tensor([[[0, 1, 0, 0, 1], [2, 0, 1, 1, 1]],     # red circle, blue square: both swaps rebind
                           [[0, 1, 0, 0, 1], [0, 0, 1, 1, 1]],     # red circle, red square: a shape swap moves the pairs
                           [[0, 1, 0, 0, 1], [2, 1, 1, 1, 1]],     # red circle, blue circle: a colour swap moves them
                           [[0, 1, 0, 0, 1], [2, 0, 1, 1, 0]]])    # one object
    assert data.swap_changes_binding(scenes).tolist() == [True, False, False, False]
    # where it says False, a swap may still change the caption, but not which colour goes with which shape
    assert data.describe(data.swap_attribute(scenes[1:2], "shape"), template=1) == ["a red square left of a red circle"]


def test_binding_negative_swaps_where_it_can_else_changes_one_attribute():
    g = torch.Generator().manual_seed(0)
    scenes = data.sample_scenes(400, two_object_prob=0.5, generator=g)
    neg = data.binding_negative(scenes, generator=torch.Generator().manual_seed(1))
    ok = data.swap_changes_binding(scenes)
    swapped = [data.swap_attribute(scenes[ok], a) for a in ("color", "shape")]
    assert all(torch.equal(n, s0) or torch.equal(n, s1) for n, s0, s1 in zip(neg[ok], *swapped))
    assert (neg[ok][:, :, data.COLOR] != scenes[ok][:, :, data.COLOR]).any(-1).float().mean().item() == pytest.approx(0.5, abs=0.15)
    changed = (neg[~ok] != scenes[~ok]).sum(dim=(1, 2))                       # the one-attribute fallback
    assert (changed == 1).all()
    again = data.binding_negative(scenes, generator=torch.Generator().manual_seed(1))
    assert torch.equal(neg, again)                                             # seeded


def test_train_with_hard_negatives_uses_negclip_and_default_is_unchanged():
    tok = text.Tokenizer.for_shapesworld()
    world = data.ShapesWorld.generate(64, seed=0, two_object_prob=1.0)
    tokens = tok(world.captions)
    negatives = tok(data.describe(data.binding_negative(world.scenes, generator=torch.Generator().manual_seed(0)),
                                  generator=torch.Generator().manual_seed(5)))
    # on the CPU, where the loss by hand below is computed (a GPU's TF32 convolutions differ at 1e-5)
    cfg = train.TrainConfig(steps=3, batch_size=16, precision="float32", device="cpu")
    _, plain = train.train(model.build_model(tok, seed=0), world.images, tokens, cfg, progress=False)
    m, hard = train.train(model.build_model(tok, seed=0), world.images, tokens, cfg, progress=False,
                          hard_negative_tokens=negatives)
    assert plain.loss[0] != hard.loss[0] and all(math.isfinite(v) for v in hard.loss)
    # the first loss by hand: the same weights, the same first batch
    m0 = model.build_model(tok, seed=0).train()
    idx = train.BatchOrder(len(world), cfg.batch_size, cfg.seed).indices(0)
    with torch.no_grad():
        fi, ft, tau = m0(data.to_float(world.images[idx]), torch.cat([tokens[idx], negatives[idx]]))
    first = loss.clip_loss_with_hard_negatives(fi, ft[:16], ft[16:], tau).item()
    assert hard.loss[0] == pytest.approx(first, rel=1e-5)
    with pytest.raises(ValueError, match="hard_negative_tokens"):
        train.train(model.build_model(tok, seed=0), world.images, tokens, cfg, progress=False,
                    hard_negative_tokens=negatives[:10])


# --- the checker: each learner-style wrong answer gets its own diagnosis --------------------------

def _ce(x, y):
    return F.cross_entropy(x, y)


def right(img, txt, neg, tau):
    labels = torch.arange(len(img))
    logits = img @ torch.cat([txt, neg]).T / tau
    return (_ce(logits, labels) + _ce(logits[:, :len(txt)].T, labels)) / 2


WRONG = {
    "ignores the hard negatives": lambda i, t, n, tau: loss.clip_loss(i, t, tau),
    "come first": lambda i, t, n, tau: (_ce(i @ torch.cat([n, t]).T / tau, torch.arange(len(i)))
                                        + _ce(t @ i.T / tau, torch.arange(len(i)))) / 2,
    "only one direction": lambda i, t, n, tau: _ce(i @ torch.cat([t, n]).T / tau, torch.arange(len(i))),
    "without averaging": lambda i, t, n, tau: 2 * right(i, t, n, tau),
    "not divided by τ": lambda i, t, n, tau: (_ce(i @ torch.cat([t / tau, n]).T, torch.arange(len(i)))
                                              + _ce(t @ i.T / tau, torch.arange(len(i)))) / 2,
    "pulls the wrong caption": lambda i, t, n, tau: (_ce(i @ torch.cat([t, n]).T / tau, torch.arange(len(i)))
                                                     + _ce(torch.cat([t, n]) @ i.T / tau,
                                                           torch.cat([torch.arange(len(i)), torch.arange(len(n)) % len(i)]))) / 2,
    "different numbers of rows": lambda i, t, n, tau: _ce((i @ torch.cat([t, n]).T / tau).T, torch.arange(len(i))),
    "no gradient reaches the hard negatives": lambda i, t, n, tau: right(i, t, n.detach(), tau),
    "not a tensor": lambda i, t, n, tau: right(i, t, n, tau).item(),
    "in place": lambda i, t, n, tau: right(i, t.div_(1.0), n, tau),
    "does not change when τ changes": lambda i, t, n, tau: right(i, t, n, 0.1) + 0.01,
    # from the second review (tests/test_lesson_11_review2.py): τ read as CLIP's logit_scale, multiplied
    "multiplied by τ": lambda i, t, n, tau: right(i, t, n, 1 / tau),
    # logits_per_text = logits_per_image[:, :B], the .T forgotten: image→text twice
    "without its transpose": lambda i, t, n, tau: (_ce(i @ torch.cat([t, n]).T / tau, torch.arange(len(i)))
                                                   + _ce(i @ t.T / tau, torch.arange(len(i)))) / 2,
    "summed over the batch": lambda i, t, n, tau: (
        F.cross_entropy(i @ torch.cat([t, n]).T / tau, torch.arange(len(i)), reduction="sum")
        + F.cross_entropy(t @ i.T / tau, torch.arange(len(i)), reduction="sum")) / 2,
    # each image sees the B captions and its own hard negative only: (B, B + 1)
    "its own hard negative only": lambda i, t, n, tau: (
        _ce(torch.cat([i @ t.T, (i * n).sum(-1, keepdim=True)], dim=1) / tau, torch.arange(len(i)))
        + _ce(t @ i.T / tau, torch.arange(len(i)))) / 2,
    "softmax": lambda i, t, n, tau: (_ce(F.softmax(i @ torch.cat([t, n]).T / tau, dim=-1), torch.arange(len(i)))
                                     + _ce(F.softmax(t @ i.T / tau, dim=-1), torch.arange(len(i)))) / 2,
}


@pytest.mark.parametrize("name", WRONG)
def test_checker_names_each_mistake(name):
    feedback = lesson11.check_negclip_loss(WRONG[name])
    assert feedback.passed is False, feedback
    assert name in str(feedback), str(feedback)


def test_checker_accepts_the_solution_and_waits_for_an_answer():
    assert lesson11.check_negclip_loss(right).passed is True
    assert lesson11.check_negclip_loss(loss.clip_loss_with_hard_negatives).passed is True
    # normalising the (already unit) features again: the same loss; once refused as "cut off from autograd"
    renormalised = lambda i, t, n, tau: right(F.normalize(i, dim=-1), F.normalize(t, dim=-1), F.normalize(n, dim=-1), tau)
    assert lesson11.check_negclip_loss(renormalised).passed is True, lesson11.check_negclip_loss(renormalised)
    detached = lambda i, t, n, tau: right(i, t.detach(), n, tau) + 0 * t.sum()     # the value right, t's gradient 0
    assert "caption features" in str(lesson11.check_negclip_loss(detached))
    assert lesson11.check_negclip_loss(None).passed is None
    assert lesson11.check_negclip_loss(3).passed is False
    assert lesson11.check_negclip_loss(lambda i, t, n, tau: None).passed is None


# --- the lesson's optional control (RUN_CONTROL = False by default, so nbval never runs its training) -----

def test_the_optional_control_cell_runs_and_touches_no_result():
    """The cell the lesson offers for the random-captions control, run with RUN_CONTROL = True on a tiny setup:
    it trains under names of its own and prints beside the lesson's scores, changing none of them."""
    path = Path(__file__).resolve().parents[1] / "notebooks" / "11_binding_and_hard_negatives.ipynb"
    cell = next(c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c.get("id") == "l11-17e")
    source = "".join(cell["source"])
    assert source.startswith("RUN_CONTROL = False")                 # off by default: the lesson's time is budgeted
    tok = text.Tokenizer.for_shapesworld()
    world = data.ShapesWorld.generate(32, split="all", seed=0, two_object_prob=1.0)
    score = {(name, tau): 0.5 for name in ("plain", "hard negatives") for tau in (0.02, 0.1)}
    trained = []

    def fresh_model(tau):
        trained.append(tau)
        return model.build_model(tok, seed=0, temperature=tau, learnable_temperature=False)

    printed = []
    namespace = dict(torch=torch, train=train, world=world, tokens=tok(world.captions), score=dict(score),
                     config=train.TrainConfig(steps=2, batch_size=8, precision="float32", device="cpu"),
                     fresh_model=fresh_model, swap_test=lambda m: {"color": 0.75, "shape": 0.25},
                     verdict=lambda d: f"verdict({d:+.2f})", print=lambda *a, **k: printed.append(" ".join(map(str, a))))
    exec(source.replace("RUN_CONTROL = False", "RUN_CONTROL = True", 1), namespace)
    assert trained == [0.02, 0.1] and namespace["score"] == score
    assert len(printed) == 4 and "random extra captions 50.0%" in printed[0], printed
    assert "verdict(+0.00)" in printed[1], printed


# --- pairings held out of training (swap families) ------------------------------------------------------------

def _lesson_cell(cell_id):
    path = Path(__file__).resolve().parents[1] / "notebooks" / "11_binding_and_hard_negatives.ipynb"
    return "".join(next(c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c.get("id") == cell_id)["source"])


def test_the_training_data_cell_keeps_every_held_out_family_out_of_captions_and_hard_negatives():
    """The lesson's training-data cell, run on a small pool: no kept caption or hard negative lies in a held-out
    family, so no new-pairing test picture (truth or twin) was ever a training caption."""
    source = _lesson_cell("l11-09")
    for big, small in (("generate(15000,", "generate(900,"), ("[:12000]", "[:600]"), ("len(world) == 12000", "len(world) == 600")):
        assert big in source
        source = source.replace(big, small)
    held = torch.randperm(data.NUM_SWAP_FAMILIES, generator=torch.Generator().manual_seed(0))[:70]
    namespace = dict(torch=torch, data=data, tok=text.Tokenizer.for_shapesworld(), held=held, print=lambda *a, **k: None)
    exec(source, namespace)
    world, negatives = namespace["world"], namespace["negatives"]
    assert len(world) == 600 and len(negatives) == 600
    test = data.sample_scenes(2000, split="all", two_object_prob=1.0, generator=torch.Generator().manual_seed(7))
    test = test[torch.isin(data.swap_family(test), held)]
    assert len(test) > 100
    said = set(namespace["captions"]) | set(negatives)
    for attribute in (None, *data.SWAPPABLE):                       # the truth and both twins
        scenes = test if attribute is None else data.swap_attribute(test, attribute)
        for k in range(len(data.PAIR_TEMPLATES)):
            assert said.isdisjoint(data.describe(scenes, template=k))


def test_the_new_pairings_cell_scores_seen_and_new_apart_and_gives_both_verdicts():
    source = _lesson_cell("l11-17h")
    assert source.startswith("# NBVAL_IGNORE_OUTPUT") and "exercises.expect(" in source
    new = torch.tensor([True, False, False, True])
    fake = {("plain", 0.02): 0.5, ("hard negatives", 0.02): 0.7, ("plain", 0.1): 0.5, ("hard negatives", 0.1): 0.52}

    def swap_test(m, rows):                                         # the score of model m: on new rows 0.1 lower
        s = fake[m] - (0.1 if bool(rows[0]) else 0.0)
        return {"color": s, "shape": s}

    printed, expected = [], []
    namespace = dict(new=new, models={k: k for k in fake}, swap_test=swap_test, MARGIN=0.07,
                     verdict=lambda d: "holds" if d > 0.07 else "does not hold" if d < -0.07 else "unclear",
                     exercises=type("E", (), {"expect": staticmethod(lambda *a, **k: expected.append((a, k)))}),
                     print=lambda *a, **k: printed.append(" ".join(map(str, a))))
    exec(source, namespace)
    by_pairing = namespace["by_pairing"]
    assert by_pairing["hard negatives", 0.02] == pytest.approx({"seen": 0.7, "new": 0.6})
    verdicts = [p for p in printed if ":" in p and ("improve" in p or "as well as" in p)]
    assert len(verdicts) == 4
    assert "improve binding on new pairings at τ = 0.02: holds" in verdicts[0]
    assert "improve binding on new pairings at τ = 0.1: unclear" in verdicts[2]
    assert all("does not hold" in v for v in verdicts[1::2])          # seen - new = 0.1 > 0.07 at both τ
    assert len(expected) == 1 and expected[0][0][1] == pytest.approx(0.1)


# --- binding by position: the "left of" and "right of" templates ------------------------------------------------

def test_a_reader_of_positions_scores_exactly_one_minus_its_left_of_score_on_right_of():
    """The lesson's argument, checked on many pictures with its own by-hand counter: a model that finds each
    attribute on the object a caption names first (taken as the left one) prefers the truth of every 'left of'
    swap and the twin of every 'right of' swap, so its two scores sum to 100 %; a model that knows colour-shape
    pairs wherever they are prefers the truth in both."""
    namespace = dict(torch=torch, data=data, print=lambda *a, **k: None,
                     scene=torch.tensor([[[0, 1, 0, 0, 1], [2, 0, 1, 1, 1]]]))
    namespace["colours_swapped"] = data.swap_attribute(namespace["scene"], "color")
    exec(_lesson_cell("l11-23"), namespace)
    in_place = namespace["in_place"]
    scenes = _two_objects(300, seed=4)
    scenes = scenes[data.swap_changes_binding(scenes)]
    as_named = {1: lambda s: s, 2: lambda s: s.flip(0)}                # "right of" names the right object first
    pairs = lambda s: {(int(o[data.COLOR]), int(o[data.SHAPE])) for o in s}
    for attribute in data.SWAPPABLE:
        twins = data.swap_attribute(scenes, attribute)
        prefers = {t: [in_place(as_named[t](s), s) > in_place(as_named[t](w), s) for s, w in zip(scenes, twins)]
                   for t in (1, 2)}
        assert all(prefers[1]) and not any(prefers[2])                  # 100 % and 0 %: a sum of exactly 100 %
        assert all(pairs(s) != pairs(w) for s, w in zip(scenes, twins))  # a pair reader rejects every twin, any order


def test_the_position_cell_prints_both_verdicts_and_guards_the_sum():
    source = _lesson_cell("l11-24")
    assert source.startswith("# NBVAL_IGNORE_OUTPUT") and "exercises.expect(" in source

    def run(scores, right_first):          # scores: model -> ('left of', 'right of'); right_first: the reversed 'and'
        printed, expected = [], []
        expect = lambda name, value, at_most: expected.append(value) if value <= at_most else (_ for _ in ()).throw(
            AssertionError(name))
        test = lambda m, template=0, right_first=False: dict.fromkeys(
            data.SWAPPABLE, reversed_and[m] if right_first else scores[m][template - 1])
        reversed_and = right_first
        namespace = dict(models={k: k for k in scores if k[0] != "untrained"}, fresh_model=lambda tau: ("untrained", tau),
                         MARGIN=0.07, print=lambda *a, **k: printed.append(" ".join(a)), swap_test=test,
                         exercises=type("E", (), {"expect": staticmethod(expect)}))
        exec(source, namespace)
        return printed, expected

    positional = {("plain", 0.02): (0.52, 0.48), ("hard negatives", 0.02): (0.62, 0.381),
                  ("untrained", 0.02): (0.516, 0.485)}
    printed, expected = run(positional, {("plain", 0.02): 0.47, ("hard negatives", 0.02): 0.38})
    assert len(printed) == 5                                            # the untrained baseline is measured too
    assert "word by word" in printed[-2] and printed[-2].split(": ")[1].startswith("holds")
    assert "wherever the object is" in printed[-1] and "does not hold" in printed[-1] and "best 47.0%" in printed[-1]
    assert expected == [pytest.approx(0.001)]
    printed, _ = run(positional, {("plain", 0.02): 0.47, ("hard negatives", 0.02): 0.66})   # knows a red circle
    assert "wherever the object is" in printed[-1] and ": holds" in printed[-1]
    binding = {("plain", 0.02): (0.52, 0.48), ("hard negatives", 0.02): (0.70, 0.65), ("untrained", 0.02): (0.5, 0.5)}
    with pytest.raises(AssertionError, match="left of"):
        run(binding, {("plain", 0.02): 0.47, ("hard negatives", 0.02): 0.66})   # the prose would be wrong: Run All stops


def test_the_read_out_cell_fits_each_place_and_judges_against_the_untrained_model():
    """The linear-probe cell reads the colour of each place from every model's features and gives a verdict per
    place against the untrained model; a model without the left colour stops Run All (the prose says it learned it)."""
    source = _lesson_cell("l11-24p")
    assert source.startswith("# NBVAL_IGNORE_OUTPUT") and "exercises.expect(" in source
    scenes = _two_objects(40, seed=5)

    def run(read):                          # read: model -> (left, right), what linear_probe returns for it
        printed, asked = [], []

        def probe(features, labels):        # the features stand for their model; labels must be a place's colour
            side = next(s for s in (0, 1) if torch.equal(labels, scenes[:, s, data.COLOR]))
            asked.append(side)
            return read[features][side]

        def expect(name, value, at_least):
            if value < at_least:
                raise AssertionError(name)
        evaluate_stub = type("E", (), {"embed_images": staticmethod(lambda m, images: m),
                                       "linear_probe": staticmethod(probe)})
        namespace = dict(with_untrained={k: k for k in read}, evaluate=evaluate_stub, data=data, test_scenes=scenes,
                         test_images=None, MARGIN=0.07, print=lambda *a, **k: printed.append(" ".join(a)),
                         exercises=type("X", (), {"expect": staticmethod(expect)}))
        exec(_lesson_cell("l11-16"), namespace)                              # the lesson's verdict()
        exec(source, namespace)
        return printed, asked

    read = {("plain", 0.02): (0.62, 0.5), ("hard negatives", 0.02): (0.71, 0.44), ("untrained", 0.02): (0.49, 0.44)}
    printed, asked = run(read)
    assert asked == [0, 1] * 3                                               # left, then right, for every model
    assert "left object's colour" in printed[-2] and ": holds" in printed[-2] and "+22.0%" in printed[-2]
    assert "right object's colour" in printed[-1] and ": unclear" in printed[-1]
    with pytest.raises(AssertionError, match="left colour read-out"):
        run({**read, ("hard negatives", 0.02): (0.55, 0.44)})
