"""The checkers diagnose by symptom: for each checker, a broad set of learner-style wrong answers, each
named by the diagnosis it must get; the right answers pass and None is "not attempted"."""

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipcourse import data
from clipcourse.exercises import lesson00, lesson01, lesson02, lesson03, lesson04, lesson05, lesson06, lesson07, lesson08
from clipcourse.loss import clip_loss
from clipcourse.text import Tokenizer

ce = F.cross_entropy


def _expect(feedback, phrase):
    assert feedback.passed is False, str(feedback)
    assert phrase in feedback.message, str(feedback)
    assert feedback.hint, str(feedback)


# --- lesson 04: check_clip_loss ---------------------------------------------------------------------

def _lg(i, t, tau):
    return i @ t.T / tau


def _lb(x):
    return torch.arange(len(x))


def good_loss(i, t, tau):
    lg = _lg(i, t, tau)
    return (ce(lg, _lb(lg)) + ce(lg.T, _lb(lg))) / 2


def nll_on_probabilities(i, t, tau):
    lg = _lg(i, t, tau)
    return (F.nll_loss(lg.softmax(-1), _lb(lg)) + F.nll_loss(lg.T.softmax(-1), _lb(lg))) / 2


def nll_on_probabilities_one_direction(i, t, tau):
    lg = _lg(i, t, tau)
    return F.nll_loss(lg.softmax(-1), _lb(lg))


def nll_on_logits_one_direction(i, t, tau):
    lg = _lg(i, t, tau)
    return F.nll_loss(lg, _lb(lg))


def missing_minus(i, t, tau):
    lg = _lg(i, t, tau)
    return (lg.log_softmax(-1).diag().mean() + lg.log_softmax(0).diag().mean()) / 2


def normalised_dim0(i, t, tau):
    return good_loss(F.normalize(i, dim=0), F.normalize(t, dim=0), tau)


def normalised_dim0_image_only(i, t, tau):
    return good_loss(F.normalize(i, dim=0), t, tau)


def diagonal_only(i, t, tau):
    return (1 - (i * t).sum(-1)).mean() / tau


def diagonal_only_exp(i, t, tau):
    return torch.exp(-_lg(i, t, tau).diag()).mean()


def one_direction_without_tau(i, t, tau):
    s = i @ t.T
    return ce(s, _lb(s))


def returns_float(i, t, tau):
    return good_loss(i, t, tau).item()


def log_of_similarities(i, t, tau):
    s = i @ t.T / tau
    p = s / s.sum(1, keepdim=True)                    # "probabilities" that can be negative
    return -(p.diag().log().mean() + p.T.diag().log().mean()) / 2


def per_example(i, t, tau):
    lg = _lg(i, t, tau)
    return (ce(lg, _lb(lg), reduction="none") + ce(lg.T, _lb(lg), reduction="none")) / 2


def detached(i, t, tau):
    return good_loss(i, t, tau).detach()


def unequal_weights(i, t, tau):
    lg = _lg(i, t, tau)
    return 0.7 * ce(lg, _lb(lg)) + 0.3 * ce(lg.T, _lb(lg))


def zero_labels_one_direction(i, t, tau):
    lg = _lg(i, t, tau)
    return ce(lg, torch.zeros(len(lg), dtype=torch.long))


def log_base_2(i, t, tau):
    lg = _lg(i, t, tau)
    return -(lg.softmax(-1).diag().log2().mean() + lg.softmax(0).diag().log2().mean()) / 2


def naive_softmax(i, t, tau):
    e = _lg(i, t, tau).exp()                          # no max subtraction: exp(100) overflows
    return -((e.diag() / e.sum(1)).log().mean() + (e.diag() / e.sum(0)).log().mean()) / 2


def log_with_eps(i, t, tau):
    lg = _lg(i, t, tau)
    return -((lg.softmax(1).diag() + 1e-8).log().mean() + (lg.softmax(0).diag() + 1e-8).log().mean()) / 2


def temperature_as_float(i, t, tau):
    return good_loss(i, t, tau.item() if isinstance(tau, torch.Tensor) else float(tau))


