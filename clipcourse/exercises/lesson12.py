"""Lesson 12, τ and the shape of the space: checkers for the exercises.

1. `check_modality_gap`: the distance between the centroids of `exercise_features()`'s image and text
   embeddings, a number.
2. `check_hardest_negative`: a function that returns, for every row of a similarity matrix, the column of
   its hardest negative (the most similar caption that is not its own).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import Feedback, check_function, correct, not_attempted, wrong
from ._symptoms import call, explain_exception, number

N, DIM = 12, 8


def exercise_features() -> tuple[torch.Tensor, torch.Tensor]:
    """Exercise 1's embeddings: 12 images and their 12 captions, (12, 8) each, L2-normalised, float64,
    with a modality gap (each set leans its own way)."""
    g = torch.Generator().manual_seed(12)
    base = torch.randn(N, DIM, generator=g, dtype=torch.float64)
    lean = F.normalize(torch.randn(2, DIM, generator=g, dtype=torch.float64), dim=-1)
    img = F.normalize(base + 1.5 * lean[0] + 0.3 * torch.randn(N, DIM, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(base + 1.5 * lean[1] + 0.3 * torch.randn(N, DIM, generator=g, dtype=torch.float64), dim=-1)
    return img, txt


def _close(a: float, b: float) -> bool:
    return math.isfinite(a) and math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)


def _gap_mistakes(img: torch.Tensor, txt: torch.Tensor) -> list[tuple[float, str, str]]:
    """(value, message, hint) of the usual wrong gaps, computed on these embeddings."""
    ci, ct = img.mean(dim=0), txt.mean(dim=0)                      # (D,) the centroids
    gap = float((ci - ct).norm())
    cos = float(F.cosine_similarity(ci, ct, dim=0))
    return [
        (gap ** 2, "that is the squared distance between the centroids.", "Take the square root: torch.linalg.norm(...)."),
        (float((img - txt).norm(dim=1).mean()),
         "that is the mean distance between each image and its own caption (alignment), not between the centroids.",
         "Average each set first, then take one distance: (img.mean(0) - txt.mean(0)).norm()."),
        (float((img - txt).norm(dim=1).square().mean()),
         "that is the mean squared distance between each image and its own caption (Wang & Isola's alignment).",
         "Average each set first, then take one distance: (img.mean(0) - txt.mean(0)).norm()."),
        (float((F.normalize(ci, dim=0) - F.normalize(ct, dim=0)).norm()),
         "you normalised the centroids before measuring: that is the distance between their directions only.",
         "The centroids of unit vectors lie inside the sphere; measure them as they are."),
        (float((img.mean(dim=1) - txt.mean(dim=1)).norm()),
         "you averaged along dim=1 (the features of each embedding) instead of over the embeddings.",
         "The centroid is the mean over rows: img.mean(dim=0), shape (D,)."),
        (float((img.sum(dim=0) - txt.sum(dim=0)).norm()),
         f"you summed the embeddings instead of averaging them ({len(img)} times the gap).",
         "A centroid is a mean: img.mean(dim=0)."),
        (cos, "that is the cosine between the two centroids, not the distance between them.",
         "The gap is a length: (img.mean(0) - txt.mean(0)).norm()."),
        (1 - cos, "that is 1 minus the cosine between the centroids, a cosine distance; Liang et al. measure the "
         "Euclidean distance.", "(img.mean(0) - txt.mean(0)).norm()."),
        (float((img @ txt.T).mean()), "that is the mean cosine similarity between every image and every caption.",
         "The gap is a distance between two points, the centroids: (img.mean(0) - txt.mean(0)).norm()."),
        (float((ci - ct).abs().sum()), "that is the L1 distance (sum of absolute differences) between the centroids.",
         "Use the Euclidean length: .norm()."),
        (float(ci.norm() - ct.norm()), "that is the difference of the two centroids' lengths, not the length of their "
         "difference.", "Subtract first, then take one length: (img.mean(0) - txt.mean(0)).norm()."),
        (float(img.mean() - txt.mean()), "you averaged every number of each set (.mean() without dim): one number per "
         "set, not a centroid.", "The centroid is a point with D coordinates, the mean over rows: img.mean(dim=0)."),
        (float(torch.cdist(img, txt).mean()), "that is the mean distance between every image and every caption, not "
         "the distance between the two centroids.", "Average each set first, then take one distance: "
         "(img.mean(0) - txt.mean(0)).norm()."),
        (float((img * txt).sum(dim=1).mean()), "that is the mean cosine between each image and its own caption.",
         "The gap is a distance between two points, the centroids: (img.mean(0) - txt.mean(0)).norm()."),
    ]


def check_modality_gap(answer) -> Feedback:
    """The modality gap of exercise_features(): ‖mean(image) - mean(text)‖, one number."""
    if answer is None:
        return not_attempted("the distance between the image centroid and the text centroid (a number)")
    img, txt = exercise_features()
    gap = float((img.mean(dim=0) - txt.mean(dim=0)).norm())
    if hasattr(answer, "distance") and hasattr(answer, "vector"):
        return wrong("that is what diagnostics.modality_gap returns (a ModalityGap, not a number); this exercise asks "
                     "you to compute the distance by hand.",
                     "Average each set over its rows, then take the length of the difference: "
                     "(ex_img.mean(dim=0) - ex_txt.mean(dim=0)).norm().item().")
    if type(answer).__module__ == "numpy" and getattr(answer, "size", 1) > 1:
        answer = torch.as_tensor(answer)                            # a numpy array: read it as the tensor it came from
    if isinstance(answer, torch.Tensor) and answer.numel() == DIM:
        vector = (img.mean(dim=0) - txt.mean(dim=0))
        if torch.allclose(answer.detach().double().flatten().abs(), vector.abs(), rtol=1e-3, atol=1e-6):
            return wrong("that is the gap *vector* (D numbers); the gap is its length.", "Add .norm() at the end.")
        return wrong(f"expected one number, got a tensor of {DIM} numbers.",
                     "The gap is one distance: (img.mean(0) - txt.mean(0)).norm().")
    if isinstance(answer, torch.Tensor) and answer.numel() == N:
        return wrong(f"expected one number, got a tensor of {N} numbers, one per pair.",
                     "Average each set over its rows first (the centroids), then take one distance.")
    value = number(answer)
    if value is None:
        if isinstance(answer, str):
            return wrong(f"expected a number, got a string ({answer!r}).", "Remove the quotes and compute it.")
        return wrong(f"expected a number, got a {type(answer).__name__}.",
                     "For example answer = (img.mean(0) - txt.mean(0)).norm().item().")
    if not math.isfinite(value):
        return wrong(f"the gap came out as {value}: check for a division by zero or a log of 0.",
                     "(img.mean(0) - txt.mean(0)).norm() needs nothing but a mean and a length.")
    if _close(value, gap):
        return correct(f"the centroids are {gap:.3f} apart (two opposite points of the sphere would be 2 apart).")
    for wrong_value, message, hint in _gap_mistakes(img, txt):
        if _close(abs(value), abs(wrong_value)):                    # either order of the subtraction
            return wrong(f"{value:.4g}: {message}", hint)
    if value < 0:
        return wrong(f"a distance cannot be negative, got {value:.4g}.", "(img.mean(0) - txt.mean(0)).norm().")
    return wrong(f"{value:.4g} is not the distance between the centroids.",
                 "The centroid of a set is the mean of its rows; the gap is the length of the difference of the two.")


def _test_matrix(n: int, seed: int, negative_rows: bool) -> torch.Tensor:
    """A similarity matrix whose diagonal is the largest entry of most rows. With `negative_rows`, row 1 has
    every negative below -0.3 and its positive at 0.9, so zeroing the diagonal, or subtracting 1 from it,
    instead of masking it, still picks the positive; in row 3 every negative lies in (-0.15, -0.05), so
    zeroing picks the positive there too, and subtracting 1 does not."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, n, generator=g, dtype=torch.float64) * 1.2 - 0.6               # (n, n) in [-0.6, 0.6]
    s.fill_diagonal_(0.8)
    if negative_rows:
        s[1] = -0.3 - 0.5 * torch.rand(n, generator=g, dtype=torch.float64)       # every negative below 0
        s[1, 1] = 0.9                                                              # 0.9 - 1 still wins
        s[3] = -0.15 + 0.1 * torch.rand(n, generator=g, dtype=torch.float64)       # 0 wins, 0.8 - 1 does not
        s[3, 3] = 0.8
    s[2, 5 % n] = 0.95                                                             # a negative above its positive
    return s


