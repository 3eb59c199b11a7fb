"""Lessons 06-08: every hand-built-vs-package equality the notebooks assert, and the exercise checkers."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipcourse import data, evaluate, exercises, loss, model, temperature, text, train
from clipcourse.encoders import ImageEncoderConfig
from clipcourse.exercises import lesson06, lesson07, lesson08

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _code_cells(name):
    cells = json.loads(next(NOTEBOOKS.glob(f"{name}_*.ipynb")).read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def small_model(tok, seed=0):
    return model.build_model(tok, seed=seed, embed_dim=16, image=ImageEncoderConfig(widths=(8, 16)))


# --- lesson 06: the hand-written loop is train.train --------------------------------------------

@pytest.mark.parametrize("precision", ["auto", "float32", "bfloat16"])
def test_hand_loop_takes_the_same_steps_as_train(tok, tiny_world, precision):
    tokens = tok(tiny_world.captions)
    cfg = train.TrainConfig(steps=5, batch_size=16, device="cpu", precision=precision)  # step 5: a new epoch
    dtype = train.resolve_precision(cfg.precision, torch.device("cpu"))
    hand = small_model(tok).train()
    optimizer = torch.optim.AdamW(train.parameter_groups(hand, cfg.weight_decay), lr=cfg.lr, fused=True)
    order = torch.Generator().manual_seed(cfg.seed)
    n_batches = len(tiny_world) // cfg.batch_size
    losses = []
    for step in range(cfg.steps):
        if step % n_batches == 0:
            perm = torch.randperm(len(tiny_world), generator=order)
        b = step % n_batches
        idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * (step + 1) / cfg.warmup_steps
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            image_features, text_features, tau = hand(data.to_float(tiny_world.images[idx]), tokens[idx])
        batch_loss = loss.clip_loss(image_features, text_features, tau)
        optimizer.zero_grad()
        batch_loss.backward()
        optimizer.step()
        hand.temperature.clamp_()
        losses.append(batch_loss.item())

    package, history = train.train(small_model(tok), tiny_world.images, tokens, cfg, progress=False)
    assert torch.allclose(torch.tensor(losses), torch.tensor(history.loss), atol=1e-5)
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(hand.parameters(), package.parameters()))


# --- lesson 07: logit_scale, the clamp, no weight decay ------------------------------------------

def test_logit_scale_by_hand_is_the_package(tok):
    by_hand = torch.nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
    learnable = temperature.LearnableTemperature()
    assert torch.allclose(by_hand, learnable.logit_scale)
    assert torch.allclose(by_hand, small_model(tok).logit_scale)
    assert torch.allclose(by_hand.exp().reciprocal(), learnable.temperature)
    assert by_hand.item() == pytest.approx(2.66, abs=0.005) and by_hand.exp().item() == pytest.approx(14.3, abs=0.05)


@pytest.mark.parametrize("value", [5.3, 2.66, -0.4])
def test_clamp_by_hand_is_clamp_(value):
    learnable = temperature.LearnableTemperature()
    by_hand = torch.nn.Parameter(torch.zeros([]))
    with torch.no_grad():
        learnable.logit_scale.fill_(value)
        by_hand.fill_(value)
        by_hand.clamp_(0.0, math.log(100))
    learnable.clamp_()
    assert torch.allclose(by_hand, learnable.logit_scale)
    assert 0.01 - 1e-7 <= learnable.temperature.item() <= 1.0 + 1e-7


def test_logit_scale_is_in_the_no_decay_group(tok):
    m = small_model(tok)
    decay, no_decay = train.parameter_groups(m, weight_decay=0.05)
    assert any(p is m.logit_scale for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert not any(p is m.logit_scale for p in decay["params"])


def test_adamw_decay_alone_is_the_closed_form():
    lr, wd, steps = 2e-3, 0.05, train.TrainConfig().steps      # lesson 07: the default run
    s = torch.nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
    optimizer = torch.optim.AdamW([s], lr=lr, weight_decay=wd)
    for _ in range(steps):
        s.grad = torch.zeros_like(s)
        optimizer.step()
    assert s.item() == pytest.approx(math.log(1 / 0.07) * (1 - lr * wd) ** steps, rel=1e-4)
    assert math.exp(-s.item()) > 0.08                          # τ drifts up with no gradient at all


# --- lesson 08: zero-shot, prompt ensembling, hard negatives by hand -----------------------------

@pytest.fixture(scope="module")
def zero_shot_setup():
    tok = text.Tokenizer.for_shapesworld()
    m = small_model(tok, seed=1)
    held = data.ShapesWorld.generate(96, split="heldout", seed=1, two_object_prob=0.0)
    names = [data.combo_name(c) for c in range(data.NUM_COMBOS)]
    return tok, m, held, names, evaluate.embed_images(m, held.images)


def test_zero_shot_by_hand_is_the_package(zero_shot_setup):
    tok, m, held, names, img = zero_shot_setup
    prompts = [data.fix_articles(f"a {n}") for n in names]
    assert prompts == data.class_prompts()
    prompt_features = evaluate.embed_texts(m, tok(prompts))
    classes = evaluate.zero_shot_classifier(m, tok, names)
    assert torch.allclose(classes, prompt_features, atol=1e-6)
    acc_by_hand = ((img @ prompt_features.T).argmax(dim=1) == held.labels).float().mean().item()
    # the two class embeddings agree to atol 1e-6, not bit for bit: a near-tie may flip one picture
    assert math.isclose(acc_by_hand, evaluate.zero_shot_accuracy(img, classes, held.labels), abs_tol=1 / len(held))


def test_prompt_ensemble_by_hand_is_the_package(zero_shot_setup):
    tok, m, _, names, _ = zero_shot_setup
    templates = ["a {}", "a picture of a {}", "there is a small {}", "a {} in the centre"]
    per_template = torch.stack([evaluate.embed_texts(m, tok([data.fix_articles(t.format(n)) for n in names]))
                                for t in templates], dim=1)                       # (48, K, D)
    by_hand = F.normalize(per_template.mean(dim=1), dim=-1)
    assert torch.allclose(by_hand, evaluate.zero_shot_classifier(m, tok, names, templates=templates), atol=1e-6)
    assert lesson08.check_prompt_ensemble(lambda x: F.normalize(x.mean(dim=1), dim=-1)).passed


ACCEPTED_ENSEMBLES = {
    "torch": lambda x: F.normalize(x.mean(dim=1), dim=-1),
    "numpy": lambda x: (lambda m: m / np.linalg.norm(m, axis=-1, keepdims=True))(x.numpy().mean(1)),
    "float64": lambda x: F.normalize(x.double().mean(dim=1), dim=-1),
}


@pytest.mark.parametrize("variant", list(ACCEPTED_ENSEMBLES))
def test_lesson08_compares_every_answer_its_checker_accepts(variant, capsys):
    # the cell after the exercise must not crash on an answer the checker calls correct (numpy, float64)
    answer = ACCEPTED_ENSEMBLES[variant]
    assert lesson08.check_prompt_ensemble(answer).passed
    [cell] = [c for c in _code_cells("08") if "same classifier as the package" in c]
    per_template = F.normalize(torch.randn(48, 7, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    ensemble_classes = F.normalize(per_template.mean(dim=1), dim=-1)
    exec(cell, {"answer": answer, "per_template": per_template, "ensemble_classes": ensemble_classes,
                "exercises": exercises, "torch": torch})
    assert capsys.readouterr().out == "same classifier as the package: True\n"


TRAINED_CLAIMS = re.compile(r"claims\.c[1456]_\w+\(")        # C1, C4-C6: measured on trained models


@pytest.mark.parametrize("lesson", ["06", "07"])                 # the lessons that compute C1, C4-C6
def test_lessons_print_the_trained_verdicts_and_never_assert_them(lesson):
    # a verdict near its bar can come out "unclear" on another computer: the lesson must print it, not crash
    cells = [src for src in _code_cells(lesson) if TRAINED_CLAIMS.search(src)]
    assert cells, f"lesson {lesson} computes no trained verdict (claims.c1_/c4_/c5_/c6_...): fix the parametrisation"
    for src in cells:
        assert "print(" in src, src
        asserts = [line for line in src.splitlines() if line.lstrip().startswith("assert")]
        assert not [a for a in asserts if re.search(r"claims\.(HOLDS|FAILS|UNCLEAR)|\.answer\b", a)], src


def test_lesson08_only_reads_the_recorded_verdicts():
    # lesson 08 computes no verdict: it prints the table of those lessons 04-07 recorded, and may require only
    # the mechanism claims (C2, C3), which hold by arithmetic on every computer, never a trained one's answer
    cells = _code_cells("08")
    assert not [src for src in cells if re.search(r"claims\.c\d_\w+\(", src)]
    [table] = [src for src in cells if "claims.recorded()" in src]
    assert "print(claims.table(" in table
    assert not re.search(r"C[1456]", table), table


def test_hard_negative_captions_by_hand(zero_shot_setup):
    _, _, held, _, _ = zero_shot_setup
    negative = data.hard_negative(held.scenes, generator=torch.Generator().manual_seed(0))
    by_hand = data.describe(negative, template=0)
    assert by_hand == data.hard_negative_captions(held.scenes, generator=torch.Generator().manual_seed(0))
    changed = (negative[:, 0, [data.COLOR, data.SHAPE]] != held.scenes[:, 0, [data.COLOR, data.SHAPE]]).sum(dim=1)
    assert (changed == 1).all()                                    # exactly one attribute swapped


# --- the exercise checkers ------------------------------------------------------------------------

def _step(model_, optimizer, images, tokens, *, tau=None, zero=True, backward=True, step=True, clamp=True,
          zero_late=False):
    image_features, text_features, t = model_(images, tokens)
    batch_loss = loss.clip_loss(image_features, text_features, t if tau is None else tau(t))
    if zero:
        optimizer.zero_grad()
    if backward:
        batch_loss.backward()
    if zero_late:
        optimizer.zero_grad(set_to_none=False)
    if step:
        optimizer.step()
    if clamp:
        model_.temperature.clamp_()
    return batch_loss.item()


LESSON06_MISTAKES = {
    "ignores the temperature": dict(tau=lambda t: 1.0),
    "multiplied by τ": dict(tau=lambda t: 1 / t),
    "no gradient reached": dict(backward=False),
    "although gradients were computed": dict(step=False),
    "gradients were zero": dict(zero_late=True),
    "above ln 100": dict(clamp=False),
    "still there": dict(zero=False),
}


def test_lesson06_checker():
    assert lesson06.check_training_step(None).passed is None
    assert "Not attempted" in str(lesson06.check_training_step(None))
    assert lesson06.check_training_step(lesson06.reference_step).passed
    assert lesson06.check_training_step(_step).passed
    assert not lesson06.check_training_step(42).passed
    assert "returned NoneType" in lesson06.check_training_step(lambda *a: None).message
    assert "raised ZeroDivisionError" in lesson06.check_training_step(lambda *a: 1 / 0).message


@pytest.mark.parametrize("diagnosis", list(LESSON06_MISTAKES))
def test_lesson06_checker_diagnoses(diagnosis):
    kwargs = LESSON06_MISTAKES[diagnosis]
    feedback = lesson06.check_training_step(lambda *a: _step(*a, **kwargs))
    assert feedback.passed is False
    assert diagnosis in feedback.message


def test_lesson06_checker_sees_a_tau_rebuilt_as_a_float():
    # τ rebuilt from logit_scale as a Python float: cut off from the gradient like tau.item(), and rounded
    # a little differently, so the weights drift too; the diagnosis is τ, not a missing zero_grad
    def step(model_, optimizer, images, tokens):
        return _step(model_, optimizer, images, tokens, tau=lambda t: 1 / model_.logit_scale.exp().item())
    feedback = lesson06.check_training_step(step)
    assert feedback.passed is False
    assert "τ does not learn" in feedback.message, str(feedback)


@pytest.mark.parametrize("answer, expected", [
    (None, None), (math.exp(-3), True), (torch.tensor(math.exp(-3)), True),
    (3.0, "raw logit_scale"), (math.exp(3), "multiplier"), (1 / 3, "1/logit_scale"),
    (math.log(3), "takes a logarithm"), (-0.2, "must be positive"), (0.3, "is not the τ"), ("0.05", "a number"),
    (np.float32(math.exp(-3)), True), (0.05, "too few digits"), (True, "a number")])
def test_lesson07_temperature_checker(answer, expected):
    feedback = lesson07.check_temperature_from_logit_scale(answer)
    if expected in (None, True):
        assert feedback.passed is expected
    else:
        assert feedback.passed is False and expected in feedback.message


@pytest.mark.parametrize("answer, expected", [
    (None, None), ((0.0, math.log(100)), True), ([0, math.log(100)], True),
    ((math.log(100), 0.0), "wrong order"), ((0.01, 1.0), "bounds on τ itself"), ((1.0, 0.01), "bounds on τ itself"),
    ((1, 100), "multiplier"), ((-math.log(100), 0.0), "log τ"), ((0, 2.0), "ln, not log10"),
    ((0, 1), "not the range"), (5, "a pair"), (np.array([0.0, math.log(100)], dtype=np.float32), True),
    ((0, 4.55), "too few digits")])
def test_lesson07_bounds_checker(answer, expected):
    feedback = lesson07.check_logit_scale_bounds(answer)
    if expected in (None, True):
        assert feedback.passed is expected
    else:
        assert feedback.passed is False and expected in feedback.message


@pytest.mark.parametrize("answer, expected", [
    (None, None),
    (lambda x: F.normalize(x.mean(dim=1), dim=-1), True),
    (lambda x: F.normalize(x.sum(dim=1), dim=-1), True),                  # the same direction: right
    (lambda x: x.mean(dim=0), "over the classes"),
    (lambda x: x.mean(dim=2), "over the feature dimension"),
    (lambda x: x[:, 0], "first template"),
    (lambda x: x.mean(dim=1), "not unit length"),
    (lambda x: F.normalize(x.mean(dim=1), dim=0), "columns"),
    (lambda x: x.max(dim=1).values, "not the normalised mean"),
    (lambda x: 1 / 0, "raised ZeroDivisionError"),
    ("ensemble", "expected a function")])
def test_lesson08_checker(answer, expected):
    feedback = lesson08.check_prompt_ensemble(answer)
    if expected in (None, True):
        assert feedback.passed is expected
    else:
        assert feedback.passed is False and expected in feedback.message


def test_lesson08_checker_names_a_norm_without_keepdim():
    # (C, D) / (C,) broadcasts against the wrong axis: torch's "must match the size" alone does not say why
    feedback = lesson08.check_prompt_ensemble(lambda x: x.mean(dim=1) / x.mean(dim=1).norm(dim=-1))
    assert feedback.passed is False and "keepdim=True" in feedback.hint, feedback.hint


# --- the figures lessons 06-08 added to plots.py --------------------------------------------------

def test_lesson_figures_draw():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from clipcourse import plots

    world = data.ShapesWorld.generate(6, seed=0, two_object_prob=0.0)
    figures = [
        plots.temperature_trajectories({"a": [0.07, 0.06, 0.05]}, reference={"best": 0.1}),
        plots.metrics_vs_temperature([0.01, 0.1, 1.0], {"m": ([1, 2, 3], [0.1, 0.1, 0.1])}, learnable={"m": (2, 0.2)}),
        plots.per_class_accuracy(["a", "b"], [0.2, 0.9], chance=0.5),
        plots.confusion_matrix(torch.tensor([[3, 1], [0, 4]]), ["x", "y"]),
        plots.image_to_text_examples(world.images[:2], [["p", "q"], ["r", "s"]], torch.rand(2, 2),
                                     [[True, False], [False, True]]),
        plots.text_to_image_examples(["p", "q"], world.images[:4].view(2, 2, 3, 32, 32), torch.rand(2, 2),
                                     [[True, False], [False, True]]),
    ]
    for fig in figures:
        assert fig.axes
        fig.canvas.draw()
        plt.close(fig)
