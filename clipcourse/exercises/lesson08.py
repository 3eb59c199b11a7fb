"""Lesson 08 exercise: prompt ensembling by hand.

`check_prompt_ensemble(fn)` gives your `fn(prompt_features)` a tensor (C classes, K templates, D)
of L2-normalised prompt embeddings and expects one L2-normalised class embedding per class (C, D):
the mean over templates, normalised again, as evaluate.zero_shot_classifier computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Feedback, check_function, correct, not_attempted, wrong
from ._symptoms import call, explain_exception


def _features() -> torch.Tensor:
    g = torch.Generator().manual_seed(8)
    return F.normalize(torch.randn(5, 4, 8, generator=g), dim=-1)   # (C=5, K=4, D=8), not square


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def check_prompt_ensemble(answer) -> Feedback:
    """Check `answer(prompt_features (C, K, D)) -> class embeddings (C, D)`."""
    feedback = check_function(answer, "a function ensemble(prompt_features) that returns one embedding per class",
                              "Define `def ensemble(prompt_features): ...` and set answer = ensemble.")
    if feedback is not None:
        return feedback
    x = _features()
    C, K, D = x.shape
    given = x.clone()
    out, err = call(answer, given)
    if err is not None:  # the learner's code: report, don't crash the lesson
        feedback = explain_exception(err)
        feedback.hint = "prompt_features has shape (C, K, D) = (classes, templates, features). " + feedback.hint
        if "must match the size of tensor" in str(err):    # v / v.norm(dim=-1): (C, D) / (C,) lines up the wrong axes
            feedback.hint += (" A norm over dim=-1 drops that dimension: divide by v.norm(dim=-1, keepdim=True), "
                              "or use F.normalize(v, dim=-1).")
        return feedback
    if out is None:
        return wrong("your function returned None.", "End it with `return` and the (C, D) class embeddings.")
    if not isinstance(out, torch.Tensor):
        try:
            out = torch.as_tensor(out, dtype=x.dtype)
        except Exception:
            return wrong(f"your function returned a {type(out).__name__}, not a tensor.", "Return a (C, D) tensor.")
    if not (out.is_floating_point() or out.is_complex()):
        return wrong(f"your function returned an integer tensor ({out.dtype}).", "Keep the embeddings as floats.")
    out = out.detach().to(x.dtype)
    if not torch.equal(given, x):
        return wrong("your function changed prompt_features in place (/=, .div_(), ...); the caller's tensor must "
                     "stay as it was.", "Write y = y / y.norm(dim=-1, keepdim=True), never y /= ....")
    if not torch.isfinite(out).all():
        return wrong("the class embeddings contain NaN or infinity: a division by a zero length.",
                     "F.normalize(v, dim=-1) guards against that.")
    mean = x.mean(dim=1)                                              # (C, D)
    if out.shape == (C, 1, D):
        return wrong(f"shape {tuple(out.shape)}: the average is right-sized but kept the template dimension "
                     "(keepdim=True).", "Drop it: prompt_features.mean(dim=1), without keepdim.")
    if out.shape == (D, C):
        return wrong(f"shape {tuple(out.shape)}: transposed, features x classes.", "One row per class: (C, D).")
    if out.shape == (C, K, D):
        return wrong(f"shape {tuple(out.shape)}: the same shape as the input; nothing was averaged over the "
                     "templates.", "Average over dim=1, then normalise each class embedding.")
    if out.shape == (K, D):
        return wrong(f"shape {tuple(out.shape)}: you averaged over the classes (dim 0).",
                     "Average over the templates: dim=1.")
    if out.shape == (C, K):
        return wrong(f"shape {tuple(out.shape)}: you averaged over the feature dimension (dim 2).",
                     "Average over the templates: dim=1.")
    if out.shape != (C, D):
        return wrong(f"shape {tuple(out.shape)}, expected (C, D) = {(C, D)}.", "Average over dim=1, then normalise.")
    if _close(out, x[:, 0]):
        return wrong("that is the first template's embedding only.", "Average over all K templates (dim=1).")
    if _close(out, mean) or _close(out, x.sum(dim=1)):
        return wrong("the direction is right but the vectors are not unit length "
                     f"(norms {out.norm(dim=1).min():.2f} to {out.norm(dim=1).max():.2f}).",
                     "Normalise again after averaging: F.normalize(mean, dim=-1). "
                     "An average of unit vectors is shorter than 1.")
    if _close(out, F.normalize(mean, dim=0)):
        return wrong("you normalised the columns (dim 0), not each class embedding.",
                     "F.normalize(..., dim=-1): each row is one class.")
    want = F.normalize(mean, dim=-1)
    if _close(out, want):
        # the same recipe must work for any number of classes and templates
        other = F.normalize(torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(9)), dim=-1)
        out2, err2 = call(answer, other.clone())
        try:
            out2 = torch.as_tensor(out2.detach() if isinstance(out2, torch.Tensor) else out2, dtype=other.dtype)
        except Exception:
            out2 = None
        if err2 is not None or out2 is None or not _close(out2, F.normalize(other.mean(dim=1), dim=-1)):
            return wrong("right for this (5, 4, 8) input, but not for (3 classes, 7 templates, 6 features): "
                         "a size is written into your code.", "Use dim=1 and dim=-1, never the sizes themselves.")
        return correct("mean over templates, then back onto the unit sphere: CLIP's prompt ensembling.")
    if _close(out, -want):
        return wrong("each class embedding points the opposite way: the sign is flipped.", "Drop the minus sign.")
    norms = out.norm(dim=-1, keepdim=True)
    if (norms > 1e-8).all() and _close(out / norms, want):
        return wrong("the directions are right but the vectors are not unit length "
                     f"(norms {norms.min():.2f} to {norms.max():.2f}).",
                     "Finish with F.normalize(..., dim=-1).")
    if _close(out.sort(dim=0).values, want.sort(dim=0).values):
        return wrong("the right class embeddings in the wrong order: row c must be class c.",
                     "Don't sort or shuffle; average over dim=1 keeps the classes in order.")
    if not torch.allclose(out.norm(dim=-1), torch.ones(C, dtype=out.dtype), atol=1e-4):
        return wrong(f"these are not the normalised mean of each class's template embeddings: not unit length "
                     f"(norms {out.norm(dim=-1).min():.2f} to {out.norm(dim=-1).max():.2f}), nor in the direction "
                     "of the templates' mean.",
                     "F.normalize(prompt_features.mean(dim=1), dim=-1).")
    return wrong("these are not the normalised mean of each class's template embeddings.",
                 "F.normalize(prompt_features.mean(dim=1), dim=-1).")
