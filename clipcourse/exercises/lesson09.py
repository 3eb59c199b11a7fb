"""Checkers for lesson 09 (SigLIP): the learner's sigmoid loss, and the bias start for a batch size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..loss import siglip_loss
from . import Feedback, check_function, correct, not_attempted, wrong
from ._symptoms import broadcast_sizes, call, close, explain_exception, gradient_differs, not_finite, number

BATCH = 32          # the batch size of the bias-start exercise


def _features(batch: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(batch, dim, generator=g), dim=-1)
    txt = F.normalize(img + 0.9 * torch.randn(batch, dim, generator=g), dim=-1)
    return img, txt


def _mistakes(img, txt, tau: float, bias: float):
    """(value, message, hint) for the usual mistakes, each computed on these features."""
    n = len(img)
    sims = img @ txt.T
    logits = sims / tau + bias
    eye = torch.eye(n)
    labels = 2 * eye - 1
    ls = F.logsigmoid

    def total(lg, lb=labels):
        return -ls(lb * lg).sum() / n

    return [
        (total(sims / tau), "the bias is missing: every logit needs + b.", "logits = sims / temperature + bias."),
        (total(sims / tau - bias), "the bias is subtracted; SigLIP adds it.", "logits = sims / temperature + bias."),
        (total(sims * tau + bias), "you multiplied by τ; divide by it (t = 1/τ multiplies).",
         "logits = sims / temperature + bias."),
        (total(sims + bias), "you forgot to divide the similarities by τ.", "logits = sims / temperature + bias."),
        (total((sims + bias) / tau), "the bias is divided by τ too: only the similarities are scaled, b is added after.",
         "logits = sims / temperature + bias, not (sims + bias) / temperature."),
        (total(sims * math.exp(tau) + bias), "you scaled by exp(temperature): the function receives τ itself, not "
         "t' = log t, and t = 1/τ.", "logits = sims / temperature + bias."),
        (-ls(labels * sims / tau + bias).sum() / n, "the bias is added after multiplying by the labels; it is part of "
         "the logit: label · (s / τ + b).",
         "-F.logsigmoid(labels * (sims / temperature + bias)): mind the brackets."),
        (total(logits, torch.ones(n, n)), "every pair is labelled +1: the negatives must be labelled -1.",
         "labels = 2 * torch.eye(B) - 1: +1 on the diagonal, -1 elsewhere."),
        (-ls(logits.diagonal()).sum() / n, "only the positives (the diagonal) count: the negatives are ignored.",
         "Sum -logsigmoid(labels * logits) over all B × B pairs, labels -1 off the diagonal."),
        (total(logits, eye), "labels 0/1 inside -log σ(label · logit): every negative then costs log 2 whatever "
         "its logit, so nothing pushes the negatives down.",
         "labels = 2 * torch.eye(B) - 1: +1 on the diagonal, -1 elsewhere."),
        (total(logits, eye - 1), "the positives are labelled 0 (torch.eye(B) - 1): each then costs log 2 whatever "
         "its logit, so nothing pulls the matching pairs together.",
         "labels = 2 * torch.eye(B) - 1: +1 on the diagonal, -1 elsewhere."),
        (F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / n,
         "binary_cross_entropy_with_logits wants targets 0 and 1, not -1 and +1: with -1 its loss can go negative.",
         "F.binary_cross_entropy_with_logits(logits, torch.eye(B), reduction='sum') / B, or -F.logsigmoid(labels * "
         "logits).sum() / B with the ±1 labels."),
        (F.binary_cross_entropy_with_logits(logits, labels),
         "binary_cross_entropy_with_logits wants targets 0 and 1, not -1 and +1; and its default averages over all "
         "B² pairs, where SigLIP sums them and divides by B.",
         "F.binary_cross_entropy_with_logits(logits, torch.eye(B), reduction='sum') / B."),
        (-ls(labels * logits).mean(), "you averaged over all B² pairs; SigLIP sums them and divides by B.",
         "-F.logsigmoid(labels * logits).sum() / B (with binary_cross_entropy_with_logits: reduction='sum', then / B)."),
        (-ls(labels * logits).sum(), "you summed without dividing by B.", "Divide the sum by B (the batch size)."),
        (-ls(labels * logits).sum() / img.shape[1], f"you divided by the feature size D = {img.shape[1]}, not by the "
         f"batch size B = {n}.", "B = len(image_features): the number of rows, not the number of columns."),
        (total(logits) / 2, "half of SigLIP's loss: it has no two directions to average as CLIP does; the B × B "
         "pairs already ask every question once.", "-F.logsigmoid(labels * logits).sum() / B, with no / 2."),
        (2 * total(logits), "twice SigLIP's loss: every pair counted twice (image→text plus text→image?); the B × B "
         "pairs already ask every question once.", "-F.logsigmoid(labels * logits).sum() / B, once."),
        (total(-logits), "a sign is flipped, of the logits or of the labels (the same value): a higher similarity "
         "must mean a higher logit, and the positives (the diagonal) are labelled +1.",
         "logits = +sims / temperature + bias; labels = 2 * torch.eye(B) - 1."),
        (ls(labels * logits).sum() / n, "a negative loss: a minus sign is missing.",
         "loss = -logsigmoid(labels * logits).sum() / B."),
        ((F.cross_entropy(logits, torch.arange(n)) + F.cross_entropy(logits.T, torch.arange(n))) / 2,
         "that is CLIP's softmax loss: SigLIP asks one sigmoid question per pair, with no softmax over the row.",
         "-F.logsigmoid(labels * logits).sum() / B with labels = 2 * torch.eye(B) - 1."),
        (-(labels * torch.sigmoid(logits)).sum() / n, "the log is missing: it is -log σ(label · logit), not -σ.",
         "Use F.logsigmoid, which is also stable for large logits."),
    ]


def _value(fn, img, txt, tau, bias):
    out, err = call(fn, img.clone(), txt.clone(), tau, bias)
    if err is not None or not isinstance(out, torch.Tensor) or out.numel() != 1:
        return None
    return number(out)


def _gradient(out, img_in, txt_in, img, txt, tau, bias) -> Feedback | None:
    """What is wrong with the gradient of a loss whose value is right (None: nothing), as lesson 04 checks it."""
    if not out.requires_grad:
        return wrong("the value is right, but no gradient flows back to the features.",
                     "Do not .detach() or go through numpy: keep everything in torch.")
    grads = torch.autograd.grad(out.reshape(()), [img_in, txt_in], allow_unused=True)
    for name, grad in zip(("image features", "text features"), grads):
        if grad is None:
            return wrong(f"the value is right, but no gradient reaches the {name}.",
                         "Do not .detach() either feature set; keep everything in torch.")
    ref = [img.clone().requires_grad_(True), txt.clone().requires_grad_(True)]
    ref_grads = torch.autograd.grad(siglip_loss(*ref, tau, bias), ref)
    return gradient_differs(grads, ref_grads, (img, txt))


def _foreign_size(err: Exception, n: int, dim: int) -> Feedback | None:
    """A size mismatch with a size the features do not have: labels or B made outside the function."""
    sizes = broadcast_sizes(err)
    if sizes is None or set(sizes) <= {n, dim}:
        return None
    return wrong(f"your function raised {type(err).__name__}: {str(err).splitlines()[0]} — but the features it was "
                 f"given are ({n}, {dim}): a tensor inside it was made for another batch (the lesson's labels, or "
                 "torch.eye(B) with its B = 8?).",
                 "Build the labels from the arguments: B = len(image_features); labels = 2 * torch.eye(B) - 1.")


def _fixed_divisor(fn, value: float, img, txt, tau: float, bias: float) -> float | None:
    """The number the learner divides SigLIP's sum by, if it is the same on two batch sizes (else None)."""
    img2, txt2 = _features(9, 12, seed=1)
    other = _value(fn, img2, txt2, 0.05, -6.0)
    if other is None or value <= 0 or other <= 0:
        return None
    first = siglip_loss(img, txt, tau, bias).item() * len(img) / value         # the sum over the learner's value
    second = siglip_loss(img2, txt2, 0.05, -6.0).item() * len(img2) / other
    if close(first, second, 1e-4) and abs(first - round(first)) < 1e-3 and round(first) != len(img):
        return float(round(first))
    return None


