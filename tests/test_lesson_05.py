"""Lesson 05 (the temperature dial): every hand-vs-package equality the notebook asserts, and the
exercise checkers (a correct answer passes, each diagnosed slip is diagnosed, None is not attempted)."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipcourse import loss, temperature_maths
from clipcourse.exercises import lesson05 as ex

SIMS_ROW = torch.tensor([0.62, 0.55, 0.30, 0.12, -0.05, -0.20])
TAUS = [1.0, 0.3, 0.1, 0.03]


def entropy_by_hand(p):
    return -(p * torch.log(p)).sum(dim=-1)


@pytest.fixture
def lesson_batch():
    torch.manual_seed(0)
    B, D = 8, 16
    img = F.normalize(torch.randn(B, D, dtype=torch.float64), dim=-1)
    txt = F.normalize(img + 0.6 * torch.randn(B, D, dtype=torch.float64), dim=-1)
    return img, txt


# --- section 1: one row by hand ------------------------------------------------------------------

def test_hand_row_sharpens_and_concentrates_the_push():
    entropies, shares = [], []
    for tau in TAUS:
        p = torch.softmax(SIMS_ROW / tau, dim=0)
        push = p[1:] / tau
        assert push.sum().item() == pytest.approx(((1 - p[0]) / tau).item(), rel=1e-5)
        entropies.append(entropy_by_hand(p).item())
        shares.append((push[0] / push.sum()).item())
        S = torch.zeros(6, 6, dtype=torch.float64)
        S[0] = SIMS_ROW                                   # the lesson's row as row 0 of a batch
        st = temperature_maths.row_stats(S, tau, 0)
        assert st.entropy == pytest.approx(entropies[-1], rel=1e-5)
        assert st.hardest == 1 and st.hardest_share == pytest.approx(shares[-1], rel=1e-5)
    assert entropies == sorted(entropies, reverse=True)
    assert shares == sorted(shares)


# --- section 2: the notebook's asserts -----------------------------------------------------------

def test_image_to_text_gradient_is_P_minus_I_over_tau(lesson_batch):
    img, txt = lesson_batch
    tau, B = 0.07, len(img)
    S = (img @ txt.T).requires_grad_()
    I = torch.eye(B, dtype=S.dtype)
    (g,) = torch.autograd.grad(F.cross_entropy(S / tau, torch.arange(B), reduction="sum"), S)
    P = torch.softmax(S.detach() / tau, dim=1)
    assert torch.allclose(g, (P - I) / tau)
    neg = ~I.bool()
    assert torch.allclose(g[neg], (P / tau)[neg])
    assert torch.allclose(g.masked_fill(~neg, 0).sum(1), (1 - P.diag()) / tau)


def test_clip_loss_gradient_is_the_average_of_both_directions(lesson_batch):
    img, txt = lesson_batch
    tau, B = 0.07, len(img)
    S = (img @ txt.T).requires_grad_()
    I = torch.eye(B, dtype=S.dtype)
    (g,) = torch.autograd.grad(loss.clip_loss(S, I, tau), S)
    P = torch.softmax(S.detach() / tau, dim=1)
    P_cols = torch.softmax(S.detach() / tau, dim=0)
    assert torch.allclose(g, ((P - I) / tau + (P_cols - I) / tau) / (2 * B))
    # and the S-trick is the same loss as on the features
    assert loss.clip_loss(S, I, tau).item() == pytest.approx(loss.clip_loss(img, txt, tau).item(), rel=1e-12)


def test_widget_functions_equal_the_hand_versions(lesson_batch):
    img, txt = lesson_batch
    tau, B = 0.07, len(img)
    S = img @ txt.T
    P = torch.softmax(S / tau, dim=1)
    I = torch.eye(B, dtype=S.dtype)
    neg = ~I.bool()
    for row in range(B):
        st = temperature_maths.row_stats(S, tau, row)
        assert torch.allclose(st.probs, P[row])
        assert math.isclose(st.entropy, entropy_by_hand(P[row]).item(), rel_tol=1e-9)
        assert math.isclose(st.effective_negatives, entropy_by_hand(P[row]).exp().item(), rel_tol=1e-9)
        assert torch.allclose(st.weights[neg[row]], ((P - I) / tau)[row][neg[row]])
        assert math.isclose(st.pull, ((1 - P[row, row]) / tau).item(), rel_tol=1e-9, abs_tol=1e-12)
    assert torch.allclose(temperature_maths.gradient_weights(S, tau), (P - I) / tau)
    assert torch.allclose(temperature_maths.similarities(img, txt), S)
    assert math.isclose(temperature_maths.loss_at(img, txt, tau), loss.clip_loss(img, txt, tau).item(), rel_tol=1e-12)
    assert temperature_maths.mean_entropy(S, tau) == pytest.approx(entropy_by_hand(P).mean().item(), rel=1e-9)


def test_claim_c3_on_a_structured_batch(lesson_batch):
    img, txt = lesson_batch
    S = temperature_maths.similarities(img, txt)
    sweep = [3.0, 1.0, 0.3, 0.1, 0.07, 0.03, 0.01, 0.003]
    H = [temperature_maths.mean_entropy(S, t) for t in sweep]
    shares = [temperature_maths.hardest_shares(S, t).mean().item() for t in sweep]
    assert all(a > b for a, b in zip(H, H[1:]))
    assert all(a < b for a, b in zip(shares, shares[1:]))


# --- exercise 1: effective negatives ---------------------------------------------------------------

S_EX = ex.exercise_similarities()
ENT = lambda p: -torch.special.xlogy(p, p).sum(-1)  # noqa: E731


def test_exercise_batch_is_fixed_and_sensible():
    assert S_EX.shape == (8, 8)
    torch.testing.assert_close(S_EX, ex.exercise_similarities())
    assert S_EX.abs().max() <= 1


def test_effective_negatives_not_attempted_and_correct():
    fb = ex.check_effective_negatives(None)
    assert fb.passed is None and "Not attempted" in str(fb)
    p = torch.softmax(S_EX / 0.1, dim=-1)
    for answer in (ENT(p).exp(), ENT(p).exp().float(), ENT(p).exp().tolist()):
        fb = ex.check_effective_negatives(answer)
        assert fb.passed is True, str(fb)
    assert ex.check_effective_negatives(temperature_maths.row_stats(S_EX, 0.1, 0).effective_negatives).passed is False


@pytest.mark.parametrize("mistake,expect", [
    (lambda s: ENT(torch.softmax(s / 0.1, -1)), "entropies themselves"),
    (lambda s: torch.exp(-ENT(torch.softmax(s / 0.1, -1))), "sign"),
    (lambda s: torch.exp2(ENT(torch.softmax(s / 0.1, -1))), "nats with 2**H"),
    (lambda s: ENT(torch.softmax(s, -1)).exp(), "τ is missing"),
    (lambda s: ENT(torch.softmax(s * 0.1, -1)).exp(), "multiplied by τ"),
    (lambda s: ENT(torch.softmax(s / 0.1, 0).T).exp(), "columns"),
    (lambda s: ENT(torch.softmax(s / 0.1, -1)).exp().sum(), "shape"),
    (lambda s: torch.softmax(s / 0.1, -1), "shape"),
    (lambda s: torch.full((8,), float("nan")), "NaN"),
    (lambda s: torch.ones(8), "not the expected"),
])
def test_effective_negatives_diagnoses(mistake, expect):
    fb = ex.check_effective_negatives(mistake(S_EX))
    assert fb.passed is False
    assert expect in str(fb), str(fb)


def test_effective_negatives_rejects_non_tensors():
    fb = ex.check_effective_negatives("eight numbers")
    assert fb.passed is False and "tensor" in str(fb)


# --- exercise 2: gradient weights ----------------------------------------------------------------

def autograd_gradient(tau=0.05):
    s = S_EX[0].clone().requires_grad_()
    F.cross_entropy(s[None] / tau, torch.tensor([0])).backward()
    return s.grad


def test_gradient_not_attempted_and_correct():
    assert ex.check_gradient_weights(None).passed is None
    assert ex.check_gradient_weights(autograd_gradient()).passed is True
    torch.testing.assert_close(ex.reference_gradient(), autograd_gradient())
    # the widget's weights and pull are the same numbers
    st = temperature_maths.row_stats(S_EX, 0.05, 0)
    g = ex.reference_gradient()
    torch.testing.assert_close(st.weights[1:], g[1:])
    assert st.pull == pytest.approx(-g[0].item())


P0 = torch.softmax(S_EX[0] / 0.05, dim=-1)
ONE = F.one_hot(torch.tensor(0), 8).double()


@pytest.mark.parametrize("answer,expect", [
    (-(P0 - ONE) / 0.05, "sign is flipped"),
    (P0 - ONE, "1/τ is missing"),
    ((P0 - ONE) * 0.05, "multiplied by τ"),
    (P0 / 0.05, "misses the -1"),
    (P0, "probabilities"),
    ((torch.softmax(S_EX[0], -1) - ONE) / 0.05, "raw similarities"),
    (torch.zeros(7), "shape"),
    (torch.zeros(8), "not the expected"),
])
def test_gradient_diagnoses(answer, expect):
    fb = ex.check_gradient_weights(answer)
    assert fb.passed is False
    assert expect in str(fb), str(fb)


# --- slips found in review: each got a wrong or misleading hint before -----------------------------

P1 = torch.softmax(S_EX / 0.1, dim=-1)
OFF = ~torch.eye(8, dtype=torch.bool)


@pytest.mark.parametrize("mistake,expect", [
    # entropy in log10, then exp: a base mismatch, not "entropies, not exp(entropy)"
    (lambda: (-(P1 * P1.log10()).sum(-1)).exp(), "don't mix"),
    # "effective number of negatives" read literally: the positive left out of the softmax
    (lambda: ENT(torch.softmax((S_EX / 0.1).masked_fill(~OFF, -math.inf), -1)).exp(), "positive"),
    # the positive's term left out of the entropy's sum
    (lambda: (-(P1 * P1.log()) * OFF).sum(-1).exp(), "positive"),
    # keepdim=True: the right numbers in shape (8, 1); summing over dim=-1 would be wrong advice
    (lambda: ENT(P1).exp()[:, None], "reshape"),
])
def test_effective_negatives_review_slips(mistake, expect):
    fb = ex.check_effective_negatives(mistake())
    assert fb.passed is False
    assert expect in str(fb), str(fb)
    assert "sum over dim=-1" not in str(fb)


@pytest.mark.parametrize("answer,expect", [
    # autograd through sims[0:1]: the right numbers in shape (1, 8)
    (((P0 - ONE) / 0.05)[None], "reshape"),
    # the whole batch's (P - I) / τ: the exercise wants row 0, not row sums (which are all 0)
    ((torch.softmax(S_EX / 0.05, -1) - torch.eye(8, dtype=torch.float64)) / 0.05, "row 0"),
    # the derivative of -P_00 instead of -log P_00: the right pattern times P_00
    (P0[0] * (P0 - ONE) / 0.05, "log"),
])
def test_gradient_review_slips(answer, expect):
    fb = ex.check_gradient_weights(answer)
    assert fb.passed is False
    assert expect in str(fb), str(fb)
    assert "sum over dim=-1" not in str(fb)