def normalises_in_place(i, t, tau):
    t /= t.norm(dim=-1, keepdim=True)
    return good_loss(i, t, tau)


def modifies_under_no_grad(i, t, tau):
    with torch.no_grad():
        t.mul_(2)
    return good_loss(i, t, tau)


def batch_size_hard_coded(i, t, tau):
    lg = _lg(i, t, tau)
    labels = torch.arange(8)
    return (ce(lg, labels) + ce(lg.T, labels)) / 2


def no_transpose(i, t, tau):
    lg = i @ t / tau
    return (ce(lg, _lb(lg)) + ce(lg.T, _lb(lg))) / 2


def ignores_the_pairing(i, t, tau):
    lg = _lg(i, t, tau)
    return (torch.logsumexp(lg, 1).mean() + torch.logsumexp(lg, 0).mean()) / 2


def returns_tuple(i, t, tau):
    lg = _lg(i, t, tau)
    return ce(lg, _lb(lg)), ce(lg.T, _lb(lg))


def returns_both_directions(i, t, tau):
    lg = _lg(i, t, tau)
    return torch.stack([ce(lg, _lb(lg)), ce(lg.T, _lb(lg))])


def returns_logits(i, t, tau):
    return _lg(i, t, tau)


def returns_integer(i, t, tau):
    lg = _lg(i, t, tau)
    return (lg.argmax(1) != _lb(lg)).sum()


def detaches_text(i, t, tau):
    return good_loss(i, t.detach(), tau)


def detached_normaliser(i, t, tau):
    lg = _lg(i, t, tau)
    d = lg.diag()
    return ((torch.logsumexp(lg.detach(), 1) - d).mean() + (torch.logsumexp(lg.detach(), 0) - d).mean()) / 2


def tau_squared(i, t, tau):
    return good_loss(i, t, tau ** 2)


def softmax_dim0_both(i, t, tau):                      # the two directions' softmax over the same axis
    lg = _lg(i, t, tau)
    return -(lg.log_softmax(0).diag().mean() + lg.T.log_softmax(1).diag().mean()) / 2


LOSS_MISTAKES = [
    (nll_on_probabilities, "F.nll_loss"),
    (nll_on_probabilities_one_direction, "negative"),
    (nll_on_logits_one_direction, "F.nll_loss"),
    (missing_minus, "negative"),
    (normalised_dim0, "wrong dimension"),
    (normalised_dim0_image_only, "wrong dimension"),
    (diagonal_only, "only the diagonal"),
    (diagonal_only_exp, "only the diagonal"),
    (one_direction_without_tau, "does not change when τ changes"),
    (returns_float, "not a tensor"),
    (log_of_similarities, "NaN"),
    (per_example, "shape (8,)"),
    (detached, "no gradient"),
    (unequal_weights, "symmetric"),
    (zero_labels_one_direction, "shuffled together"),
    (log_base_2, "base 2"),
    (naive_softmax, "overflows"),
    (log_with_eps, "caps"),
    (temperature_as_float, "no gradient reaches the temperature"),
    (normalises_in_place, "in place"),
    (modifies_under_no_grad, "in place"),
    (batch_size_hard_coded, "with B = 5"),
    (no_transpose, "transpose"),
    (ignores_the_pairing, "captions are shuffled"),
    (returns_tuple, "tuple"),
    (returns_both_directions, "two directions"),
    (returns_logits, "(B, B) matrix"),
    (returns_integer, "integer"),
    (detaches_text, "no gradient reaches the text features"),
    (detached_normaliser, "gradient is not"),
    (tau_squared, "τ twice"),
    (softmax_dim0_both, "only one direction"),
]