def _indices(out, n: int) -> tuple[torch.Tensor | None, Feedback | None]:
    """The learner's output as a (n,) long tensor, or what is wrong with it."""
    if isinstance(out, torch.return_types.max):
        return None, wrong("your function returned the (values, indices) pair of .max().",
                           "Return the indices only: .max(dim=1).indices, or .argmax(dim=1).")
    if isinstance(out, (list, tuple)) or type(out).__module__ == "numpy":     # np.argmax(..., axis=1) too
        try:
            out = torch.tensor(out)
        except (TypeError, ValueError, RuntimeError):
            return None, wrong(f"your function returned a {type(out).__name__} that is not a list of numbers.",
                               "Return a tensor of column indices, shape (B,).")
    if not isinstance(out, torch.Tensor):
        return None, wrong(f"your function returned a {type(out).__name__}, not a tensor of indices.",
                           "Return sims_without_positives.argmax(dim=1), shape (B,).")
    if tuple(out.shape) != (n,):
        return None, wrong(f"your function returned shape {tuple(out.shape)}; expected ({n},), one column per row "
                           f"(the input was {n} x {n}).", "argmax(dim=1) gives one index per row.")
    if out.is_floating_point():
        if torch.equal(out, out.round()) and (out >= 0).all() and (out < n).all():
            return out.long(), None
        return None, wrong("your function returned similarities (floating-point numbers), not column indices.",
                           "Use .argmax(dim=1), or the .indices of .max(dim=1).")
    return out.long(), None


