"""Lesson 10's checkers: the right answers pass, and learner-style wrong answers are named, never crash."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipcourse.exercises import lesson10


def verdict(feedback):
    return feedback.passed, str(feedback)


# --- check_bound ------------------------------------------------------------------------------

def test_bound_right_answers_pass():
    for answer in (math.log(256), math.log(2 * 128), torch.tensor(256.0).log(), torch.log(torch.tensor(256.0)).item()):
        assert lesson10.check_bound(answer).passed is True, answer


@pytest.mark.parametrize("answer", [5.545, 5.5452, 5.54518, 5.546, 5.5447])
def test_bound_typed_in_to_four_digits_passes_with_a_note(answer):
    # the prompt says "Give a number": a right value to four significant digits is right
    fb = lesson10.check_bound(answer)
    assert fb.passed is True, str(fb)
    assert "math.log(256) gives it exactly" in str(fb)


def test_bound_exact_answer_has_no_rounding_note():
    assert "rounded" not in str(lesson10.check_bound(math.log(256)))


@pytest.mark.parametrize("answer, says", [
    (6.931, "accumulation adds no negatives"),        # log 1024, rounded: still named
    (4.852, "one process's batch"),                   # log 128, rounded
    (5.541, "negatives only"),                        # log 255, rounded: not log 256
    (5.54, "rounded too far"),
    (5.5, "rounded too far"),
    (5.6, "not the bound"),
])
def test_bound_rounded_wrong_answers_are_named(answer, says):
    passed, text = verdict(lesson10.check_bound(answer))
    assert passed is False, text
    assert says in text, text


def test_bound_not_attempted():
    fb = lesson10.check_bound(None)
    assert fb.passed is None and str(fb).startswith("⏳ Not attempted yet.")


@pytest.mark.parametrize("answer, says", [
    (math.log(1024), "accumulation adds no negatives"),
    (math.log(128), "one process's batch"),
    (math.log(512), "two mistakes"),
    (math.log(255), "negatives only"),
    (math.log(1023), "negatives only"),
    (math.log(127), "one process's negatives"),
    (8.0, "bits"),
    (10.0, "in bits, and plain accumulation"),
    (7.0, "in bits, and one process's"),
    (math.log10(256), "base 10"),
    (256, "the batch size"),
    (1024, "accumulation adds no negatives"),
    (128, "one process's only"),
    (255, "a count of negatives"),
    (-1.0, "never negative"),
    (0.0, "never negative"),
    (5.55, "rounded"),
    (3.0, "not the bound"),
    ("5.545", "a string"),
    ([5.545], "got a list"),
    (float("nan"), "finite"),
    (float("inf"), "finite"),
    (True, "got a bool"),
])
def test_bound_wrong_answers_are_named(answer, says):
    passed, text = verdict(lesson10.check_bound(answer))
    assert passed is False, text
    assert says in text, text


# --- check_local_loss -------------------------------------------------------------------------

def reference(image_features, text_features, all_image_features, all_text_features, temperature, rank):
    logits_per_image = image_features @ all_text_features.T / temperature
    logits_per_text = text_features @ all_image_features.T / temperature
    b = len(image_features)
    labels = rank * b + torch.arange(b)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def test_local_loss_right_answers_pass():
    from clipcourse import distributed

    assert lesson10.check_local_loss(reference).passed is True
    assert lesson10.check_local_loss(distributed.local_clip_loss).passed is True


def _put_back(i, t, ai, at, rank, detach_others=False):
    """open_clip's pattern: this process's own (local) rows put back in place of their gathered copies."""
    b = len(i)
    other = (lambda x: x.detach()) if detach_others else (lambda x: x)
    return (torch.cat([other(ai[:rank * b]), i, other(ai[(rank + 1) * b:])]),
            torch.cat([other(at[:rank * b]), t, other(at[(rank + 1) * b:])]))


def test_local_loss_accepts_own_rows_put_back_into_the_gathered_features():
    # the gradient that reaches this process is the same: its rows of the gathered features come back to it
    def put_back(i, t, ai, at, tau, rank):
        return reference(i, t, *_put_back(i, t, ai, at, rank), tau, rank)

    def rows_from_the_gather(i, t, ai, at, tau, rank):
        b = len(i)
        return reference(ai[rank * b:(rank + 1) * b], at[rank * b:(rank + 1) * b], ai, at, tau, rank)

    for fn in (put_back, rows_from_the_gather):
        fb = lesson10.check_local_loss(fn)
        assert fb.passed is True, (fn.__name__, str(fb))


def test_local_loss_rejects_own_rows_put_back_with_the_others_detached():
    # open_clip's gather_with_grad=False with local_loss=True: the right value, a wrong gradient
    def others_detached(i, t, ai, at, tau, rank):
        return reference(i, t, *_put_back(i, t, ai, at, rank, detach_others=True), tau, rank)

    passed, text = verdict(lesson10.check_local_loss(others_detached))
    assert passed is False, text
    assert "no gradient reaches the other processes' rows" in text and "detached" in text, text


def test_local_loss_rejects_a_gradient_that_differs_on_its_own_rows():
    def rows_detached(i, t, ai, at, tau, rank):                # the rows carry no gradient, only the columns do
        return reference(i.detach(), t.detach(), ai, at, tau, rank)

    passed, text = verdict(lesson10.check_local_loss(rows_detached))
    assert passed is False, text
    assert "the gradient on this process's image features" in text and "differs" in text, text


def test_local_loss_not_attempted_and_not_a_function():
    assert lesson10.check_local_loss(None).passed is None
    fb = lesson10.check_local_loss(3.0)
    assert fb.passed is False and "expected a function" in str(fb)


def _labels(fn):
    """A local loss with its own labels(rank, b)."""
    def loss(i, t, ai, at, tau, rank):
        labels = fn(rank, len(i))
        return (F.cross_entropy(i @ at.T / tau, labels) + F.cross_entropy(t @ ai.T / tau, labels)) / 2
    return loss


WRONG = {
    "no rank offset": (_labels(lambda r, b: torch.arange(b)), "ignore the rank"),
    "offset by rank": (_labels(lambda r, b: r + torch.arange(b)), "shifted by rank, not by rank·B"),
    "hard-coded B": (_labels(lambda r, b: r * 4 + torch.arange(b)), "rank"),
    "no gather": (lambda i, t, ai, at, tau, r: reference(i, t, i, t, tau, 0), "only the local pairs"),
    "whole batch": (lambda i, t, ai, at, tau, r: reference(ai, at, ai, at, tau, 0), "local_loss=False"),
    "no tau": (lambda i, t, ai, at, tau, r: reference(i, t, ai, at, 1.0, r), "divide by τ"),
    "the notebook's tau": (lambda i, t, ai, at, tau, r: reference(i, t, ai, at, 0.07, r), "global tau"),
    "the notebook's B": (_labels(lambda r, b: r * 8 + torch.arange(b)), "global B"),
    "the notebook's B twice": (_labels(lambda r, b: r * 8 + torch.arange(8)), "global B"),   # B = 8 from the notebook
    "image to text only": (lambda i, t, ai, at, tau, r: F.cross_entropy(i @ at.T / tau, r * len(i) + torch.arange(len(i))),
                           "only one direction: image→text"),
    "text to image only": (lambda i, t, ai, at, tau, r: F.cross_entropy(t @ ai.T / tau, r * len(i) + torch.arange(len(i))),
                           "only one direction: text→image"),
    "added": (lambda *a: 2 * reference(*a), "added, not averaged"),
    "summed rows": (lambda i, t, ai, at, tau, r: len(i) * reference(i, t, ai, at, tau, r), "summed over the rows"),
    "local images for text": (lambda i, t, ai, at, tau, r: (
        F.cross_entropy(i @ at.T / tau, r * len(i) + torch.arange(len(i)))
        + F.cross_entropy(t @ i.T / tau, torch.arange(len(i)))) / 2, "local images only"),
    "detached": (lambda i, t, ai, at, tau, r: reference(i, t, ai.detach(), at.detach(), tau, r), "detached"),
    "item": (lambda *a: reference(*a).item(), "not a tensor"),
    "per row": (lambda i, t, ai, at, tau, r: F.cross_entropy(i @ at.T / tau, r * len(i) + torch.arange(len(i)),
                                                             reduction="none"), "one loss per local pair"),
    "returns None": (lambda *a: None, "returned a NoneType"),
    "raises": (lambda i, t, ai, at, tau, r: i @ at[:5], "raised RuntimeError"),
    "in place": (lambda i, t, ai, at, tau, r: reference(i.div_(1.0).mul_(2), t, ai, at, tau, r), "in place"),
    "negative": (lambda *a: -reference(*a), "negative"),
    "nan": (lambda *a: reference(*a) * float("nan"), "NaN"),
    "something else": (lambda *a: reference(*a) + 0.3, "the local loss is"),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_local_loss_wrong_answers_are_named(name):
    fn, says = WRONG[name]
    passed, text = verdict(lesson10.check_local_loss(fn))
    assert passed is False, (name, text)
    assert says in text, (name, text)
