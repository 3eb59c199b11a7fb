"""Checker for lesson 11 (binding and hard negatives): the learner's NegCLIP loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..loss import clip_loss, clip_loss_with_hard_negatives
from . import Feedback, check_function, correct, not_attempted, wrong
from ._symptoms import batch_sizes, call, close, explain_exception, not_finite, number


def _features(batch: int, negatives: int, dim: int, seed: int):
    """Normalised image, caption and hard-negative features; each negative lies near a caption."""
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(batch, dim, generator=g), dim=-1)
    txt = F.normalize(img + 0.9 * torch.randn(batch, dim, generator=g), dim=-1)
    near = txt[torch.arange(negatives) % batch]                                # (M, D) a caption each
    neg = F.normalize(near + 0.6 * torch.randn(negatives, dim, generator=g), dim=-1)
    return img, txt, neg


def _mistakes(img, txt, neg, tau):
    """(value, message, hint) for the usual mistakes, each computed on these features."""
    ce = F.cross_entropy
    n = len(img)
    labels = torch.arange(n)
    full = img @ torch.cat([txt, neg]).T / tau                                 # (B, B + M)
    t2i = txt @ img.T / tau                                                    # (B, B)
    own = torch.stack([(img * txt).sum(-1), (img * neg[:n]).sum(-1)], dim=1) / tau if len(neg) == n else None
    both = lambda per_image, per_text, **kw: (ce(per_image, labels, **kw) + ce(per_text, labels, **kw)) / 2
    out = [
        (clip_loss(img, txt, tau), "your loss ignores the hard negatives: it is plain clip_loss.",
         "Put the hard negatives in every image's row: logits (B, B + M) = image_features @ cat([text, negatives]).T / τ."),
        (ce(img @ torch.cat([neg, txt]).T / tau, labels) / 2 + ce(t2i, labels) / 2,
         "the hard negatives come first in each row, so label i now points at a hard negative, not at caption i.",
         "torch.cat([text_features, hard_negative_features]): the true captions first, so labels = arange(B) still work."),
        (ce(full, labels), "only one direction: image→text. NegCLIP averages it with text→image.",
         "Add F.cross_entropy(logits_per_text, labels) on the (B, B) captions-by-images logits, and halve the sum."),
        (ce(t2i, labels), "only text→image, where the hard negatives play no part.",
         "Add the image→text cross-entropy over the B + M captions, and halve the sum."),
        (ce(full, labels) + ce(t2i, labels), "you added the two directions without averaging them (twice the loss).",
         "Divide the sum of the two cross-entropies by 2."),
        ((ce(img @ torch.cat([txt, neg / tau]).T, labels) + ce(t2i, labels)) / 2,
         "only the hard negatives are divided by τ; every logit must be.", "Divide the whole (B, B + M) matrix by τ."),
        ((ce(img @ torch.cat([txt / tau, neg]).T, labels) + ce(t2i, labels)) / 2,
         "the hard negatives' logits were not divided by τ; every logit must be.",
         "Concatenate the features first, then divide the whole (B, B + M) matrix by τ."),
        ((ce(full, labels) + ce(torch.cat([txt, neg]) @ img.T / tau, torch.cat([labels, torch.arange(len(neg)) % n]))) / 2,
         "in text→image you gave each hard negative an image as its right answer: that pulls the wrong caption "
         "towards the picture instead of pushing it away.",
         "A hard negative describes no image, so it gets no row in text→image: use only the B true captions there."),
        (both(full * tau ** 2, t2i * tau ** 2), "you multiplied by τ instead of dividing by it (τ is not CLIP's "
         "logit_scale, which is 1 / τ).", "logits = similarities / temperature."),
        (both(full, img @ txt.T / tau), "your text→image term is image→text again (rows are images): "
         "logits_per_image[:, :B] without its transpose.",
         "logits_per_text = logits_per_image[:, :B].T: one row per true caption, one column per image."),
        (both(full, t2i, reduction="sum"), "you summed over the batch instead of averaging (B times the loss).",
         "F.cross_entropy averages by default: drop reduction='sum'."),
        (both(full.softmax(-1), t2i.softmax(-1)), "you applied a softmax before F.cross_entropy, which applies "
         "log-softmax itself: the probabilities were squashed twice.", "Pass the logits (similarities / τ) straight "
         "to F.cross_entropy."),
    ]
    if own is not None:
        out.append(((ce(own, torch.zeros(n, dtype=torch.long)) + ce(t2i, labels)) / 2,
                    "each image compares its caption with its own hard negative only, not with the other captions "
                    "of the batch.",
                    "Keep the whole row: the B captions and the M hard negatives, logits of shape (B, B + M)."))
        out.append((both(torch.cat([img @ txt.T / tau, own[:, 1:]], dim=1), t2i),
                    "each image's row holds the B captions and its own hard negative only (B + 1 columns); in NegCLIP "
                    "the other pictures' hard negatives are negatives for it too.",
                    "logits_per_image = image @ cat([text, negatives]).T / τ: every image against all B + M captions."))
    return out


_TOL = dict(rtol=1e-4, atol=1e-5)


def _value(fn, img, txt, neg, tau):
    """The learner's loss as a float, or None if it raised or did not return one number."""
    out, err = call(fn, img.clone(), txt.clone(), neg.clone(), tau)
    if err is not None:
        return None
    return number(out) if not isinstance(out, torch.Tensor) or out.numel() == 1 else None


