"""Lesson 05, the temperature dial: checkers for the exercises.

Both exercises work on one fixed batch, `exercise_similarities()`: 8 images against 8 captions,
already cosine similarities (so nothing to normalise), positives on the diagonal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import Feedback, correct, not_attempted, wrong

BATCH, DIM = 8, 16
TAU_EFFECTIVE = 0.1       # exercise 1: effective number of negatives of every row at this τ
TAU_GRADIENT = 0.05       # exercise 2: the gradient of row 0's loss at this τ
ROW = 0


def exercise_similarities() -> torch.Tensor:
    """The exercises' batch: (8, 8) cosine similarities, positives on the diagonal, float64."""
    g = torch.Generator().manual_seed(5)
    img = F.normalize(torch.randn(BATCH, DIM, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(img + 0.9 * torch.randn(BATCH, DIM, generator=g, dtype=torch.float64), dim=-1)
    return img @ txt.T


def _as_tensor(answer, shape: tuple[int, ...], what: str,
               matrix_hint: str = "You have a whole matrix; reduce each row to one number (sum over dim=-1)."
               ) -> tuple[torch.Tensor | None, Feedback | None]:
    if not isinstance(answer, torch.Tensor):
        try:
            answer = torch.as_tensor(answer, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            return None, wrong(f"{what} should be a tensor, got {type(answer).__name__}.",
                               f"A tensor of {BATCH} numbers, e.g. computed from exercise_similarities().")
    answer = answer.detach().to(torch.float64).cpu()
    if tuple(answer.shape) != shape:
        hint = f"One number per row of the {BATCH} x {BATCH} batch (or per caption of row {ROW}): shape {shape}."
        if answer.numel() == math.prod(shape):         # e.g. keepdim=True, or autograd through sims[0:1]
            hint = (f"The right count of numbers in another shape (keepdim=True, or a row kept as a matrix): "
                    f"answer.reshape({', '.join(map(str, shape))}).")
        elif answer.numel() == 1:
            hint = "One number for the whole batch? Keep one value per row: reduce over dim=-1 only."
        elif answer.ndim == 2 and len(shape) == 1:
            hint = matrix_hint
        return None, wrong(f"{what} should have shape {shape}, got {tuple(answer.shape)}.", hint)
    if not torch.isfinite(answer).all():
        return None, wrong(f"{what} contains NaN or infinity.",
                           "Entropy needs p * log(p) with 0 * log 0 = 0: torch.special.xlogy(p, p) does that.")
    return answer, None


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(dim=-1)


def reference_effective_negatives(sims: torch.Tensor | None = None, tau: float = TAU_EFFECTIVE) -> torch.Tensor:
    """exp(entropy of softmax(sims / τ)) for every row: (B,)."""
    sims = exercise_similarities() if sims is None else sims
    return _entropy(torch.softmax(sims / tau, dim=-1)).exp()


def _fitted_tau(a: torch.Tensor, s: torch.Tensor) -> float | None:
    """The τ whose effective numbers of s are `a`, if one τ fits every row (exp(H) grows with τ); else None."""
    lo, hi = math.log(1e-4), math.log(1e4)
    for _ in range(80):                                 # bisection on log τ, matching the mean over the rows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reference_effective_negatives(s, math.exp(mid)).mean() < a.mean() else (lo, mid)
    tau = math.exp((lo + hi) / 2)
    if not 1e-3 < tau < 1e3:                            # all ones or all B: a one-hot or a flat row, said below
        return None
    return tau if torch.allclose(a, reference_effective_negatives(s, tau), rtol=1e-3, atol=1e-6) else None


def check_effective_negatives(answer) -> Feedback:
    """Exercise 1: the effective number of negatives exp(H) of every row of the batch at τ = 0.1."""
    if answer is None:
        return not_attempted("a tensor of 8 numbers: exp(entropy) of each row's softmax(sims / τ)")
    a, problem = _as_tensor(answer, (BATCH,), "Your answer")
    if problem is not None:
        return problem
    s = exercise_similarities()
    want = reference_effective_negatives(s)
    if _close(a, want):
        return correct(f"Each image spreads its probability over between {want.min():.1f} and "
                       f"{want.max():.1f} captions at τ = {TAU_EFFECTIVE}.")
    p = torch.softmax(s / TAU_EFFECTIVE, dim=-1)
    h = _entropy(p)
    if _close(a, h):
        return wrong("these are the entropies themselves, in nats.",
                     "The effective number is exp(entropy): torch.exp(H).")
    if _close(a, torch.exp(-h)) or _close(a, 1 / want):
        return wrong("the sign of the entropy is flipped: your numbers are below 1.",
                     "H = -Σ p log p is positive; exp(H) is between 1 and the batch size.")
    if any(_close(a, base ** h) or _close(a, torch.exp(h / math.log(base))) for base in (2, 10)):
        return wrong("the logarithm and the exponential don't match: nats with 2**H, or bits (log2) or log10 "
                     "with exp.", "Use exp(H) with H in nats (natural log), or 2**H with H in bits (log2); "
                     "don't mix them.")
    if _close(a, _entropy(torch.softmax(s, dim=-1)).exp()):
        return wrong("you took the softmax of the raw similarities: τ is missing.",
                     f"Divide the similarities by τ = {TAU_EFFECTIVE} before the softmax.")
    if _close(a, _entropy(torch.softmax(s * TAU_EFFECTIVE, dim=-1)).exp()):
        return wrong("you multiplied by τ; the logits are similarities divided by τ.",
                     "logits = sims / τ: a small τ makes the logits large and the softmax sharp.")
    if _close(a, _entropy(torch.softmax(s / TAU_EFFECTIVE, dim=0).T).exp()):
        return wrong("you normalised the columns (dim=0): that is the text→image direction.",
                     "For each image (row), take the softmax over the captions: dim=-1.")
    if _close(a, _entropy(torch.softmax(s / TAU_EFFECTIVE, dim=0)).exp()):
        return wrong("the softmax normalised the columns (dim=0), but the entropy sums each row: every row's "
                     "'probabilities' no longer add up to 1.",
                     "Take the softmax over the captions of each row: dim=-1, as the entropy's sum.")
    if _close(a, want - 1):
        return wrong("exp(H) - 1: you took the positive away. The lesson's effective number counts every caption "
                     "the row's probability spreads over, the positive included.", "answer = H.exp(), no '- 1'.")
    off = ~torch.eye(BATCH, dtype=torch.bool)
    p_neg = torch.softmax((s / TAU_EFFECTIVE).masked_fill(~off, -math.inf), dim=-1)   # the negatives alone
    if _close(a, _entropy(p_neg).exp()) or _close(a, (-torch.special.xlogy(p, p) * off).sum(dim=-1).exp()):
        return wrong("you left the positive out of the row. The lesson's effective number counts every caption "
                     "the row's probability spreads over, the positive included (so it is never below 1).",
                     "Take the softmax and the entropy over the whole row, diagonal included: answer = H.exp().")
    if _close(a, 1 / (p ** 2).sum(dim=-1)):
        return wrong("that is 1 / Σ p², another 'effective number' (the inverse participation ratio); this "
                     "exercise uses exp(entropy).", "H = -(p * p.log()).sum(-1); answer = H.exp().")
    fitted = _fitted_tau(a, s)
    if fitted is not None:
        if math.isclose(fitted, TAU_EFFECTIVE ** 2, rel_tol=1e-2):
            return wrong(f"these are the effective numbers at τ = {TAU_EFFECTIVE ** 2:g} = τ²: the similarities "
                         "were divided by τ twice (sims /= tau_ex, then softmax(sims / tau_ex)).",
                         "Divide by τ once: p = torch.softmax(sims / tau_ex, dim=-1).")
        return wrong(f"these are the effective numbers at τ ≈ {fitted:.3g}, not at τ = {TAU_EFFECTIVE}.",
                     f"Use tau_ex = exercises.lesson05.TAU_EFFECTIVE = {TAU_EFFECTIVE}: "
                     "softmax(sims / tau_ex, dim=-1).")
    # symptoms: what the numbers look like when no formula matched
    if _close(a.sort().values, want.sort().values):
        return wrong("the right numbers in the wrong order: one per row, row 0 first.",
                     "Don't sort; compute along dim=-1 so that entry i belongs to row i.")
    ratio = (a / want).mean().item()
    if _close(a, want * ratio):
        return wrong(f"the right numbers times {ratio:.4g}: an extra constant factor.",
                     "answer = exp(H) for each row, with no other factor.")
    if (a < 1 - 1e-6).any():
        return wrong(f"some values are below 1 (smallest {a.min():.3g}); exp(H) is at least 1 (all probability on "
                     "one caption).", "H = -Σ p log p ≥ 0, so exp(H) ≥ 1: check the sign of H and that you "
                     "exponentiate it.")
    if (a > BATCH + 1e-6).any():
        return wrong(f"some values are above {BATCH} (largest {a.max():.3g}), the number of captions in a row: "
                     "exp(H) is at most B.", "Take the softmax over one row (dim=-1) and the entropy of that row.")
    if torch.allclose(a, torch.full_like(a, float(BATCH)), rtol=1e-3):
        return wrong(f"every row is at {BATCH}, the uniform distribution: the softmax saw no differences "
                     "(a huge τ, or a softmax over a single value).",
                     f"softmax(sims / τ, dim=-1) with τ = {TAU_EFFECTIVE}.")
    if torch.allclose(a, torch.ones_like(a), rtol=1e-3):
        return wrong("not the expected numbers: every row is at 1, all probability on one caption, as with a one-hot (argmax) or a tiny τ.",
                     f"Use the softmax itself at τ = {TAU_EFFECTIVE}, not its argmax.")
    if (a <= math.log(BATCH) + 1e-6).all() and not (want <= math.log(BATCH)).all():
        return wrong(f"every value is at most ln {BATCH} = {math.log(BATCH):.3f}: these look like entropies, not "
                     "exp(entropy).", "Exponentiate the entropy: torch.exp(H).")
    return wrong("not the expected numbers, and not one of the usual slips.",
                 "p = torch.softmax(sims / tau, dim=-1); H = -(p * p.log()).sum(-1); answer = H.exp().")


def reference_gradient(sims: torch.Tensor | None = None, tau: float = TAU_GRADIENT, row: int = ROW) -> torch.Tensor:
    """∂ℓ_row/∂s_row,j of the row's image→text loss ℓ = -log P_row,row: (P - one_hot) / τ, (B,)."""
    sims = exercise_similarities() if sims is None else sims
    p = torch.softmax(sims[row] / tau, dim=-1)
    return (p - F.one_hot(torch.tensor(row), len(p)).to(p.dtype)) / tau


def check_gradient_weights(answer) -> Feedback:
    """Exercise 2: the gradient of row 0's loss -log P_00 with respect to s_00 .. s_07, at τ = 0.05."""
    if answer is None:
        return not_attempted("a tensor of 8 numbers: ∂(-log P_00)/∂s_0j for j = 0..7")
    a, problem = _as_tensor(answer, (BATCH,), "Your answer",
                            matrix_hint=f"You have a whole matrix; the exercise asks for row {ROW} only: sims[{ROW}].")
    if problem is not None:
        return problem
    s = exercise_similarities()
    want = reference_gradient(s)
    if _close(a, want):
        neg = torch.arange(BATCH) != ROW
        return correct(f"The positive is pulled with {-want[ROW]:.2f}, and the negatives' pushes add "
                       f"up to the same {want[neg].sum():.2f}; the hardest gets {want[neg].max():.2f}.")
    p = torch.softmax(s[ROW] / TAU_GRADIENT, dim=-1)
    one_hot = F.one_hot(torch.tensor(ROW), BATCH).to(p.dtype)
    if _close(a, -want):
        return wrong("the sign is flipped: that is the direction that would raise the loss.",
                     "For a negative j the gradient P_0j / τ is positive: raising s_0j raises the loss.")
    if _close(a, p - one_hot):
        return wrong("the 1/τ is missing.", "The logits are s / τ, so the chain rule brings a factor 1/τ.")
    if _close(a, (p - one_hot) * TAU_GRADIENT):
        return wrong("you multiplied by τ instead of dividing.",
                     "d(s/τ)/ds = 1/τ: divide by τ.")
    if _close(a, p / TAU_GRADIENT):
        return wrong("the negatives are right, but the positive's entry misses the -1.",
                     "ℓ = -s_00/τ + log Σ_j exp(s_0j/τ): the first term adds -1/τ at j = 0.")
    if _close(a, p):
        return wrong("these are the probabilities P_0j, not the gradient.",
                     "The gradient is (P_0j - [j = 0]) / τ.")
    p_wrong_tau = torch.softmax(s[ROW], dim=-1)
    if _close(a, (p_wrong_tau - one_hot) / TAU_GRADIENT) or _close(a, p_wrong_tau - one_hot):
        return wrong("your probabilities come from the raw similarities: τ is missing in the softmax.",
                     "P_0j = softmax(s_0 / τ)_j.")
    # the gradient of the whole CLIP loss (both directions, averaged over the batch), or of the column
    full = s.clone().requires_grad_(True)
    labels = torch.arange(BATCH)
    lg = full / TAU_GRADIENT
    ((F.cross_entropy(lg, labels) + F.cross_entropy(lg.T, labels)) / 2).backward()
    if _close(a, full.grad[ROW]):
        return wrong("that is row 0 of the gradient of the whole CLIP loss (both directions, averaged over the "
                     "batch); the exercise asks for row 0's own image→text loss -log P_00.",
                     "Differentiate only ℓ = -log softmax(s[0] / τ)[0].")
    p_col = torch.softmax(s[:, ROW] / TAU_GRADIENT, dim=0)
    if _close(a, (p_col - one_hot) / TAU_GRADIENT):
        return wrong("that is the text→image gradient of column 0 (caption 0 against all images); the exercise "
                     "asks for row 0, image 0 against all captions.", "Use sims[0], not sims[:, 0].")
    if _close(a.sort().values, want.sort().values):
        return wrong("the right numbers in the wrong order: entry j belongs to caption j.", "Don't sort the result.")
    # symptoms
    if not a.any():
        return wrong("not the expected gradient: every entry is 0, as if the loss did not depend on the similarities.",
                     "ℓ = -log softmax(s[0] / τ)[0]; its gradient is (softmax(s[0] / τ) - one_hot(0)) / τ.")
    twice = reference_gradient(s / TAU_EFFECTIVE)              # exercise 1's sims / tau_ex left in `sims`: tiny
    if torch.allclose(a, twice, rtol=1e-3, atol=1e-6 * twice.abs().max().item()):
        return wrong("your formula is right, but `sims` is not the exercise's batch any more: it was divided by "
                     f"τ = {TAU_EFFECTIVE} in exercise 1 (sims = sims / tau_ex, or sims /= tau_ex), so here it is "
                     "divided twice and the softmax is one-hot.",
                     "Reload it: sims = exercises.lesson05.exercise_similarities(); in exercise 1, put sims / tau_ex "
                     "in a new name (logits = sims / tau_ex).")
    if a.abs().max() < 1e-3 * want.abs().max():                # the ratio test below would pass on atol alone
        return wrong(f"every entry is almost 0 (largest {a.abs().max().item():.3g}): the softmax of row 0 is "
                     "one-hot, as when the similarities are divided by τ more than once, or by a far smaller τ.",
                     f"P_0j = softmax(sims[0] / τ) with τ = {TAU_GRADIENT} and sims = "
                     "exercises.lesson05.exercise_similarities(); the gradient is (P_0j - [j = 0]) / τ.")
    ratio = (a / want).mean().item()
    if _close(a, want * ratio):
        for k, message, hint in (
                (1 / TAU_GRADIENT, "divided by τ twice (by τ²).", "One factor 1/τ from the chain rule, no more."),
                (1 / BATCH, f"divided by B = {BATCH}: that is the share of a batch-averaged loss, not row 0's own "
                            "loss.", "ℓ = -log P_00, no averaging."),
                (0.5, "half the gradient: the two directions' average, or a stray / 2.", "ℓ = -log P_00 alone."),
                (p[ROW].item(), "times P_00: that is the gradient of -P_00, not of -log P_00.",
                 "Differentiate ℓ = -log P_00: the log divides P_00's gradient by P_00.")):
            if math.isclose(ratio, k, rel_tol=1e-3):
                return wrong(f"the right pattern, {message}", hint)
        return wrong(f"the right pattern times {ratio:.4g}: an extra constant factor.",
                     "(softmax(s[0] / τ) - one_hot(0)) / τ, with no other factor.")
    if abs(a.sum().item()) > 1e-3 * a.abs().max().item():
        return wrong(f"your entries sum to {a.sum().item():.4g}; the true gradient sums to 0 (the negatives' pushes "
                     "add up to the positive's pull), because the probabilities sum to 1.",
                     "Check the positive's entry (P_00 - 1) / τ and that the softmax is over all 8 entries.")
    neg = torch.arange(BATCH) != ROW
    if a[ROW] > 0 and (a[neg] <= 0).all():
        return wrong("the positive's entry is positive and the negatives' are negative: the sign is flipped "
                     "somewhere.", "∂ℓ/∂s_00 = (P_00 - 1) / τ < 0 (raising the positive lowers the loss).")
    return wrong("not the expected gradient, and not one of the usual slips.",
                 "Compute it by hand as (softmax(s[0] / τ) - one_hot(0)) / τ, or let autograd do it: "
                 "s = sims[0].clone().requires_grad_(); F.cross_entropy(s[None] / τ, torch.tensor([0])).backward().")
