"""Lesson 07 exercises: reading a logged logit_scale, and the clamp's bounds in logit_scale units.

Both are about the one trap that catches everyone: CLIP stores log(1/τ), not τ. Both share one
tolerance: within 0.2 % of the exact value is right (`_close`); within 2 % is the right idea rounded to too
few digits, and the learner is asked to let Python compute it.
"""

from __future__ import annotations

import math

from . import Feedback, correct, not_attempted, wrong
from ._symptoms import number

LOGGED_LOGIT_SCALE = 3.0   # the value in the exercise's training log


def _one_number_inside(answer) -> bool:
    """A tuple or list holding one number: `answer = x,` (a trailing comma) or `[x]`."""
    return isinstance(answer, (tuple, list)) and len(answer) == 1 and number(answer[0]) is not None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=2e-3, abs_tol=1e-6)


def _rounded(a: float, b: float) -> bool:
    """Within 2 % but not `_close`: b rounded to too few digits."""
    return math.isclose(a, b, rel_tol=0.02, abs_tol=1e-6)


def check_temperature_from_logit_scale(answer) -> Feedback:
    """The τ a model uses when its log shows logit_scale = 3.0: exp(-3) ≈ 0.0498."""
    if answer is None:
        return not_attempted(f"the τ that logit_scale = {LOGGED_LOGIT_SCALE} stands for (a number)")
    value = number(answer)
    if value is None:
        if isinstance(answer, str):
            return wrong(f"expected a number, got a string ({answer!r}).",
                         "Remove the quotes and compute it: answer = math.exp(-3.0).")
        if _one_number_inside(answer):
            return wrong(f"expected a number, got a {type(answer).__name__} holding one number.",
                         "Take out the brackets, or the trailing comma that makes a tuple: answer = math.exp(-3.0).")
        return wrong(f"expected a number, got a {type(answer).__name__}.", "For example answer = math.exp(-3.0).")
    if not math.isfinite(value):
        return wrong(f"τ = {value} is not a finite number: an overflow (exp of a large number) or 0 / 0.",
                     "τ = exp(-logit_scale) = exp(-3.0), a number between 0 and 1.")
    s = LOGGED_LOGIT_SCALE
    tau = math.exp(-s)
    if _close(value, tau):
        return correct(f"τ = exp(-{s:g}) = {tau:.4f}: the similarities are multiplied by exp({s:g}) = {math.exp(s):.1f}.")
    if _close(value, s):
        return wrong(f"{value:g} is the raw logit_scale, the number in the log, not τ.",
                     "logit_scale = log(1/τ), so τ = exp(-logit_scale).")
    if _close(value, math.exp(s)):
        return wrong(f"{value:.2f} = exp(logit_scale) is the multiplier 1/τ, not τ itself.",
                     "τ is one over that: exp(-logit_scale).")
    if _close(value, 1 / s):
        return wrong(f"{value:.4f} = 1/logit_scale: that forgets that logit_scale is a logarithm.",
                     "Undo the log first: 1/τ = exp(logit_scale), so τ = exp(-logit_scale).")
    if _close(value, math.log(s)) or _close(value, -math.log(s)):
        return wrong(f"{value:.4f} takes a logarithm of logit_scale; it is already one.",
                     "Exponentiate instead: τ = exp(-logit_scale).")
    if _close(value, 10 ** -s):
        return wrong(f"{value:g} = 10^-{s:g}: PyTorch's log is the natural log, so undo it with exp, not 10**.",
                     "τ = math.exp(-logit_scale).")
    if _close(value, 2 ** -s):
        return wrong(f"{value:g} = 2^-{s:g}: PyTorch's log is the natural log, so undo it with exp, not 2**.",
                     "τ = math.exp(-logit_scale).")
    if _close(value, math.exp(-1 / s)):
        return wrong(f"{value:.4f} = exp(-1/logit_scale): the exponent is -logit_scale itself, not -1/logit_scale.",
                     "τ = exp(-logit_scale).")
    if _close(value, 0.07):
        return wrong("0.07 is the temperature CLIP *starts* from; the log shows where training has taken it.",
                     f"Read it from the logged value: τ = exp(-{s:g}).")
    if _rounded(value, tau):
        return wrong(f"{value:g} is τ = exp(-{s:g}) = {tau:.4f} rounded: right idea, too few digits to check.",
                     f"Let Python compute it: answer = math.exp(-{s:g}).")
    if _close(value, -s):
        return wrong(f"{value:g} = -logit_scale = log τ: one exp away from τ.", "Exponentiate: τ = exp(-logit_scale).")
    if value <= 0:
        return wrong(f"τ must be positive, got {value:g}: that is one reason CLIP stores log(1/τ).",
                     "τ = exp(-logit_scale) is positive for any logit_scale.")
    if value > 1:
        return wrong(f"τ = {value:g} would be above 1, outside the [0.01, 1] CLIP keeps τ in: numbers above 1 are "
                     "usually the multiplier 1/τ.", "τ = exp(-logit_scale) is below 1 whenever logit_scale > 0.")
    return wrong(f"{value:g} is not the τ behind logit_scale = {s:g}.", "τ = exp(-logit_scale).")