def test_clip_loss_right_answers_pass_and_none_is_not_attempted():
    assert lesson04.check_clip_loss(None).passed is None
    assert lesson04.check_clip_loss(lambda i, t, tau: None).passed is None
    assert lesson04.check_clip_loss(good_loss).passed is True
    assert lesson04.check_clip_loss(clip_loss).passed is True

    def renormalises(i, t, tau):                       # normalising again along dim=-1 is harmless
        return good_loss(F.normalize(i, dim=-1), F.normalize(t, dim=-1), tau)

    def logsumexp_by_hand(i, t, tau):
        lg = _lg(i, t, tau)
        d = lg.diag()
        return ((torch.logsumexp(lg, 1) - d).mean() + (torch.logsumexp(lg, 0) - d).mean()) / 2

    assert lesson04.check_clip_loss(renormalises).passed is True
    assert lesson04.check_clip_loss(logsumexp_by_hand).passed is True


@pytest.mark.parametrize("fn, phrase", LOSS_MISTAKES, ids=[fn.__name__ for fn, _ in LOSS_MISTAKES])
def test_clip_loss_symptoms(fn, phrase):
    start = time.perf_counter()
    _expect(lesson04.check_clip_loss(fn), phrase)
    assert time.perf_counter() - start < 2.0           # < 0.2 s on an idle laptop; generous on a shared CI


# --- lesson 00: check_cosine_similarity -------------------------------------------------------------

A, B = torch.tensor(lesson00.A), torch.tensor(lesson00.B)
COS = (A @ B / (A.norm() * B.norm())).item()


@pytest.mark.parametrize("answer, phrase", [
    ("0.95", "string"), ([0.9, 0.1], "single number"), (float("nan"), "division by zero"),
    (-COS, "sign is flipped"), (COS ** 2, "squared"), (20 / 10, "sum of the lengths"),
    (20 / (9 + 49), "sum of the squared lengths"), (1 / COS, "upside down"), (0, "whole number"), (1, "whole number"),
    (torch.tensor([1, 2]), "single number"), (A * B, "single number"), (3.0, "outside [-1, 1]"),
])
def test_cosine_symptoms(answer, phrase):
    _expect(lesson00.check_cosine_similarity(answer), phrase)


def test_cosine_right_and_not_attempted():
    assert lesson00.check_cosine_similarity(None).passed is None
    assert lesson00.check_cosine_similarity(COS).passed and lesson00.check_cosine_similarity(torch.tensor(COS)).passed
    assert lesson00.check_cosine_similarity(np.float32(COS)).passed               # numpy's scalars are numbers too


# --- lesson 01: check_similarity_matrix -------------------------------------------------------------

_g = torch.Generator().manual_seed(1)
IMG, TXT = torch.randn(6, 4, generator=_g) * 3, torch.randn(6, 4, generator=_g) * 3
NI, NT = F.normalize(IMG, dim=-1), F.normalize(TXT, dim=-1)
SIM = NI @ NT.T


@pytest.mark.parametrize("answer, phrase", [
    ((SIM > 0).long(), "int64"), (SIM > 0, "bool"), ((IMG / torch.zeros(6, 1)) @ NT.T, "NaN"),
    (SIM / 0.07, "times 14.29"), (F.normalize(IMG, p=1, dim=-1) @ NT.T, "image features are not unit length"),
    (NI @ (TXT / 2).T, "text features are not unit length"), ((SIM / 0.07).softmax(-1), "row sums to 1"),
    (SIM.softmax(0), "column sums to 1"), (1 - SIM, "distance"), (torch.cdist(NI, NT), "Euclidean"),
    (-SIM, "sign is flipped"), (NI @ NI.T, "images against images"), (NT @ NT.T, "captions against captions"),
    (SIM.round(decimals=1), "rounded"), (SIM.T, "transposed"), (F.normalize(IMG, dim=0) @ F.normalize(TXT, dim=0).T,
                                                                "wrong dimension"),
])
def test_similarity_matrix_symptoms(answer, phrase):
    _expect(lesson01.check_similarity_matrix(answer, IMG, TXT), phrase)


def test_similarity_matrix_right_and_not_attempted():
    assert lesson01.check_similarity_matrix(None, IMG, TXT).passed is None
    assert lesson01.check_similarity_matrix(SIM, IMG, TXT).passed
    assert lesson01.check_similarity_matrix(SIM.float(), IMG, TXT).passed