def _returned(out) -> Feedback | None:
    """What is wrong with the type or shape of what the learner's function returned."""
    if not isinstance(out, torch.Tensor):
        if number(out) is not None:
            return wrong(f"your function returned a {type(out).__name__}, not a tensor.",
                         "Return the tensor itself: .item() or float() cut the graph, so no gradient can flow.")
        return wrong(f"your function returned a {type(out).__name__}, not a tensor.", "Return the loss as a 0-d tensor.")
    if out.numel() != 1:
        return wrong(f"your function returned shape {tuple(out.shape)}; the loss is one number.",
                     "Average each direction over the batch (F.cross_entropy does) and the two directions together.")
    if not out.is_floating_point():
        return wrong(f"your function returned an integer tensor ({out.dtype}): a loss is a real number.",
                     "Do not round, compare or argmax: cross-entropy gives a float.")
    return None


def _explain(err: Exception, context: str, batch: int, negatives: int) -> Feedback:
    """An error the learner's code raised; a wrong number of labels is traced to the direction it comes from."""
    sizes = batch_sizes(err)
    if sizes is None:
        return explain_exception(err, context)
    rows, count = sizes
    said = explain_exception(err, context).message + " — the logits and the labels have different numbers of rows."
    if negatives and rows == batch and count == batch + negatives:
        return wrong(said + " Your labels have B + M entries, one per column; a label is one per row (image), and "
                     "no label points at a hard negative.",
                     "labels = torch.arange(B) in both directions; the hard negatives are extra columns only.")
    if negatives and rows == batch + negatives and count == batch:
        return wrong(said + " In text→image only the B true captions have a row (a hard negative matches no image).",
                     "logits_per_text = logits_per_image[:, :B].T, shape (B, B), with labels = torch.arange(B).")
    return wrong(said + f" Both directions have B = {batch} rows (the images, then the true captions), whatever M is.",
                 "labels = torch.arange(B) with B = len(image_features); logits (B, B + M) and (B, B).")


def _diagnose(fn, img, txt, neg, tau, value: float, expected: float) -> Feedback:
    """No exact formula matched: probe the learner's function for symptoms."""
    if value < -1e-6:
        return wrong(f"your loss is negative ({value:.4f}), but a cross-entropy -log P is never negative.",
                     "Pass the logits to F.cross_entropy; no softmax before it, no minus sign missing.")
    other = _value(fn, img, txt, neg, tau * 2)
    if other is not None and close(other, value):
        return wrong(f"your loss does not change when τ changes (the same {value:.4f} at τ = {tau} and at {2 * tau}).",
                     "Divide the similarities by the temperature argument: logits = sims / temperature.")
    hardest = img[torch.arange(len(neg)) % len(img)]                   # (M, D) negatives as close as can be
    moved = _value(fn, img, txt, hardest, tau)
    if moved is not None and close(moved, value):
        return wrong("your loss does not change when the hard negatives change: they play no part in it.",
                     "Concatenate them to the captions in the image→text logits: (B, B + M).")
    shuffled = _value(fn, img, txt.roll(1, dims=0), neg, tau)
    if shuffled is not None and close(shuffled, value):
        return wrong("your loss does not change when the captions are shuffled against the images: it does not know "
                     "which caption belongs to which image.", "Caption i matches image i: labels = torch.arange(B).")
    return wrong(f"with B = {len(img)}, M = {len(neg)} and τ = {tau} your loss is {value:.4f}; NegCLIP's is {expected:.4f}.",
                 "logits_per_image = image @ cat([text, negatives]).T / τ (B, B + M); logits_per_text = image @ text.T / τ, "
                 "transposed (B, B); labels = arange(B); average the two cross-entropies.")