def check_siglip_loss(fn) -> Feedback:
    """The learner's my_siglip_loss(image_features, text_features, temperature, bias) against siglip_loss."""
    first = check_function(fn, "the body of my_siglip_loss (it still returns None)",
                           "Define a function: def my_siglip_loss(image_features, text_features, temperature, bias): ...")
    if first is not None:
        return first
    img, txt = _features(6, 16, seed=0)
    tau, bias = 0.1, -2.0
    img_in, txt_in = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    out, err = call(fn, img_in, txt_in, tau, bias)
    if err is not None:
        foreign = _foreign_size(err, *img.shape)      # (`is None`, not `or`: a Feedback that says wrong is falsy)
        return explain_exception(err) if foreign is None else foreign
    if out is None:
        return not_attempted("the body of my_siglip_loss (it still returns None)")
    if not isinstance(out, torch.Tensor):
        return wrong(f"your function returned a {type(out).__name__}, not a tensor.",
                     "Return the loss as a 0-d tensor: no .item() or float(), so gradients can flow.")
    if out.numel() != 1:
        shape = tuple(out.shape)
        why = "one term per pair, not yet summed" if shape == (6, 6) else "the loss is one number"
        return wrong(f"your function returned shape {shape}: {why}.", "-F.logsigmoid(labels * logits).sum() / B.")
    value = number(out)
    bad = not_finite(value)
    if bad:
        return wrong(f"your loss is {bad}.", "Use F.logsigmoid rather than torch.log(torch.sigmoid(...)): it never overflows.")
    want = siglip_loss(img, txt, tau, bias).item()
    if close(value, want):
        img2, txt2 = _features(9, 12, seed=1)                   # another batch size, τ and b
        other = _value(fn, img2, txt2, 0.05, -6.0)
        if other is not None and close(other, siglip_loss(img2, txt2, 0.05, -6.0).item()):
            problem = _gradient(out, img_in, txt_in, img, txt, tau, bias)   # a Feedback is falsy when wrong
            if problem is not None:
                return problem
            return correct("by hand = clipcourse.loss.siglip_loss: one sigmoid question per pair, summed, over B.")
        return wrong("right on the first batch but not on a batch of 9 with τ = 0.05 and b = -6.",
                     "Take B from the features (len(image_features)), and use the τ and b you are given.")
    for value_wrong, message, hint in _mistakes(img, txt, tau, bias):
        if close(value, value_wrong.item()):
            return wrong(message, hint)
    if value < 0:
        return wrong(f"a negative loss ({value:.4g}): -log σ(·) is never negative.", "Check the minus signs.")
    divisor = _fixed_divisor(fn, value, img, txt, tau, bias)
    if divisor is not None:
        return wrong(f"your loss is SigLIP's sum divided by {divisor:g} on a batch of {len(img)} and on a batch of 9 "
                     f"alike: a number fixed in your code (the lesson's B = 8?), not the batch size of the call.",
                     "Take B from the features inside the function: B = len(image_features).")
    return wrong(f"your loss is {value:.4f}; SigLIP's is {want:.4f} on the same batch.",
                 "logits = sims / temperature + bias; labels = 2 * torch.eye(B) - 1; "
                 "loss = -F.logsigmoid(labels * logits).sum() / B.")


