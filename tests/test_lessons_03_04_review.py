"""Review fixes for lessons 03 and 04: lesson 04's loss checker names three more realistic mistakes (label
smoothing, a pairwise sigmoid / BCE loss, τ passed through exp) and still accepts every right formulation."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipcourse.exercises import lesson04
from clipcourse.loss import clip_loss

ce = F.cross_entropy


def _logits(i, t, tau):
    return i @ t.T / tau


def _both(lg, **kw):
    labels = torch.arange(len(lg))
    return (ce(lg, labels, **kw) + ce(lg.T, labels, **kw)) / 2


# --- right answers, in the forms learners write them --------------------------------------------------

def cross_entropy_on_logits(i, t, tau):
    return _both(_logits(i, t, tau))


def manual_log_softmax(i, t, tau):
    lg = _logits(i, t, tau)
    return -(lg.log_softmax(dim=1).diag().mean() + lg.log_softmax(dim=0).diag().mean()) / 2


def one_hot_probability_targets(i, t, tau):               # F.cross_entropy with a one-hot target matrix
    lg = _logits(i, t, tau)
    eye = torch.eye(len(lg))
    return (ce(lg, eye) + ce(lg.T, eye)) / 2


def directions_averaged_with_mean(i, t, tau):
    lg = _logits(i, t, tau)
    labels = torch.arange(len(lg))
    return torch.stack([ce(lg, labels), ce(lg.T, labels)]).mean()


def open_clip_style(i, t, tau):                           # logit_scale = 1 / τ, multiplied in
    logit_scale = 1 / tau
    return _both(logit_scale * i @ t.T)


RIGHT = [cross_entropy_on_logits, manual_log_softmax, one_hot_probability_targets, directions_averaged_with_mean,
         open_clip_style, clip_loss]


@pytest.mark.parametrize("fn", RIGHT, ids=[fn.__name__ for fn in RIGHT])
def test_lesson04_checker_still_accepts_right_answers(fn):
    fb = lesson04.check_clip_loss(fn)
    assert fb.passed is True, str(fb)


# --- label smoothing: the targets are not one-hot -------------------------------------------------------

def label_smoothing(i, t, tau):
    return _both(_logits(i, t, tau), label_smoothing=0.1)


def label_smoothing_strong(i, t, tau):
    return _both(_logits(i, t, tau), label_smoothing=0.3)


def smoothing_over_the_negatives(i, t, tau):             # 1 - ε on the positive, ε / (B - 1) on each negative
    lg = _logits(i, t, tau)
    n, eps = len(lg), 0.1
    target = torch.full((n, n), eps / (n - 1))
    target.fill_diagonal_(1 - eps)
    return -((target * lg.log_softmax(1)).sum(1).mean() + (target * lg.T.log_softmax(1)).sum(1).mean()) / 2


SMOOTHING = [label_smoothing, label_smoothing_strong, smoothing_over_the_negatives]


def _diagnosed(fn, says, hint):
    """The checker refuses fn, its message holds every phrase of `says` and its hint `hint`."""
    fb = lesson04.check_clip_loss(fn)
    assert fb.passed is False, str(fb)
    assert all(phrase in fb.message for phrase in says), str(fb)
    assert hint in fb.hint, str(fb)


@pytest.mark.parametrize("fn", SMOOTHING, ids=[fn.__name__ for fn in SMOOTHING])
def test_lesson04_checker_names_label_smoothing(fn):
    _diagnosed(fn, ("one-hot", "smoothing"), "label_smoothing")


def test_lesson04_checker_states_the_smoothing_it_found():
    assert "ε ≈ 0.3" in lesson04.check_clip_loss(label_smoothing_strong).message


# --- a pairwise sigmoid (binary cross-entropy) instead of a softmax over each row ------------------------

def bce_with_logits(i, t, tau):
    lg = _logits(i, t, tau)
    return F.binary_cross_entropy_with_logits(lg, torch.eye(len(lg)))


def bce_on_sigmoid(i, t, tau):
    lg = _logits(i, t, tau)
    return F.binary_cross_entropy(torch.sigmoid(lg), torch.eye(len(lg)))


def bce_both_directions(i, t, tau):
    lg, eye = _logits(i, t, tau), torch.eye(len(i))
    return (F.binary_cross_entropy_with_logits(lg, eye) + F.binary_cross_entropy_with_logits(lg.T, eye)) / 2


def siglip_style_sum_over_b(i, t, tau):                  # SigLIP's reduction: -Σ log σ(label · logit) / B
    lg = _logits(i, t, tau)
    labels = 2 * torch.eye(len(lg)) - 1
    return -F.logsigmoid(labels * lg).sum() / len(lg)


def bce_balanced(i, t, tau):                              # positives and negatives averaged apart
    terms = F.binary_cross_entropy_with_logits(_logits(i, t, tau), torch.eye(len(i)), reduction="none")
    eye = torch.eye(len(i), dtype=torch.bool)
    return terms[eye].mean() + terms[~eye].mean()


BCE = [bce_with_logits, bce_on_sigmoid, bce_both_directions, siglip_style_sum_over_b, bce_balanced]


@pytest.mark.parametrize("fn", BCE, ids=[fn.__name__ for fn in BCE])
def test_lesson04_checker_names_a_sigmoid_loss(fn):
    _diagnosed(fn, ("sigmoid", "softmax"), "F.cross_entropy")


# --- τ passed through exp, or multiplied in ----------------------------------------------------------------

def divides_by_exp_tau(i, t, tau):
    return _both(i @ t.T / torch.exp(torch.as_tensor(tau)))


def divides_by_math_exp_tau(i, t, tau):                 # a float τ only: fails on the tensor case, if reached
    return _both(i @ t.T / math.exp(tau))


def multiplies_by_exp_tau(i, t, tau):                   # open_clip's logit_scale.exp(), with τ as logit_scale
    return _both(torch.exp(torch.as_tensor(tau)) * i @ t.T)


def multiplies_by_tau_log_softmax(i, t, tau):
    lg = i @ t.T * tau
    return -(lg.log_softmax(1).diag().mean() + lg.log_softmax(0).diag().mean()) / 2


@pytest.mark.parametrize("fn", [divides_by_exp_tau, divides_by_math_exp_tau],
                         ids=["torch_exp", "math_exp"])
def test_lesson04_checker_names_division_by_exp_tau(fn):
    fb = lesson04.check_clip_loss(fn)
    assert fb.passed is False and "exp(τ)" in fb.message and "divided" in fb.message, str(fb)
    assert "exp" in fb.hint, str(fb)


def test_lesson04_checker_names_multiplication_by_exp_tau():
    fb = lesson04.check_clip_loss(multiplies_by_exp_tau)
    assert fb.passed is False and "exp(τ)" in fb.message and "logit_scale" in fb.message, str(fb)
    assert "exp" in fb.hint, str(fb)


def multiplies_by_exp_of_one_over_tau(i, t, tau):       # exp applied to the scale 1/τ instead of to log(1/τ)
    return _both(i @ t.T * math.exp(1 / tau))


def multiplies_by_log_of_one_over_tau(i, t, tau):       # CLIP's logit_scale, without its exp()
    return _both(i @ t.T * math.log(1 / tau))


@pytest.mark.parametrize("fn, named", [(multiplies_by_exp_of_one_over_tau, "exp(1/τ)"),
                                       (multiplies_by_log_of_one_over_tau, "log(1/τ)")], ids=["exp", "log"])
def test_lesson04_checker_names_the_logit_scale_slips(fn, named):
    fb = lesson04.check_clip_loss(fn)
    assert fb.passed is False and f"multiplied by {named}" in fb.message and "logit_scale" in fb.message, str(fb)
    assert "Divide the similarities by τ" in fb.hint, str(fb)


def test_lesson04_checker_names_multiplication_by_tau_in_any_form():
    fb = lesson04.check_clip_loss(multiplies_by_tau_log_softmax)
    assert fb.passed is False and "multiplied by τ" in fb.message, str(fb)


def test_lesson04_checker_says_where_the_smoothing_went():
    assert "the whole row" in lesson04.check_clip_loss(label_smoothing).message
    assert "the other captions" in lesson04.check_clip_loss(smoothing_over_the_negatives).message