def _along_sphere(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The part of each row's gradient tangent to the unit sphere at x's row (x: unit rows)."""
    return grad - (grad * x).sum(dim=-1, keepdim=True) * x


def check_negclip_loss(fn) -> Feedback:
    """Does `fn(image_features, text_features, hard_negative_features, temperature)` compute NegCLIP's loss?"""
    feedback = check_function(fn, "your function my_negclip_loss",
                              "Pass the function itself: check_negclip_loss(my_negclip_loss), without calling it.")
    if feedback is not None:
        return feedback
    cases = [(8, 8, 16, 0.1, 0), (5, 5, 12, 0.07, 1), (6, 3, 8, 0.5, 2), (4, 0, 8, 0.2, 3)]
    for k, (n, m, dim, tau, seed) in enumerate(cases):
        img, txt, neg = _features(n, m, dim, seed)
        leaves = [img.clone().requires_grad_(True), txt.clone().requires_grad_(True), neg.clone().requires_grad_(True)]
        tau_in = torch.tensor(tau) if seed == 1 else tau                 # a 0-d tensor once, a float otherwise
        out, err = call(fn, *leaves, tau_in)
        where = "" if k == 0 else f"it worked with B = {cases[0][0]} and M = {cases[0][1]}, but with B = {n} and M = {m} "
        if err is not None:
            return _explain(err, "calling " if k == 0 else where, n, m)
        if out is None:
            return not_attempted("the body of my_negclip_loss (it still returns None)")
        problem = _returned(out)
        if problem is not None:
            return problem
        value = float(out.detach().reshape(()))
        if not_finite(value):
            return wrong(f"your loss is {not_finite(value)} on an ordinary batch (B = {n}, M = {m}, τ = {tau}).",
                         "F.cross_entropy(logits, labels) computes the log-softmax stably; avoid torch.log and exp by hand.")
        if not all(torch.equal(a.detach(), b) for a, b in zip(leaves, (img, txt, neg))):
            return wrong("your function changed the features it was given, in place; the caller's tensors must stay "
                         "as they were.", "Write x = x / ..., never x /= ... or an operation ending in _.")
        expected = clip_loss_with_hard_negatives(img, txt, neg, tau)
        if not torch.allclose(torch.tensor(value), expected, **_TOL):
            if m == 0:
                return wrong(f"{where}with no hard negatives (M = 0) your loss is {value:.4f}, and it should be plain "
                             f"clip_loss, {expected.item():.4f}.", "Nothing in the formula needs M > 0 or M = B: "
                             "concatenate the M rows (none here) to the captions and keep labels = arange(B).")
            for target, message, hint in _mistakes(img, txt, neg, tau):
                if torch.allclose(torch.tensor(value), target.float(), **_TOL):
                    return wrong(message, hint)
            if k > 0 and m != n:
                return wrong(f"{where}your loss is {value:.4f} where NegCLIP's is {expected.item():.4f}: does your "
                             "code assume one hard negative per image (M = B)?",
                             "Concatenate all M hard negatives to the captions: logits (B, B + M).")
            return _diagnose(fn, img, txt, neg, tau, value, expected.item())
        if not out.requires_grad:
            return wrong("the value is right, but no gradient flows back to the features.",
                     "Do not .detach() or go through numpy: keep everything in torch.")
        grads = torch.autograd.grad(out.reshape(()), leaves, allow_unused=True)
        if m and grads[2] is None:
            return wrong("the value is right, but no gradient reaches the hard negatives: the text encoder could not "
                         "learn to push them away.", "Do not .detach() the hard-negative features.")
        ref = [x.clone().requires_grad_(True) for x in (img, txt, neg)]
        ref_grads = torch.autograd.grad(clip_loss_with_hard_negatives(*ref, tau), ref, allow_unused=True)
        for name, g, r, x in zip(("image features", "caption features", "hard-negative features"), grads, ref_grads,
                                 (img, txt, neg)):
            if r is None or not len(r):
                continue
            # compared along the sphere only: an answer that normalises its (already unit) inputs again has the
            # same value, and gradients that differ only along each input vector, which changes nothing
            if g is None or not torch.allclose(_along_sphere(g, x), _along_sphere(r, x), rtol=1e-3, atol=1e-5):
                return wrong(f"the value is right, but the gradient on the {name} is not: part of the computation is "
                             "cut off from autograd (.detach(), .data or a tensor rebuilt from numbers).",
                             "Build the whole loss from the input tensors with torch operations.")
    return correct("Your loss equals clip_loss_with_hard_negatives on four batches (one with M = 0, where it is clip_loss).")
