"""Predict, then run (lessons 05-08): the learner writes down what τ will do *before* an experiment
runs; afterwards these compare the prediction with what the run measured and explain the difference.

A prediction is never "wrong code": each function returns a `Feedback` of kind "prediction" that says
whether the prediction held, what the run measured, and why it came out that way.
"""

from __future__ import annotations

import math

from . import Feedback


def _waiting(what: str) -> Feedback:
    return Feedback(None, f"Replace the None with {what} *before* you run the experiment, then run this cell "
                          f"again after it.")


def _invalid(message: str) -> Feedback:
    return Feedback(False, f"that is not a prediction this cell can compare: {message}", kind="check")


def _verdict(held: bool, message: str, why: str) -> Feedback:
    return Feedback(held, message, why, kind="prediction")


def effective_negatives_at_low_tau(prediction, measured: float, batch: int = 32, tau: float = 0.01) -> Feedback:
    """Lesson 05: how many effective negatives e^H does a trained row keep at a very low τ?"""
    if prediction is None:
        return _waiting(f"your guess of the mean effective number of negatives at τ = {tau} (a number from 1 "
                        f"to {batch})")
    if isinstance(prediction, bool) or not isinstance(prediction, (int, float)) or not 1 <= prediction <= batch:
        return _invalid(f"expected a number from 1 to {batch} (e^H of a row of {batch}), got {prediction!r}")
    held = abs(math.log(prediction / measured)) <= math.log(1.5)          # within a factor of 1.5
    return _verdict(held, f"you predicted {prediction:g}, the trained batch kept {measured:.2f} of {batch} at τ = {tau}.",
                    f"at τ = {tau} the logits are {1 / tau:.0f}× the similarities, so a similarity gap of 0.05 "
                    f"becomes a factor e^{0.05 / tau:.0f} in probability: one caption takes almost everything, "
                    f"and e^H approaches 1 however many captions the row has.")


def learned_tau_direction(prediction, start: float, end: float, travel: float) -> Feedback:
    """Lesson 06: does the learnable τ end above, below or at its start?"""
    choices = ("lower", "higher", "unchanged")
    if prediction is None:
        return _waiting(f"one of {choices}: where the learnable τ will end after training, compared with {start}")
    if prediction not in choices:
        return _invalid(f"expected one of {choices}, got {prediction!r}")
    ratio = end / start
    outcome = "unchanged" if abs(math.log(ratio)) < 0.05 else ("lower" if ratio < 1 else "higher")
    return _verdict(prediction == outcome,
                    f"you predicted {prediction!r}; τ went {start:g} → {end:.3g} ({outcome}).",
                    (f"as the model separates its pairs better, a sharper softmax lowers the training loss, so "
                     f"the gradient on log(1/τ) keeps asking for a lower τ. " if outcome == "lower" else
                     f"while the features cannot yet tell the pairs apart, a softer softmax lowers the training "
                     f"loss, so the gradient asked for a higher τ; a model that learns well turns that around. ")
                    + f"How far τ gets is limited by Adam: about the learning rate per step while the gradient "
                    f"keeps its sign, Σ lr = {travel:.2f} in log τ here, i.e. roughly a factor "
                    f"{math.exp(travel):.2g} (not a strict cap; lesson 07).")


def best_fixed_tau(prediction, taus, best: float, accuracies) -> Feedback:
    """Lesson 07: which fixed τ of the sweep gives the best held-out accuracy?"""
    if prediction is None:
        return _waiting(f"one of the sweep's temperatures {[round(t, 4) for t in taus]}: the one you expect to "
                        f"give the best held-out accuracy")
    if isinstance(prediction, bool) or not isinstance(prediction, (int, float)):
        return _invalid(f"expected a number, one of {[round(t, 4) for t in taus]}, got {prediction!r}")
    nearest = min(taus, key=lambda t: abs(math.log(t / prediction)) if prediction > 0 else math.inf)
    if prediction <= 0 or abs(math.log(nearest / prediction)) > 0.1:
        return _invalid(f"{prediction!r} is not one of the sweep's temperatures {[round(t, 4) for t in taus]}")
    acc = dict(zip(taus, accuracies))
    return _verdict(math.isclose(nearest, best),
                    f"you predicted τ = {nearest:.3g} ({acc[nearest]:.1%} held-out); the best was τ = {best:.3g} "
                    f"({acc[best]:.1%}).",
                    "too high a τ spreads the push over every negative and learns slowly (C4); too low a τ pours "
                    "it onto the one most similar negative, which early on is noise and in ShapesWorld is often "
                    "a caption that says the same thing (C5). The best τ sits between, where the push is shared "
                    "by the few negatives that matter.")


def zero_shot_at_any_tau(prediction, accuracy_low_tau: float, accuracy_high_tau: float) -> Feedback:
    """Lesson 08: does dividing the zero-shot scores by a lower τ change the accuracy?"""
    choices = ("higher", "lower", "same")
    if prediction is None:
        return _waiting(f"one of {choices}: held-out zero-shot accuracy with scores / 0.01 compared with scores / 1")
    if prediction not in choices:
        return _invalid(f"expected one of {choices}, got {prediction!r}")
    diff = accuracy_low_tau - accuracy_high_tau
    outcome = "same" if abs(diff) < 1e-12 else ("higher" if diff > 0 else "lower")
    found = ("the same at both τ" if outcome == "same" else
             f"{outcome} at τ = 0.01 ({accuracy_low_tau:.1%} vs {accuracy_high_tau:.1%})")
    return _verdict(prediction == outcome, f"you predicted {prediction!r}; the accuracy came out {found}.",
                    "dividing every score by the same positive τ keeps their order, and classification takes the "
                    "argmax. τ changes how confident the probabilities are, never which class wins: it matters in "
                    "training, where the loss reads the whole softmax.")
