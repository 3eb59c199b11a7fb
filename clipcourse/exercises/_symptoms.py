"""Shared helpers for the checkers' diagnoses by symptom: call the learner's code safely, read numbers.

A checker first compares the answer with a list of exact wrong formulas; when none matches, it probes
the answer for symptoms (a negative loss, NaN, a loss that ignores the negatives, ...) with these.
"""

from __future__ import annotations

import math
import re

import torch

from . import Feedback, wrong


def call(fn, *args):
    """fn(*args) -> (output, None), or (None, the exception) if the learner's code raised."""
    try:
        return fn(*args), None
    except Exception as err:  # the learner's code: any error is feedback, never a crash
        return None, err


def number(value) -> float | None:
    """A Python float from a number or a one-element floating tensor (or numpy scalar); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor):
        if value.numel() == 1 and not value.is_complex():
            try:
                return float(value.detach().reshape(()))
            except (RuntimeError, TypeError, ValueError):
                return None
        return None
    try:  # numpy scalars and 0-d arrays
        import numpy as np

        if isinstance(value, (np.generic, np.ndarray)) and np.size(value) == 1 and np.isrealobj(value):
            return float(np.asarray(value).reshape(()))
    except (ImportError, TypeError, ValueError):  # pragma: no cover
        pass
    return None


def not_finite(value: float | torch.Tensor) -> str | None:
    """'NaN', 'infinity' or None."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if torch.isnan(t).any():
        return "NaN"
    if torch.isinf(t).any():
        return "infinity"
    return None


def close(a: float, b: float, rel: float = 1e-4, abs_: float = 1e-5) -> bool:
    return math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def explain_exception(err: Exception, context: str = "") -> Feedback:
    """Turn an error raised by the learner's code into a diagnosis: what the message usually means."""
    text = str(err)
    name = type(err).__name__
    first = text.splitlines()[0] if text else ""
    said = f"{context}your function raised {name}: {first}"
    low = text.lower()
    if "leaf variable that requires grad is being used in an in-place operation" in low:
        return wrong(f"{said} — it modifies its inputs in place (x /= ..., x.div_(...), x[...] = ...).",
                     "Never change the tensors you are given: write x = x / x.norm(dim=-1, keepdim=True) "
                     "instead of x /= ..., so autograd (and the caller) keep the originals.")
    if "mat1 and mat2 shapes cannot be multiplied" in low or "size mismatch" in low:
        return _matmul_mismatch(said, matmul_shapes(err))
    if any(phrase in low for phrase in ("expected scalar type long", "expected object of scalar type long",
                                        "for target with class probabilities", "expected target dtype to be long")):
        return wrong(f"{said} — the labels have the wrong dtype.",
                     "Labels are class indices: torch.arange(B) (dtype long), not floats.")
    if "out of bounds" in low and "target" in low:
        return wrong(f"{said} — a label is not a valid column index.", "Labels run from 0 to B - 1: torch.arange(B).")
    if "multi-target not supported" in low or "0d or 1d target" in low:
        return wrong(f"{said} — the labels have the wrong shape.",
                     "One class index per row: labels = torch.arange(B), shape (B,).")
    if "numpy" in low and "requires grad" in low:
        return wrong(f"{said} — you left torch for numpy.",
                     "Stay in torch so gradients can flow: no .numpy(), no np.* on tensors.")
    if re.search(r"must be tensor, not (float|int)", low) or re.search(r"'(float|int)' object has no attribute", low):
        return wrong(f"{said} — a torch function got a plain Python number: the temperature (and any other "
                     "number the checker passes) arrives as a float, not a tensor.",
                     "Use plain arithmetic on it (sims / temperature), math.exp / math.log where you need them, "
                     "or torch.as_tensor(temperature) first.")
    if isinstance(err, NameError):
        return wrong(f"{said} — a name is not defined.",
                     "Run the notebook's import cell first, and check the spelling of every variable.")
    if isinstance(err, ZeroDivisionError):
        return wrong(f"{said}.", "Something you divide by is zero: check what you divide by.")
    if "dimension out of range" in low:
        return wrong(f"{said} — a dim= that the tensor does not have.",
                     "Print the .shape of each tensor: dim=-1 is the last dimension, dim=0 the first.")
    return wrong(said, "Test it on small tensors first and read the error's last line.")


def along_sphere(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The part of grad (N, D) tangent to the unit rows of x (N, D): what normalising x again leaves of it."""
    return grad - (grad * x).sum(-1, keepdim=True) * x


def gradient_differs(grads, ref_grads, features) -> Feedback | None:
    """Feedback if a loss whose value is right has the wrong gradient with respect to unit-length `features`
    (lessons 04 and 09); None when it agrees. Compared along the sphere only: normalising again (dim=-1)
    rightly removes the radial part."""
    if all(torch.allclose(along_sphere(g, x), along_sphere(r, x), rtol=1e-3, atol=1e-5)
           for g, r, x in zip(grads, ref_grads, features)):
        return None
    return wrong("the value is right, but the gradient is not: part of the computation is cut off from "
                 "autograd (.detach(), .data or a tensor rebuilt from numbers).",
                 "Build the whole loss from the input tensors with torch operations.")


def batch_sizes(err: Exception) -> tuple[int, int] | None:
    """(rows, labels) from F.cross_entropy's "Expected input batch_size (r) to match target batch_size (l)", else None."""
    m = re.search(r"expected input batch_size \((\d+)\) to match target batch_size \((\d+)\)", str(err).lower())
    return None if m is None else (int(m.group(1)), int(m.group(2)))


def broadcast_sizes(err: Exception) -> tuple[int, int] | None:
    """(a, b) from torch's "The size of tensor a (a) must match the size of tensor b (b)", else None."""
    m = re.search(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\)", str(err))
    return None if m is None else (int(m.group(1)), int(m.group(2)))


def matmul_shapes(err: Exception) -> tuple[int, int, int, int] | None:
    """(a, b, c, d) from torch's "mat1 and mat2 shapes cannot be multiplied (axb and cxd)", else None."""
    m = re.search(r"\((\d+)x(\d+) and (\d+)x(\d+)\)", str(err))
    return None if m is None else tuple(int(g) for g in m.groups())


def _matmul_mismatch(said: str, shapes: tuple[int, int, int, int] | None) -> Feedback:
    """A matrix product whose inner sizes differ: a missing transpose only when both sides are (rows, D)."""
    if shapes is None:
        return wrong(f"{said} — a matrix product whose inner sizes differ.",
                     "For (B, D) features: image_features @ text_features.T is (B, D) @ (D, B) = (B, B).")
    a, b, c, d = shapes
    if b == d:                                   # (a, D) @ (c, D): the second one needs a transpose
        return wrong(f"{said} — a matrix product of ({a}, {b}) with ({c}, {d}): one side needs a transpose.",
                     "image_features @ text_features.T is (B, D) @ (D, B) = (B, B).")
    return wrong(f"{said} — a matrix product of ({a}, {b}) with ({c}, {d}): the inner sizes {b} and {c} must be "
                 "equal.",
                 "Check which tensors go into the product: features of one width D, the second transposed.")
