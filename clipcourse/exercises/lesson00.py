"""Checker for lesson 00 (welcome): the cosine similarity of two vectors."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from . import Feedback, correct, not_attempted, wrong

# The two vectors of the exercise (lengths 3 and 7, so the arithmetic stays friendly).
A = (1.0, 2.0, 2.0)
B = (2.0, 3.0, 6.0)


def _as_number(answer) -> float | None:
    """A float from a number or a one-element tensor; None if the answer is not a single number."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, numbers.Real):              # int, float, numpy's float32 and the like
        return float(answer)
    if isinstance(answer, torch.Tensor) and answer.numel() == 1 and answer.is_floating_point():
        return float(answer.detach())
    if isinstance(answer, np.ndarray) and answer.size == 1 and answer.dtype.kind == "f":
        return float(answer.reshape(()))              # numpy's 0-d arrays: tensor.numpy() of the answer
    return None


def check_cosine_similarity(answer, a=A, b=B) -> Feedback:
    """Is `answer` the cosine similarity of the vectors a and b?"""
    if answer is None:
        return not_attempted("the cosine similarity of a and b (a number)")
    if isinstance(answer, torch.Tensor) and answer.numel() != 1:
        return wrong(f"expected a single number, got a tensor of shape {tuple(answer.shape)}.",
                     "Sum the element-wise products to get one number: (a * b).sum().")
    if isinstance(answer, torch.Tensor) and not answer.is_floating_point():
        return wrong(f"got an integer tensor ({answer.dtype}); a cosine similarity is a fraction.",
                     "Use float vectors, e.g. torch.tensor([1., 2., 2.]).")
    value = _as_number(answer)
    if value is None:
        if isinstance(answer, str):
            return wrong(f"expected a number, got a string ({answer!r}).",
                         "Remove the quotes: compute the number, e.g. answer = (a * b).sum() / (a.norm() * b.norm()).")
        if isinstance(answer, (list, tuple)):
            return wrong(f"expected a single number, got a {type(answer).__name__} of {len(answer)} items.",
                         "Sum the element-wise products and divide by both lengths: one number.")
        return wrong(f"expected a number, got {type(answer).__name__}.", "Use a float or a 0-d tensor.")
    if not math.isfinite(value):
        return wrong(f"your answer is {value}: a division by zero (0 / 0 gives NaN), or a length computed as 0.",
                     "The lengths of a and b are 3 and 7: check how you compute a.norm() and b.norm().")
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    dot, na, nb = float(a @ b), float(a.norm()), float(b.norm())
    cos = dot / (na * nb)
    if abs(value - cos) <= 5e-4:
        where = ("almost the same direction" if cos > 0.9 else "roughly the same way" if cos > 0.3
                 else "nearly perpendicular directions" if cos > -0.3 else "roughly opposite ways")
        return correct(f"cos(a, b) = {dot:.4g} / ({na:.4g} × {nb:.4g}) = {cos:.4f}: the vectors point in {where}.")
    mistakes = [
        (dot, "that is the dot product a · b: you did not divide by the lengths of the vectors.",
         "Divide by a.norm() * b.norm(), or normalise both vectors first."),
        (dot / na, "you divided by the length of a only.", "Divide by the length of b too."),
        (dot / nb, "you divided by the length of b only.", "Divide by the length of a too."),
        (dot / na * nb, "you divided by the length of a, then multiplied by the length of b: without parentheses, "
         "x / a.norm() * b.norm() is (x / a.norm()) * b.norm().", "Put parentheses around the product of the lengths."),
        (dot / nb * na, "you divided by the length of b, then multiplied by the length of a: without parentheses, "
         "x / b.norm() * a.norm() is (x / b.norm()) * a.norm().", "Put parentheses around the product of the lengths."),
        (dot / len(a) / (na * nb), "you took the mean of the products, (a * b).mean(): the dot product is their sum.",
         "Use (a * b).sum(), or a @ b."),
        (dot / float(a.abs().sum() * b.abs().sum()), "you used the sum of the entries (the L1 norm) as the length.",
         "The length is the square root of the sum of squares: a.norm() = (a * a).sum().sqrt()."),
        (dot / (na * na * nb * nb), "you divided by the squared lengths (a · a and b · b).",
         "The length is the square root: a.norm() = (a * a).sum().sqrt()."),
        (1 - cos, "that is 1 - cos, the cosine *distance*, not the similarity.", "Drop the '1 -'."),
        (math.acos(cos), "that is the angle between the vectors in radians, not its cosine.",
         "The cosine similarity is cos(angle) = a · b / (|a| |b|)."),
        (math.degrees(math.acos(cos)), "that is the angle between the vectors in degrees, not its cosine.",
         "The cosine similarity is cos(angle) = a · b / (|a| |b|)."),
        (float((a - b).norm()), "that is the Euclidean distance |a - b|, not the cosine similarity.",
         "Use the dot product divided by both lengths."),
        (-cos, "the sign is flipped: that is minus the cosine similarity.", "Drop the minus sign."),
        (cos * cos, "that is the squared cosine.", "Don't square it: cos = a · b / (|a| |b|)."),
        (dot / (na + nb), "you divided by the sum of the lengths; the cosine divides by their product.",
         "a.norm() * b.norm(), not a.norm() + b.norm()."),
        (dot / float((a * a).sum() + (b * b).sum()), "you divided by the sum of the squared lengths.",
         "Divide by the product of the lengths: a.norm() * b.norm()."),
        (1 / cos, "that is 1 / cos: the fraction is upside down.", "Dot product on top, the lengths below."),
    ]
    for target, message, hint in mistakes:
        if abs(value - target) <= 5e-4 * max(1.0, abs(target)):
            return wrong(message, hint)
    if value == int(value) and cos != int(cos) and -1.0 <= value <= 1.0:
        return wrong(f"a whole number ({value:g}): somewhere a result was rounded to an integer "
                     "(// instead of /, int(), round(), or integer vectors).",
                     "Use float vectors and / for the division.")
    if abs(value - cos) <= 1e-2:
        return wrong(f"close ({value:.4f}), but rounded too much, or computed in low precision (bfloat16).",
                     "Keep at least three decimals, in float32.")
    if not -1.0 <= value <= 1.0:
        return wrong(f"{value:.4g} is outside [-1, 1], where every cosine similarity lies.",
                     "Divide the dot product by the product of the two lengths.")
    return wrong(f"{value:.4f} is not the cosine similarity of a and b.",
                 "cos(a, b) = (a * b).sum() / (a.norm() * b.norm()).")
