"""Predict-then-run exercises (lessons 05-08): a prediction is compared with the run, both ways, and
anything that is not a prediction is named."""

import pytest

from clipcourse import experiments
from clipcourse.exercises import predictions as p

TAUS = [0.01, 0.0316, 0.1, 0.316, 1.0]
ACCS = [0.52, 0.77, 0.83, 0.39, 0.19]


def test_not_attempted_asks_for_a_prediction_first():
    for fb in (p.effective_negatives_at_low_tau(None, 1.01), p.learned_tau_direction(None, 0.07, 0.04, 0.8),
               p.best_fixed_tau(None, TAUS, 0.1, ACCS), p.zero_shot_at_any_tau(None, 0.9, 0.9)):
        assert fb.passed is None and str(fb).startswith("⏳ Not attempted yet.") and "before" in str(fb)


def test_effective_negatives():
    assert p.effective_negatives_at_low_tau(1, 1.01).passed
    missed = p.effective_negatives_at_low_tau(8, 1.01)
    assert missed.passed is False and str(missed).startswith("🔎 Your prediction missed") and "1.01" in str(missed)
    for bad in ("many", 0, 40, True):
        fb = p.effective_negatives_at_low_tau(bad, 1.01)
        assert fb.passed is False and fb.kind == "check" and "not a prediction" in str(fb)


def test_learned_tau_direction_explains_either_outcome():
    held = p.learned_tau_direction("lower", 0.07, 0.041, 0.81)
    assert held.passed and str(held).startswith("🎯 Your prediction held") and "lower τ" in str(held)
    up = p.learned_tau_direction("lower", 0.07, 0.09, 0.81)
    assert up.passed is False and "higher τ" in str(up)
    assert p.learned_tau_direction("unchanged", 0.07, 0.0705, 0.2).passed
    assert "not a prediction" in str(p.learned_tau_direction("down", 0.07, 0.04, 0.8))


def test_best_fixed_tau_accepts_a_sweep_value_only():
    assert p.best_fixed_tau(0.1, TAUS, 0.1, ACCS).passed
    assert p.best_fixed_tau(0.0316, TAUS, 0.1, ACCS).passed is False
    for bad in (0.05, -1, "0.1", None if False else "high"):
        fb = p.best_fixed_tau(bad, TAUS, 0.1, ACCS)
        assert fb.passed is False and fb.kind == "check" and "not" in str(fb)


def test_best_fixed_tau_accepts_a_sweep_value_as_the_learner_types_it():
    # lesson 07's sweep: experiments.log_spaced(0.01, 1, 5) = 0.01, 0.0316227..., 0.1, 0.316227..., 1
    taus = experiments.log_spaced(0.01, 1, 5)
    assert taus[1] != 0.0316 and taus[3] != 0.316
    for typed, nearest in ((0.0316, taus[1]), (0.03162, taus[1]), (0.316, taus[3]), (0.1, taus[2])):
        fb = p.best_fixed_tau(typed, taus, taus[2], ACCS)
        assert fb.kind == "prediction", (typed, str(fb))               # compared with the run, not rejected
        assert fb.passed is (nearest == taus[2])
        assert f"you predicted τ = {nearest:.3g} " in fb.message, (typed, fb.message)


@pytest.mark.parametrize("low, high, outcome", [(0.9, 0.9, "same"), (0.95, 0.9, "higher"), (0.8, 0.9, "lower")])
def test_zero_shot_at_any_tau(low, high, outcome):
    assert p.zero_shot_at_any_tau(outcome, low, high).passed
    other = next(c for c in ("same", "higher", "lower") if c != outcome)
    assert p.zero_shot_at_any_tau(other, low, high).passed is False