def test_similarity_matrix_in_half_precision_is_called_low_precision_not_scaled():
    _expect(lesson01.check_similarity_matrix(SIM.half(), IMG, TXT), "low precision")


# --- lesson 02: check_heldout_combos and check_caption ---------------------------------------------

def _heldout_cases():
    held = data.heldout_combos()
    mask = torch.zeros(data.NUM_COMBOS, dtype=torch.bool)
    mask[held] = True
    counts = torch.arange(data.NUM_COMBOS) % 5 + 1
    counts[held] = 0
    names = [data.combo_name(k) for k in held]
    return [
        (mask, "mask"), (counts, "counts"), (counts.tolist(), "counts"),
        (torch.tensor([[k // len(data.SHAPES), k % len(data.SHAPES)] for k in held]), "pairs"),
        ([(k // len(data.SHAPES), k % len(data.SHAPES)) for k in held], "pair"),
        ([k + 1 for k in held], "one too large"), ([], "empty"), (", ".join(names), "one string"),
        ({k: 0 for k in held}, "dict"), ([" ".join(n.split()[::-1]) for n in names], "colour comes first"),
        ([n + "s" for n in names], "singular"), (torch.tensor(held) + 0.5, "fractions"),
    ]


@pytest.mark.parametrize("case", range(12))
def test_heldout_symptoms(case):
    answer, phrase = _heldout_cases()[case]
    _expect(lesson02.check_heldout_combos(answer), phrase)


def test_heldout_right_and_not_attempted():
    held = data.heldout_combos()
    assert lesson02.check_heldout_combos(None).passed is None
    assert lesson02.check_heldout_combos(held).passed
    assert lesson02.check_heldout_combos(torch.tensor(held).float()).passed       # 17.0 is the id 17
    assert lesson02.check_heldout_combos(list(torch.tensor(held))).passed          # 0-d tensors, from list(tensor)
    assert lesson02.check_heldout_combos(np.array(held)).passed                    # numpy's integers
    assert lesson02.check_heldout_combos(list(np.array(held))).passed
    mask = torch.zeros(data.NUM_COMBOS, dtype=torch.bool)
    mask[held] = True
    assert lesson02.check_heldout_combos(torch.where(mask)).passed                 # a tuple of one index tensor
    assert lesson02.check_heldout_combos(np.nonzero(mask.numpy())).passed
    assert lesson02.check_heldout_combos(mask.nonzero().tolist()).passed          # one-item rows, no flatten


def test_caption_with_a_comma_passes():
    assert lesson02.check_caption("a small, purple triangle at the top", SCENE).passed


SCENE = torch.tensor([[4, 2, 0, 2, 1], [0, 0, 0, 0, 0]])      # a small purple triangle at the top


@pytest.mark.parametrize("answer, phrase", [
    (["a", "purple", "triangle"], "list of words"), (torch.tensor([1, 2]), "tensor"), ("   ", "empty"),
    ("a 4 2", "digits"), (42, "expected a string"), ("a purple triangle triangle square", "several shapes"),
    ("a purple triangle and a triangle", "two objects"), ("a purple triangle left of a red circle", "two objects"),
    ("a purple triangle triangle", "a shape twice"),
])
def test_caption_symptoms(answer, phrase):
    _expect(lesson02.check_caption(answer, SCENE), phrase)


# --- lesson 03: check_eot_positions -----------------------------------------------------------------

TOK = Tokenizer.for_shapesworld()
TOKENS = TOK(["a red circle", "there is a large blue ring", "a cyan cross left of a white square",
              "a small green diamond at the bottom"])
EOT = (TOKENS == TOK.eot_id).int().argmax(dim=1)


@pytest.mark.parametrize("answer, phrase", [
    (EOT[:, None], "extra dimension"), (EOT > 2, "booleans"), (EOT - 20, "negative"), (EOT + 20, "does not exist"),
    (torch.zeros(4, dtype=torch.long), "<sot>"), (torch.full((4,), 5), "same position"), ([[1, 2], [3]], "not one list"),
    (EOT.float() + 0.5, "whole numbers"), (EOT + 1, "<pad>"), (TOKENS == TOK.eot_id, "mask"),
])
def test_eot_symptoms(answer, phrase):
    _expect(lesson03.check_eot_positions(answer, TOKENS), phrase)


def test_eot_right_and_not_attempted():
    assert lesson03.check_eot_positions(None, TOKENS).passed is None
    assert lesson03.check_eot_positions(EOT.numpy(), TOKENS).passed
    typed = lesson03.check_eot_positions(EOT.tolist(), TOKENS)       # right, but counted: a nudge
    assert typed.passed and "tensor operations" in typed.message
    assert "tensor operations" not in lesson03.check_eot_positions(EOT, TOKENS).message
    assert lesson03.check_eot_positions(EOT.float(), TOKENS).passed


# --- lesson 05: check_effective_negatives and check_gradient_weights -------------------------------

S = lesson05.exercise_similarities()
WANT = lesson05.reference_effective_negatives()
P = torch.softmax(S / lesson05.TAU_EFFECTIVE, dim=-1)
H = -(P * P.log()).sum(-1)
GRAD = lesson05.reference_gradient()
P0 = torch.softmax(S[0] / lesson05.TAU_GRADIENT, dim=-1)
ONE = F.one_hot(torch.tensor(0), 8).double()


@pytest.mark.parametrize("answer, phrase", [
    (WANT - 1, "took the positive away"), (1 / (P ** 2).sum(-1), "participation"), (WANT.flip(0), "wrong order"),
    (WANT.sort().values, "wrong order"), (torch.full((8,), 8.0), "uniform"), (torch.ones(8), "every row is at 1"),
    (H * 0.9, "below 1"), (WANT * 1.5, "times 1.5"), (-H, "below 1"), (WANT[:4], "shape"),
    (torch.full((8,), float("inf")), "NaN or infinity"), (WANT + 9, "above 8"),
])
def test_effective_negatives_symptoms(answer, phrase):
    _expect(lesson05.check_effective_negatives(answer), phrase)


@pytest.mark.parametrize("answer, phrase", [
    (GRAD / lesson05.TAU_GRADIENT, "τ twice"), (GRAD / 8, "divided by B"), (GRAD / 2, "half"), (GRAD * 3, "times 3"),
    (GRAD.flip(0), "wrong order"), ((P0 - ONE) / lesson05.TAU_GRADIENT + 0.1, "sum to"),
    ((P0 - 2 * ONE) / lesson05.TAU_GRADIENT, "sum to"),
    ((torch.softmax(S[:, 0] / lesson05.TAU_GRADIENT, 0) - ONE) / lesson05.TAU_GRADIENT, "column 0"),
    (torch.zeros(8), "every entry is 0"), (-GRAD, "sign is flipped"), (GRAD[None], "shape"),
])
def test_gradient_weights_symptoms(answer, phrase):
    _expect(lesson05.check_gradient_weights(answer), phrase)


def test_gradient_of_the_whole_loss_is_named():
    s = S.clone().requires_grad_(True)
    lg = s / lesson05.TAU_GRADIENT
    ((ce(lg, torch.arange(8)) + ce(lg.T, torch.arange(8))) / 2).backward()
    _expect(lesson05.check_gradient_weights(s.grad[0]), "whole CLIP loss")


# --- lesson 06: check_training_step -----------------------------------------------------------------

def _step(model, optimizer, images, tokens, mode="good"):
    i, t, tau = model(images, tokens)
    if mode == "fixed τ":
        tau = 0.07
    if mode == "logit_scale as τ":
        tau = model.logit_scale
    if mode == "τ detached":
        tau = tau.detach()
    loss = clip_loss(i, t, tau)
    optimizer.zero_grad()
    if mode == "backward on a number":
        torch.tensor(loss.item()).backward()
    loss.backward()
    if mode == "backward twice":
        loss.backward()
    if mode == "clamp first":
        model.temperature.clamp_()
    optimizer.step()
    if mode == "step twice":
        optimizer.step()
    if mode == "clamp into τ's range":
        with torch.no_grad():
            model.logit_scale.clamp_(0.01, 1)
    elif mode != "clamp first":
        model.temperature.clamp_()
    if mode == "eval":
        model.eval()
    if mode == "loss after the step":
        return clip_loss(*model(images, tokens)).item()
    if mode == "nan":
        return float("nan")
    return loss.item()


def _own_optimizer(model, optimizer, images, tokens):
    mine = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = clip_loss(*model(images, tokens))
    mine.zero_grad()
    loss.backward()
    mine.step()
    model.temperature.clamp_()
    return loss.item()


@pytest.mark.parametrize("mode, phrase", [
    ("fixed τ", "fixed τ = 0.07"), ("logit_scale as τ", "logit_scale = log(1/τ) as its temperature"),
    ("backward on a number", "cut off from the model"), ("backward twice", "backward ran twice"),
    ("clamp first", "before"), ("step twice", "stepped 2 times"), ("clamp into τ's range", "τ's range"),
    ("eval", "evaluation mode"), ("loss after the step", "after the step"), ("nan", "nan"),
    ("own optimizer", "own optimiser"),
    ("τ detached", "τ does not learn"),      # was told to call zero_grad: the clamp hid τ at step 1
])
def test_training_step_symptoms(mode, phrase):
    fn = _own_optimizer if mode == "own optimizer" else (lambda *a: _step(*a, mode=mode))
    _expect(lesson06.check_training_step(fn), phrase)


def _autocast_step(model, optimizer, images, tokens):
    """Lesson 06's own loop body, copied with its autocast line, on a bfloat16 machine."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image_features, text_features, tau = model(images, tokens)
    loss = clip_loss(image_features, text_features, tau)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model.temperature.clamp_()
    return loss.item()


def test_training_step_copied_with_the_lessons_autocast_is_named():
    _expect(lesson06.check_training_step(_autocast_step), "bfloat16 forward pass")


def test_training_step_right_and_not_attempted():
    assert lesson06.check_training_step(None).passed is None
    assert lesson06.check_training_step(_step).passed


# --- lesson 07: check_temperature_from_logit_scale and check_logit_scale_bounds -------------------

@pytest.mark.parametrize("answer, phrase", [
    (10 ** -3, "10^-3"), (2 ** -3, "2^-3"), (math.exp(-1 / 3), "exp(-1/logit_scale)"), (0.07, "starts"),
    (-3.0, "log τ"), (5.0, "above 1"), (float("inf"), "not a finite"), ("0.05", "string"), ([0.05], "a number"),
    (3.0, "raw logit_scale"), (math.exp(3), "multiplier"),
    (0.05, "too few digits"),          # exp(-3) = 0.0498 to one figure: was told "not the τ"
])
def test_temperature_symptoms(answer, phrase):
    _expect(lesson07.check_temperature_from_logit_scale(answer), phrase)


@pytest.mark.parametrize("answer, phrase", [
    ({0: 1}, "dict"), ((0, 1, 2), "3 values"), ((0, float("-inf")), "finite"), ((0, 100), "mixes units"),
    ((0, math.log(1 / 0.07)), "starts"), ((3, 1), "wrong order"), ((0, 3), "low bound is right"),
    ((1, math.log(100)), "high bound is right"), ((0.01, 1.0), "bounds on τ itself"), (5, "a pair"),
])
def test_bounds_symptoms(answer, phrase):
    _expect(lesson07.check_logit_scale_bounds(answer), phrase)


def test_lesson07_right_and_not_attempted():
    assert lesson07.check_temperature_from_logit_scale(None).passed is None
    assert lesson07.check_temperature_from_logit_scale(math.exp(-3)).passed
    assert lesson07.check_logit_scale_bounds(None).passed is None
    assert lesson07.check_logit_scale_bounds((0, math.log(100))).passed


# --- lesson 08: check_prompt_ensemble ---------------------------------------------------------------

def _in_place(x):
    x /= 2
    return F.normalize(x.mean(1), dim=-1)


@pytest.mark.parametrize("answer, phrase", [
    (lambda x: x.mean(1, keepdim=True), "keepdim"), (lambda x: F.normalize(x.mean(1), dim=-1).T, "transposed"),
    (lambda x: x, "nothing was averaged"), (lambda x: x / 0, "NaN"), (lambda x: -F.normalize(x.mean(1), dim=-1), "sign"),
    (lambda x: 2 * F.normalize(x.mean(1), dim=-1), "not unit length"),
    (lambda x: F.normalize(x.mean(1), dim=-1).flip(0), "wrong order"),
    (lambda x: x.median(1).values, "not the normalised mean"), (_in_place, "in place"),
    (lambda x: F.normalize(x.reshape(5, 4, 8).mean(1), dim=-1), "a size is written"),
    (lambda x: None, "returned None"), (lambda x: (x.mean(1) > 0).long(), "integer"),
    (lambda x: x[:, 5], "raised IndexError"),
])
def test_prompt_ensemble_symptoms(answer, phrase):
    _expect(lesson08.check_prompt_ensemble(answer), phrase)


def test_prompt_ensemble_right_and_not_attempted():
    assert lesson08.check_prompt_ensemble(None).passed is None
    assert lesson08.check_prompt_ensemble(lambda x: F.normalize(x.mean(dim=1), dim=-1)).passed
    assert lesson08.check_prompt_ensemble(lambda x: F.normalize(x.mean(dim=1), dim=-1).tolist()).passed


def test_caption_right_and_not_attempted():
    assert lesson02.check_caption(None, SCENE).passed is None
    assert lesson02.check_caption("a small purple triangle at the top", SCENE).passed
    stop = lesson02.check_caption("A small purple triangle at the top.", SCENE)     # a sentence's full stop
    assert stop.passed and "full stop" in str(stop)
    assert lesson02.check_caption("a picture of a purple triangle", SCENE).passed   # 'of', but one object


@pytest.mark.parametrize("left, right, says, not_says", [
    ((8, 32), (8, 32), "one side needs a transpose", "must be equal"),
    ((8, 32), (16, 32), "(8, 32) with (16, 32): one side needs a transpose", "must be equal"),
    ((8, 32), (4, 16), "the inner sizes 32 and 4 must be equal", "transpose"),   # was: "(B, D) with (B, D) ... transpose"
])
def test_a_matrix_product_error_is_read_from_its_shapes(left, right, says, not_says):
    from clipcourse.exercises._symptoms import explain_exception
    try:
        torch.randn(*left) @ torch.randn(*right)
    except RuntimeError as err:
        feedback = explain_exception(err)
    assert feedback.passed is False and says in feedback.message and not_says not in feedback.message, feedback.message


@pytest.mark.parametrize("call", [lambda t: torch.exp(t), lambda t: torch.log(t), lambda t: t.exp()],
                         ids=["torch.exp", "torch.log", "method"])
def test_a_torch_function_on_the_float_temperature_is_explained(call):
    """The checkers pass τ as a Python float; torch.exp(τ) raises TypeError, τ.exp() AttributeError."""
    from clipcourse.exercises._symptoms import explain_exception
    try:
        call(0.07)
    except (TypeError, AttributeError) as err:
        feedback = explain_exception(err)
    assert feedback.passed is False and "plain Python number" in feedback.message, feedback.message


def test_lesson04_checker_explains_torch_exp_on_the_float_temperature():
    from clipcourse.exercises import lesson04

    def my_loss(image_features, text_features, temperature):
        logits = image_features @ text_features.T * torch.exp(temperature)
        labels = torch.arange(len(logits))
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    feedback = lesson04.check_clip_loss(my_loss)
    assert feedback.passed is False and "plain Python number" in feedback.message, feedback.message


def test_float_labels_are_explained():
    """torch 2.14 words it "expected target dtype to be Long or Byte, but got Float"."""
    from clipcourse.exercises._symptoms import explain_exception
    try:
        F.cross_entropy(torch.randn(4, 4), torch.arange(4).float())
    except RuntimeError as err:
        feedback = explain_exception(err)
    assert feedback.passed is False and "wrong dtype" in feedback.message, feedback.message
