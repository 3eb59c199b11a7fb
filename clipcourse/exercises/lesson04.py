"""Checker for lesson 04 (the contrastive loss): the learner's own CLIP loss function."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..loss import clip_loss
from . import Feedback, check_function, correct, not_attempted, wrong


def _features(batch: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised, partly aligned features: the similarity matrix is far from symmetric."""
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(batch, dim, generator=g), dim=-1)
    txt = F.normalize(img + 0.9 * torch.randn(batch, dim, generator=g), dim=-1)
    return img, txt


def _mistakes(img: torch.Tensor, txt: torch.Tensor, tau: float):
    """(value, message, hint) for the usual mistakes, each computed on these features."""
    sims = img @ txt.T
    logits = sims / tau
    n = len(sims)
    labels = torch.arange(n)
    ce = F.cross_entropy

    def both(lg, lb=labels, **kw):
        return (ce(lg, lb, **kw) + ce(lg.T, lb, **kw)) / 2

    return [
        (both(sims), "you forgot to divide the similarities by τ (this is the loss at τ = 1).",
         "logits = image_features @ text_features.T / temperature."),
        (both(sims * tau), "you multiplied by τ instead of dividing by it.",
         "Divide by τ: a small τ must make the logits large."),
        (ce(logits, labels), "only one direction: image→text. CLIP averages it with text→image.",
         "Add F.cross_entropy(logits.T, labels) and halve the sum."),
        (ce(logits.T, labels), "only one direction: text→image. CLIP averages it with image→text.",
         "Add F.cross_entropy(logits, labels) and halve the sum."),
        (2 * both(logits), "you added the two directions without averaging them (twice the loss).",
         "Divide the sum of the two cross-entropies by 2."),
        (both(logits, reduction="sum"), "you summed over the batch instead of averaging (B times the loss).",
         "F.cross_entropy averages by default: drop reduction='sum'."),
        (2 * both(logits, reduction="sum"), "you summed over the batch and over the two directions.",
         "Average over the batch (the default) and halve the sum of the two directions."),
        (both(logits, torch.zeros(n, dtype=torch.long)),
         "the labels are wrong: all zeros says caption 0 matches every image.",
         "Image i matches caption i: labels = torch.arange(B)."),
        (both(logits, labels.flip(0)), "the labels are wrong: they run backwards.",
         "Image i matches caption i: labels = torch.arange(B)."),
        ((ce(logits.softmax(dim=-1), labels) + ce(logits.T.softmax(dim=-1), labels)) / 2,
         "you applied a softmax before F.cross_entropy, which applies its own (log-)softmax.",
         "Pass the logits themselves to F.cross_entropy."),
        (both(-sims / tau), "the sign of the logits is flipped: higher similarity must mean a higher logit.",
         "logits = +similarity / τ."),
    ]


def check_clip_loss(fn) -> Feedback:
    """Does `fn(image_features, text_features, temperature)` compute CLIP's loss?"""
    feedback = check_function(fn, "your function my_clip_loss",
                              "Pass the function itself: check_clip_loss(my_clip_loss), without calling it.")
    if feedback is not None:
        return feedback
    cases = [(8, 16, 0.1, 0), (5, 12, 0.07, 1), (6, 8, 0.5, 2)]
    for n, dim, tau, seed in cases:
        img, txt = _features(n, dim, seed)
        img_in = img.clone().requires_grad_(True)
        temperature = torch.tensor(tau) if seed == 1 else tau   # a 0-d tensor once, a float otherwise
        try:
            out = fn(img_in, txt.clone(), temperature)
        except Exception as err:  # the learner's code: report any error, do not crash the lesson
            return wrong(f"calling your function raised {type(err).__name__}: {err}",
                         "Test it on small tensors first; image_features and text_features are (B, D).")
        if out is None:
            return not_attempted("the body of my_clip_loss (it still returns None)")
        if not isinstance(out, torch.Tensor):
            return wrong(f"your function returned a {type(out).__name__}, not a tensor.",
                         "Return the tensor itself: .item() or float() cut the graph, so no gradient can flow.")
        if out.numel() != 1:
            return wrong(f"your function returned shape {tuple(out.shape)}; the loss is one number.",
                         "Average over the batch: F.cross_entropy does it by default (no reduction='none').")
        expected = clip_loss(img, txt, tau)
        value = out.detach().reshape(()).float()
        if torch.allclose(value, expected, rtol=1e-4, atol=1e-5):
            if not out.requires_grad:
                return wrong("the value is right, but no gradient flows back to the features.",
                             "Do not .detach() or go through numpy: keep everything in torch.")
            continue
        for target, message, hint in _mistakes(img, txt, tau):
            if torch.allclose(value, target.float(), rtol=1e-4, atol=1e-5):
                return wrong(message, hint)
        return wrong(f"with B = {n} and τ = {tau} your loss is {value.item():.4f}; CLIP's is "
                     f"{expected.item():.4f}.",
                     "logits = sims / τ; labels = arange(B); average the cross-entropies of logits and logits.T.")
    return correct("Your loss equals clip_loss on three batches (with τ as a float and as a tensor).")