def check_bias_start(answer) -> Feedback:
    """The b whose σ(b) is the share of positive pairs in a batch of 32: log(1/31) ≈ -3.434."""
    if answer is None:
        return not_attempted(f"the bias b for which σ(b) = 1/{BATCH}, the share of positive pairs (a number)")
    value = number(answer)
    if value is None:
        if isinstance(answer, str):
            return wrong(f"expected a number, got a string ({answer!r}).", "Remove the quotes and compute it with math.log.")
        return wrong(f"expected a number, got a {type(answer).__name__}.", "For example answer = math.log(...).")
    if not math.isfinite(value):
        return wrong(f"b = {value} is not finite: log(0), or an overflow.", "σ(b) = p gives b = log(p / (1 - p)).")
    p = 1 / BATCH
    want = math.log(p / (1 - p))
    near = lambda x: math.isclose(value, x, rel_tol=2e-3, abs_tol=1e-4)  # noqa: E731
    if near(want):
        return correct(f"b = log(1/{BATCH - 1}) = {want:.3f}: σ(b) = 1/{BATCH}. SigLIP's -10 fits a batch of about "
                       f"e¹⁰ ≈ 22,000 pairs, close to its 32k batches.")
    if near(math.log(p)):
        return wrong(f"{value:.4f} = log(1/{BATCH}) is the log-probability; the bias is a logit, the log-odds.",
                     "σ(b) = p gives b = log(p / (1 - p)) = log(1/31).")
    if near(-want) or near(-math.log(p)):
        return wrong(f"{value:.4f} has the wrong sign: positives are rare, so σ(b) is small and b negative.",
                     "b = log(p / (1 - p)) with p = 1/32.")
    if near(p) or near(1 - p):
        return wrong(f"{value:.4f} is a probability; the bias is a logit.", "Take the log-odds: log(p / (1 - p)).")
    if near(p / (1 - p)):
        return wrong(f"{value:.4f} = 1/{BATCH - 1} is the odds p / (1 - p); the bias is their log, the log-odds.",
                     "b = math.log(p / (1 - p)).")
    pairs = BATCH * BATCH
    if near(math.log(1 / (pairs - 1))) or near(math.log(1 / pairs)):
        return wrong(f"{value:.4f} counts one positive among the B² = {pairs:,} pairs; a batch of {BATCH} holds {BATCH} "
                     f"positives (its diagonal), one pair in {BATCH}.", f"p = {BATCH} / {pairs:,} = 1/{BATCH}.")
    if near(-10.0):
        return wrong("-10 is the paper's start, made for batches of tens of thousands; this batch has 32 pairs.",
                     "σ(b) = 1/32: b = log(p / (1 - p)).")
    if near(math.log10(p / (1 - p))) or near(math.log10(p)):
        return wrong(f"{value:.4f} uses log10; σ uses the natural exponential.", "Use math.log.")
    if abs(value - want) < 0.05:
        return wrong(f"close, but {value:.4g} is rounded: b = log(1/{BATCH - 1}) = {want:.4f}.",
                     "Compute it (math.log) rather than typing a rounded number.")
    sigma = 0.0 if value < -700 else 1 / (1 + math.exp(-value))
    return wrong(f"σ({value:.4g}) = {sigma:.4g}, not 1/{BATCH} = {p:.4g}.",
                 "σ(b) = p gives b = log(p / (1 - p)).")