def _masked(s: torch.Tensor) -> torch.Tensor:
    return s.masked_fill(torch.eye(len(s), dtype=torch.bool), -math.inf)


def check_hardest_negative(answer) -> Feedback:
    """A function sims (B, B) -> (B,): for row i, the column j ≠ i with the largest similarity."""
    early = check_function(answer, "a function hardest_negative(sims) that returns a (B,) tensor of column indices",
                           "Define a function and set answer = hardest_negative (no parentheses).")
    if early is not None:
        return early
    for n, seed in ((6, 0), (9, 1)):
        sims = _test_matrix(n, seed, negative_rows=True)
        given = sims.clone()
        out, err = call(answer, given)
        if err is not None:
            feedback = explain_exception(err, f"on a {n} x {n} similarity matrix, ")
            if "only supports boolean masks" in str(err):
                feedback.hint = ("torch.eye(B) holds floats (1.0 and 0.0); a mask must be boolean: "
                                 "torch.eye(B, dtype=torch.bool), or torch.eye(B).bool().")
            elif n != 6:                       # it ran on the 6 x 6 matrix: a size written into the code
                feedback.hint = ("It worked on a 6 x 6 matrix but not on this one: is a batch size written into "
                                 "your code? Use len(sims) or sims.shape[0].")
            return feedback
        if not torch.equal(given, sims):
            return wrong("your function changed the similarity matrix it was given (an in-place operation such as "
                         "fill_diagonal_ or masked_fill_).",
                         "Work on a copy: sims.masked_fill(mask, -inf) (no trailing underscore) returns a new tensor.")
        got, problem = _indices(out, n)
        if problem is not None:
            return problem
        want = _masked(sims).argmax(dim=1)
        if torch.equal(got, want):
            continue
        rows = torch.arange(n)
        zeroed = sims.clone().fill_diagonal_(0).argmax(dim=1)
        if torch.equal(got, (sims - torch.eye(n, dtype=sims.dtype)).argmax(dim=1)):
            return wrong("you subtracted 1 from the positives before the argmax. A cosine similarity can be as large "
                         "as 1: in row 1 here the positive is 0.9 and every negative is below -0.3, so 0.9 - 1 still "
                         "wins and you return the row's own caption.",
                         "Mask the diagonal with -inf, so that no value of the positive can win: "
                         "sims.masked_fill(torch.eye(B, dtype=torch.bool), float('-inf')).")
        if torch.equal(got, zeroed):
            return wrong("you set the positives to 0 before the argmax; in a row whose negatives are all below 0 "
                         f"(rows 1 and 3 here) the positive still wins, so you return the row's own caption.",
                         "Mask the diagonal with -inf, not 0: sims.masked_fill(torch.eye(B, dtype=torch.bool), "
                         "float('-inf')).")
        if torch.equal(got, sims.argmax(dim=1)) or torch.equal(got, rows):
            return wrong("your function returns the row's own caption (the positive, on the diagonal) for some rows.",
                         "Exclude the diagonal before the argmax: fill it with -inf.")
        if torch.equal(got, _masked(sims).argmax(dim=0)) or torch.equal(got, sims.clone().fill_diagonal_(0).argmax(dim=0)):
            return wrong("you took the argmax down each column (dim=0): the hardest image for each caption.",
                         "Row i is image i: argmax(dim=1).")
        if torch.equal(got, _masked(-sims).argmax(dim=1)) or torch.equal(got, sims.clone().fill_diagonal_(math.inf).argmin(dim=1)):
            return wrong("you picked the *least* similar negative (argmin): the easiest one, not the hardest.",
                         "The hardest negative has the largest similarity: argmax.")
        if torch.equal(got, sims.argsort(dim=1, descending=True, stable=True)[:, 1]):
            return wrong("you took each row's second-largest similarity (topk(2) or a sort): that assumes the positive "
                         "is the largest, but in row 2 here a negative (+0.95) lies above the positive (+0.80), so the "
                         "second-largest is the positive itself. Such negatives are the ones this lesson looks for.",
                         "Exclude the diagonal whatever its value: fill it with -inf, then argmax(dim=1).")
        off = ~torch.eye(n, dtype=torch.bool)
        if torch.equal(got, sims[off].view(n, n - 1).argmax(dim=1)):
            return wrong("you removed the diagonal (a (B, B - 1) matrix) and returned positions in the shorter rows: "
                         "for a column to the right of the diagonal that position is one less than the column.",
                         "Keep the columns where they are: fill the diagonal with -inf instead of removing it.")
        if torch.equal(got, _masked(sims.abs()).argmax(dim=1)):
            i = int((got != want).nonzero()[0])
            return wrong(f"you ranked the negatives by the size of their similarity (abs): in row {i} you pick column "
                         f"{int(got[i])} at {float(sims[i, got[i]]):+.2f}, a caption pointing away from the image, "
                         f"over column {int(want[i])} at {float(sims[i, want[i]]):+.2f}.",
                         "The hardest negative is the most similar one: the largest similarity, sign included.")
        if (got == rows).any():
            return wrong(f"your function returns the row's own caption in row(s) {rows[got == rows].tolist()}.",
                         "Exclude the diagonal before the argmax: fill it with -inf.")
        if (got < 0).any() or (got >= n).any():
            return wrong(f"some indices are not columns of a {n} x {n} matrix: {got.tolist()}.",
                         "argmax(dim=1) returns indices from 0 to B - 1.")
        bad = int((got != want).nonzero()[0])
        return wrong(f"on a {n} x {n} matrix, row {bad}'s hardest negative is column {int(want[bad])} "
                     f"(similarity {float(sims[bad, want[bad]]):+.2f}), but your function says {int(got[bad])} "
                     f"({float(sims[bad, got[bad]]):+.2f}).",
                     "Mask the diagonal with -inf, then argmax(dim=1); nothing may depend on the matrix's size.")
    return correct("for every row the most similar caption that is not its own: the positive never wins, even in a "
                   "row whose negatives are all below 0, and a negative ranked above its positive (row 2) is found.")
