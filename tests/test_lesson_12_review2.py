"""Lesson 12, second review: the τ diagnostic as an engineer uses it on their own embeddings (numpy views, a τ
passed as logit_scale, a large N, its cost), and the exercise checkers on more of the mistakes learners make."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipcourse import diagnostics
from clipcourse import temperature_maths as tm
from clipcourse.exercises import lesson12


def _pairs(n=24, dim=8, seed=0, noise=0.5):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(img + noise * torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
    return img, txt


# --- the diagnostic on an engineer's embeddings ----------------------------------------------------

def test_diagnose_reads_a_reversed_numpy_view_and_names_an_object_array():
    """Was torch's own error ("At least one stride ... is negative", "can't convert np.ndarray of type
    numpy.object_"), naming no argument."""
    img, txt = _pairs()
    flipped = diagnostics.diagnose(img.numpy()[::-1], txt.numpy()[::-1], k=2)
    assert flipped.loss_at_tau == pytest.approx(diagnostics.diagnose(img.flip(0), txt.flip(0), k=2).loss_at_tau)
    with pytest.raises(TypeError, match="image_features must hold real floating-point numbers, got numpy dtype object"):
        diagnostics.diagnose(np.array(list(img.numpy()), dtype=object), txt)


def test_shift_along_takes_a_numpy_vector_and_any_real_amount():
    """Was refused: a numpy gap vector ("got ndarray"), amount=np.float32(0.5) or a 0-d tensor ("amount must be a
    finite number"), though the features themselves may be numpy."""
    img, txt = _pairs()
    v = diagnostics.modality_gap(img, txt).vector
    want = diagnostics.shift_along(img, v, -0.5)
    assert torch.allclose(diagnostics.shift_along(img.numpy(), v.numpy(), -0.5), want)
    assert torch.allclose(diagnostics.shift_along(img, v, np.float32(-0.5)), want)
    assert torch.allclose(diagnostics.shift_along(img, v, torch.tensor(-0.5)), want)
    with pytest.raises(TypeError, match="amount"):
        diagnostics.shift_along(img, v, torch.ones(2))


@pytest.mark.parametrize("tau", [100.0, math.log(100), math.log(1 / 0.07)])   # logit_scale.exp(), logit_scale
def test_diagnose_notes_a_tau_above_one(tau):
    """CLIP's τ lives in [0.01, 1]; users pass logit_scale (2.66, 4.6) or its exp (14.3, 100) as τ. The report
    printed 'at τ = 100' with a uniform entropy and said nothing."""
    img, txt = _pairs()
    text = str(diagnostics.diagnose(img, txt, tau=tau, k=0))
    assert "is above 1" in text and "exp(-logit_scale)" in text
    assert "above 1" not in str(diagnostics.diagnose(img, txt, tau=0.07, k=0))


def test_diagnose_refuses_more_pairs_than_it_can_hold(monkeypatch):
    """Was: (N, N) float64 matrices for any N (20 GB each at N = 50,000), a dead kernel instead of an answer."""
    monkeypatch.setattr(diagnostics, "MAX_PAIRS", 20)
    img, txt = _pairs(n=21)
    with pytest.raises(ValueError, match="image_features and text_features hold 21 pairs.*random sample"):
        diagnostics.diagnose(img, txt)
    diagnostics.diagnose(img[:20], txt[:20], k=0)


@pytest.mark.parametrize("case", ["aligned", "random", "perfect"])
def test_diagnose_finds_the_loss_optimal_tau_with_a_quarter_of_the_losses(monkeypatch, case):
    """diagnose took 203 CLIP losses of an (N, N) matrix for τ* (2.4 minutes at N = 4,000, D = 512). The loss is
    convex in 1/τ, so a coarse grid brackets its one valley: the same τ* from far fewer losses, at either end too."""
    img, txt = _pairs(n=32, noise={"aligned": 0.5, "random": 50.0, "perfect": 0.0}[case])
    want = tm.optimal_temperature(img, txt)                                  # the fine grid of lesson 05
    calls, loss_at = [], tm.loss_at
    monkeypatch.setattr(tm, "loss_at", lambda *a: calls.append(1) or loss_at(*a))
    report = diagnostics.diagnose(img, txt, k=0)
    assert report.optimal_tau == pytest.approx(want[0], rel=1e-6)
    assert report.loss_at_optimum == pytest.approx(want[1], rel=1e-9)
    assert len(calls) <= 70, len(calls)                                      # was 203 (+1 for the loss at τ)


