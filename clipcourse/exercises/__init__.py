"""Checkers for the lessons' exercises: they say *what* is wrong, not only *that* it is wrong.

One module per lesson (`exercises.lesson04`, ...). Each checker takes the learner's answer and
returns a `Feedback`; printing it shows a one-line verdict and, when wrong, a diagnosis and a hint.
An answer left as `None` is "not attempted yet", never an error, so a lesson runs top to bottom
before the learner has done anything.

`expect` is the other kind of check: not of the learner's code but of the lesson's own measured
numbers (a trained model's accuracy, its τ), against the bar the lesson relies on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Feedback:
    """The outcome of a check: passed or not, and what to tell the learner."""

    passed: bool | None          # None: not attempted yet
    message: str
    hint: str = ""
    kind: str = "check"          # "check": right or wrong; "prediction": compared with what a run measured

    def __str__(self) -> str:
        if self.passed is None:
            return f"⏳ Not attempted yet. {self.message}".rstrip()
        if self.kind == "prediction":
            head = "🎯 Your prediction held" if self.passed else "🔎 Your prediction missed"
            return f"{head}: {self.message}" + (f"\n   Why: {self.hint}" if self.hint else "")
        if self.passed:
            return f"✅ Correct. {self.message}".rstrip()
        return f"❌ Not yet: {self.message}" + (f"\n   Hint: {self.hint}" if self.hint else "")

    def _repr_pretty_(self, p, cycle):  # how IPython shows it when a cell ends with a check
        p.text(str(self))

    def __bool__(self) -> bool:
        return bool(self.passed)


def not_attempted(what: str) -> Feedback:
    """The feedback for an answer still set to None."""
    return Feedback(None, f"Replace the None with {what}, then run this cell again.")


def correct(message: str = "") -> Feedback:
    return Feedback(True, message)


def wrong(message: str, hint: str = "") -> Feedback:
    return Feedback(False, message, hint)


def check_function(answer, what: str, hint: str) -> Feedback | None:
    """The first checks of an exercise whose answer is a function: None is "not attempted", a
    non-callable is diagnosed with `hint`; a callable returns None so the real checks can run."""
    if answer is None:
        return not_attempted(what)
    if not callable(answer):
        return wrong(f"expected a function, got a {type(answer).__name__}.", hint)
    return None


def expect(what: str, value: float, *, at_least: float | None = None, at_most: float | None = None) -> None:
    """Check a number a lesson measured against the tolerance it states; raise AssertionError if not.

    A trained model's digits differ a little from computer to computer (bfloat16 or float32, other
    vector instructions, threads, a GPU), so the course's tests do not compare them. This check
    holds on every computer for a correct run, and fails, naming the number and the bar, when
    something is really wrong (a broken loss, a model that did not learn).
    """
    if at_least is None and at_most is None:
        raise ValueError("expect needs at_least, at_most or both")
    value = float(value)
    if (at_least is not None and not value >= at_least) or (at_most is not None and not value <= at_most):
        bounds = " and ".join(f"{word} {bar:.4g}" for word, bar in (("at least", at_least), ("at most", at_most))
                              if bar is not None)
        raise AssertionError(f"{what} is {value:.4g}, but this lesson expects {bounds} on any computer: "
                             f"something in the model, the loss or the training is not working as it should.")