def check_logit_scale_bounds(answer) -> Feedback:
    """The clamp keeps τ in [0.01, 1]; in logit_scale units that is (low, high) = (0, ln 100)."""
    if answer is None:
        return not_attempted("a pair (low, high): the range the clamp keeps logit_scale in")
    if isinstance(answer, dict):
        return wrong("expected a pair (low, high), got a dict.", "For example answer = (0.0, 1.0).")
    if isinstance(answer, str):
        return wrong(f"expected a pair (low, high) of numbers, got a string ({answer!r}).",
                     "Remove the quotes: answer = (low, high), two numbers Python computes.")
    try:
        values = list(answer)
    except TypeError:
        return wrong(f"expected a pair (low, high) of numbers, got {answer!r}.", "For example answer = (0.0, 1.0).")
    if len(values) != 2:
        return wrong(f"expected a pair (low, high), got {len(values)} value{'' if len(values) == 1 else 's'}.",
                     "Two numbers: answer = (low, high).")
    low, high = (number(v) for v in values)
    if low is None or high is None:
        return wrong(f"expected two numbers, got {answer!r}.", "For example answer = (0.0, 1.0).")
    if not (math.isfinite(low) and math.isfinite(high)):
        return wrong(f"({low}, {high}) is not a pair of finite numbers: log(0) = -inf, or an overflow.",
                     "logit_scale = log(1/τ): compute it at τ = 1 and at τ = 0.01.")
    lo, hi = 0.0, math.log(100)
    if _close(low, lo) and _close(high, hi):
        return correct(f"logit_scale ∈ [0, ln 100 = {hi:.3f}] ⇔ 1/τ ∈ [1, 100] ⇔ τ ∈ [0.01, 1].")
    if _close(low, hi) and _close(high, lo):
        return wrong("right numbers, wrong order: low first.", "answer = (low, high).")
    if _rounded(low, lo) and _rounded(high, hi):
        return wrong(f"({low:g}, {high:g}) is (0, ln 100 = {hi:.4f}) rounded: right idea, too few digits to check.",
                     "Let Python compute it: answer = (math.log(1 / 1.0), math.log(1 / 0.01)).")
    if {round(low, 4), round(high, 4)} == {0.01, 1.0}:
        return wrong("those are the bounds on τ itself; the question asks about logit_scale = log(1/τ).",
                     "Apply log(1/τ) to each bound (and mind which becomes the lower one).")
    if {round(low, 4), round(high, 4)} == {1.0, 100.0}:
        return wrong("those are the bounds on the multiplier 1/τ = exp(logit_scale), not on logit_scale.",
                     "Take the logarithm of each.")
    if _close(low, -hi) and _close(high, lo):
        return wrong("those are the bounds on log τ; CLIP stores log(1/τ) = -log τ.",
                     "Flip the sign of each bound (and the order).")
    if _close(low, lo) and _close(high, -hi):
        return wrong(f"({low:g}, {high:.4g}) are log τ at τ = 1 and at τ = 0.01; CLIP stores log(1/τ) = -log τ.",
                     "Flip the sign of each bound: log(1/1) and log(1/0.01).")
    if _close(low, lo) and _close(high, math.log10(100)):
        return wrong("ln, not log10: PyTorch's log and exp are natural.", "math.log(100) ≈ 4.605.")
    if _close(low, lo) and _close(high, 100.0):
        return wrong("(0, 100) mixes units: 0 is a logit_scale bound but 100 is the bound on 1/τ.",
                     "The upper bound on logit_scale is log(100) ≈ 4.605.")
    if _close(low, lo) and _close(high, math.log(1 / 0.07)):
        return wrong(f"({low:g}, {high:.4g}) is not the range of logit_scale: {high:.4g} = log(1/0.07) is where "
                     "logit_scale *starts*, not its upper bound.", "The upper bound is log(1/0.01) = log(100).")
    if low > high:
        return wrong(f"({low:g}, {high:g}) is not the range of logit_scale, and low > high: the pair is in the "
                     "wrong order too.", "answer = (low, high), the smaller first; logit_scale = log(1/τ).")
    if _close(low, lo):
        return wrong(f"({low:g}, {high:g}) is not the range of logit_scale: the low bound is right, the high one "
                     "is not.", "The high bound belongs to the smallest τ, 0.01: log(1/0.01).")
    if _close(high, hi):
        return wrong(f"({low:g}, {high:g}) is not the range of logit_scale: the high bound is right, the low one "
                     "is not.", "The low bound belongs to the largest τ, 1: log(1/1).")
    return wrong(f"({low:g}, {high:g}) is not the range of logit_scale.",
                 "logit_scale = log(1/τ); compute it at τ = 1 and at τ = 0.01.")