# --- exercise 1: the modality gap ----------------------------------------------------------------

def _gap_parts():
    img, txt = lesson12.exercise_features()
    return img, txt, img.mean(0), txt.mean(0)


@pytest.mark.parametrize("make, says", [
    (lambda img, txt, ci, ct: diagnostics.modality_gap(img, txt), "diagnostics.modality_gap returns"),
    (lambda img, txt, ci, ct: ci.norm() - ct.norm(), "difference of the two centroids' lengths"),   # was: "negative"
    (lambda img, txt, ci, ct: (ci.norm() - ct.norm()).abs(), "difference of the two centroids' lengths"),
    (lambda img, txt, ci, ct: img.mean() - txt.mean(), "without dim"),
    (lambda img, txt, ci, ct: (txt.mean() - img.mean()).norm(), "without dim"),
    (lambda img, txt, ci, ct: torch.cdist(img, txt).mean(), "every image and every caption"),
    (lambda img, txt, ci, ct: (img * txt).sum(dim=1).mean(), "each image and its own caption"),
    (lambda img, txt, ci, ct: (ci - ct).numpy(), "gap \\*vector\\*"),                             # was: "a ndarray"
])
def test_check_modality_gap_names_more_mistakes(make, says):
    feedback = lesson12.check_modality_gap(make(*_gap_parts()))
    assert feedback.passed is False
    assert re.search(says, str(feedback)), str(feedback)


def test_the_gap_mistakes_are_told_apart():
    """Each diagnosed mistake has its own value on the exercise's embeddings, none within twice the checker's
    tolerance of another or of the right one."""
    img, txt, ci, ct = _gap_parts()
    values = [abs(v) for v, _, _ in lesson12._gap_mistakes(img, txt)] + [float((ci - ct).norm())]
    for a in range(len(values)):
        for b in range(a):
            assert not math.isclose(values[a], values[b], rel_tol=2e-3), (a, b, values[a])   # the checker: 1e-3


def test_check_modality_gap_still_accepts_right_answers_in_other_forms():
    img, txt, ci, ct = _gap_parts()
    for answer in ((img - txt).mean(0).norm(), torch.dist(ci, ct), torch.cdist(ci[None], ct[None]),
                   np.linalg.norm((ci - ct).numpy()), np.array([float((ci - ct).norm())])):
        assert lesson12.check_modality_gap(answer).passed, answer
    assert "cannot be negative" in str(lesson12.check_modality_gap(-(ci - ct).norm()))


# --- exercise 2: the hardest negative ------------------------------------------------------------

def _eye(s):
    return torch.eye(len(s), dtype=torch.bool)


@pytest.mark.parametrize("answer, says", [
    (lambda s: s.topk(2, dim=1).indices[:, 1], "second-largest"),                     # was: "own caption in row(s) [2]"
    (lambda s: s.argsort(dim=1, descending=True)[:, 1], "second-largest"),
    (lambda s: s[~_eye(s)].view(len(s), len(s) - 1).argmax(dim=1), "removed the diagonal"),   # was: "own caption"
    (lambda s: s.abs().masked_fill(_eye(s), -math.inf).argmax(dim=1), "size of their similarity"),  # was: generic
    (lambda s: s.masked_fill(torch.eye(len(s)), -math.inf).argmax(dim=1), "dtype=torch.bool"),  # was: "read the error"
])
def test_check_hardest_negative_names_more_mistakes(answer, says):
    feedback = lesson12.check_hardest_negative(answer)
    assert feedback.passed is False
    assert says in str(feedback), str(feedback)


def test_check_hardest_negative_accepts_numpy_and_praises_what_was_done():
    """np.argmax(..., axis=1) was refused ("returned a ndarray"); a right answer that masks with -1 (cosines are
    at least -1) was praised for "the diagonal masked with -inf"."""
    def with_numpy(s):
        return np.argmax(s.masked_fill(_eye(s), -math.inf).numpy(), axis=1)

    def with_minus_one(s):
        return s.masked_fill(_eye(s), -1.0).argmax(dim=1)

    assert lesson12.check_hardest_negative(with_numpy).passed
    feedback = lesson12.check_hardest_negative(with_minus_one)
    assert feedback.passed and "masked with -inf" not in str(feedback)
