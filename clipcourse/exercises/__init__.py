"""Checkers for the lessons' exercises: they say *what* is wrong, not only *that* it is wrong.

One module per lesson (`exercises.lesson04`, ...). Each checker takes the learner's answer and
returns a `Feedback`; printing it shows a one-line verdict and, when wrong, a diagnosis and a hint.
An answer left as `None` is "not attempted yet", never an error, so a lesson runs top to bottom
before the learner has done anything.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Feedback:
    """The outcome of a check: passed or not, and what to tell the learner."""

    passed: bool | None          # None: not attempted yet
    message: str
    hint: str = ""

    def __str__(self) -> str:
        if self.passed is None:
            return f"⏳ Not attempted yet. {self.message}".rstrip()
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
