"""Lesson 08 exercise: prompt ensembling by hand.

`check_prompt_ensemble(fn)` gives your `fn(prompt_features)` a tensor (C classes, K templates, D)
of L2-normalised prompt embeddings and expects one L2-normalised class embedding per class (C, D):
the mean over templates, normalised again, as evaluate.zero_shot_classifier computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Feedback, check_function, correct, not_attempted, wrong


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
    try:
        out = answer(x.clone())
    except Exception as e:  # the learner's code: report, don't crash the lesson
        return wrong(f"your function raised {type(e).__name__}: {e}", "prompt_features has shape (C, K, D).")
    if not isinstance(out, torch.Tensor):
        try:
            out = torch.as_tensor(out, dtype=x.dtype)
        except Exception:
            return wrong(f"your function returned a {type(out).__name__}, not a tensor.", "Return a (C, D) tensor.")
    out = out.to(x.dtype)
    mean = x.mean(dim=1)                                              # (C, D)
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
    if _close(out, F.normalize(mean, dim=-1)):
        return correct("mean over templates, then back onto the unit sphere: CLIP's prompt ensembling.")
    return wrong("these are not the normalised mean of each class's template embeddings.",
                 "F.normalize(prompt_features.mean(dim=1), dim=-1).")
