"""Checker for lesson 04 (the contrastive loss): the learner's own CLIP loss function."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..loss import clip_loss
from . import Feedback, check_function, correct, not_attempted, wrong
from ._symptoms import call, close, explain_exception, gradient_differs, matmul_shapes, not_finite, number


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
        (both(sims / math.exp(tau)), "you divided by exp(τ) instead of by τ: the exp turns a small τ into about 1.",
         "Drop the exp: τ divides the similarities as it is."),
        (both(sims * math.exp(tau)), "you multiplied by exp(τ), as CLIP's code multiplies by logit_scale.exp(); but "
         "this function gets the temperature τ itself, not logit_scale = log(1/τ).",
         "No exp here: divide the similarities by the temperature."),
        (both(sims * math.exp(1 / tau)), "you multiplied by exp(1/τ). CLIP's code multiplies by logit_scale.exp() "
         "with logit_scale = log(1/τ), so that exp gives 1/τ: the exp undoes the log, it is not applied to 1/τ.",
         "Divide the similarities by τ (the same as multiplying by 1/τ)."),
        (both(sims * math.log(1 / tau)), "you multiplied by log(1/τ), CLIP's logit_scale before its exp(): the "
         "factor that divides by τ is exp(logit_scale) = 1/τ.",
         "Divide the similarities by τ."),
        (ce(logits, labels), "only one direction: image→text. CLIP averages it with text→image.",
         "Add F.cross_entropy(logits.T, labels) and halve the sum."),
        (ce(logits.T, labels), "only one direction: text→image. CLIP averages it with image→text.",
         "Add F.cross_entropy(logits, labels) and halve the sum."),
        (both(sims / tau ** 2), "you divided by τ twice (by τ²).", "Divide the similarities by τ once."),
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
        (clip_loss(F.normalize(img, dim=0), F.normalize(txt, dim=0), tau),
         "the features were normalised along the wrong dimension (dim=0, across the batch).",
         "The features arrive normalised already; if you normalise again, use dim=-1 (each vector)."),
        ((F.nll_loss(logits.softmax(-1), labels) + F.nll_loss(logits.T.softmax(-1), labels)) / 2,
         "a negative loss: you passed probabilities (a softmax) to F.nll_loss, which only picks "
         "-input[i, label_i] and so expects log-probabilities.",
         "Use log_softmax instead of softmax, or pass the logits to F.cross_entropy."),
        ((F.nll_loss(logits, labels) + F.nll_loss(logits.T, labels)) / 2,
         "a negative loss: you passed the logits to F.nll_loss, which only picks -input[i, label_i] "
         "(no softmax), so the negatives are ignored.",
         "F.cross_entropy(logits, labels) = F.nll_loss(logits.log_softmax(dim=-1), labels)."),
        (-both(logits), "a negative loss: the sign is flipped (a missing or an extra minus).",
         "The loss is -log P(positive), a positive number: check the minus signs."),
    ]


_TOL = dict(rtol=1e-4, atol=1e-5)


def _same_diagonal(img: torch.Tensor, txt: torch.Tensor, seed: int) -> torch.Tensor:
    """Other captions with the same positive similarities img_i · txt_i: only the negatives change."""
    g = torch.Generator().manual_seed(seed + 100)
    d = (img * txt).sum(dim=-1, keepdim=True)                                  # (B, 1) the diagonal
    r = torch.randn(txt.shape, generator=g)
    r = F.normalize(r - (r * img).sum(dim=-1, keepdim=True) * img, dim=-1)     # ⟂ its own image
    return d * img + (1 - d ** 2).clamp_min(0).sqrt() * r                      # (B, D), unit length


def _column_scale(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 200)
    return 0.5 + 2 * torch.rand(dim, generator=g)                              # (D,) one factor per feature


def _confident_mistakes(batch: int = 6, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Each caption is far closer to the next image than to its own: at τ = 0.01 the logits reach ±100."""
    g = torch.Generator().manual_seed(7)
    img = torch.linalg.qr(torch.randn(dim, batch, generator=g)).Q.T.contiguous()   # (B, D) orthonormal
    txt = F.normalize(0.95 * img.roll(-1, dims=0) - 0.3 * img, dim=-1)
    return img, txt


def _value(fn, img, txt, tau):
    """The learner's loss as a float, or None if it raised or did not return one number."""
    out, err = call(fn, img.clone(), txt.clone(), tau)
    if err is not None:
        return None
    return number(out) if not isinstance(out, torch.Tensor) or out.numel() == 1 else None


def _foreign_matmul(err: Exception, n: int, dim: int) -> Feedback | None:
    """A failed matrix product with a size that neither argument has: a tensor from outside the function."""
    shapes = matmul_shapes(err)
    if shapes is None or set(shapes) <= {n, dim}:
        return None
    return wrong(f"your function raised {type(err).__name__}: {str(err).splitlines()[0]} — but the features it was "
                 f"given are ({n}, {dim}): one side of that product is not one of its arguments.",
                 "Use image_features and text_features inside the function, not the lesson's img, txt or sims.")


def _returned(out, n: int) -> Feedback | None:
    """What is wrong with the type, shape or dtype of what the learner's function returned."""
    if not isinstance(out, torch.Tensor):
        kind = type(out).__name__
        if number(out) is not None:
            return wrong(f"your function returned a {kind}, not a tensor.",
                         "Return the tensor itself: .item() or float() cut the graph, so no gradient can flow.")
        if isinstance(out, (tuple, list)):
            return wrong(f"your function returned a {kind} of {len(out)} items, not a tensor.",
                         "Return one 0-d tensor: the average of the two directions.")
        return wrong(f"your function returned a {kind}, not a tensor.", "Return the loss as a 0-d torch tensor.")
    if out.numel() != 1:
        shape = tuple(out.shape)
        if shape == (n,):
            why = "one loss per example: the batch was not averaged"
            hint = "Average over the batch: F.cross_entropy does it by default (no reduction='none')."
        elif shape == (n, n):
            why = "a (B, B) matrix: the logits or the per-pair terms, not yet reduced to a loss"
            hint = "Feed the logits to F.cross_entropy with labels = torch.arange(B)."
        elif shape in ((2,), (1, 2), (2, 1)):
            why = "two numbers: the two directions, not yet averaged"
            hint = "Return (loss_image_to_text + loss_text_to_image) / 2."
        elif shape == (2, n) or shape == (n, 2):
            why = "one loss per example and per direction"
            hint = "Average over the batch (the default of F.cross_entropy) and over the two directions."
        else:
            why = "the loss is one number"
            hint = "Reduce to one number: the mean over the batch of the two directions' average."
        return wrong(f"your function returned shape {shape}; {why}.", hint)
    if not out.is_floating_point():
        return wrong(f"your function returned an integer tensor ({out.dtype}): a loss is a real number.",
                     "Do not round, compare or argmax: cross-entropy gives a float.")
    return None


def _proportional(fn, ratio: float, img2, txt2, tau2) -> Feedback | None:
    """The learner's loss is CLIP's times a constant on two different batches: name the constant."""
    other = _value(fn, img2, txt2, tau2)
    if other is None or not close(other, ratio * clip_loss(img2, txt2, tau2).item(), 1e-3, 1e-6):
        return None
    n2 = len(img2)
    known = [
        (1 / math.log(2), "you used log base 2 (bits); PyTorch's cross-entropy uses the natural log (nats).",
         "Use torch.log (or F.cross_entropy), not torch.log2."),
        (1 / math.log(10), "you used log base 10; the loss uses the natural log.", "Use torch.log, not log10."),
        (0.5, "half of CLIP's loss: you divided by 2 once too often (or by 4 instead of 2).",
         "(loss_i2t + loss_t2i) / 2, each already a mean over the batch."),
    ]
    for k, message, hint in known:
        if close(ratio, k, 1e-3):
            return wrong(message, hint)
    return wrong(f"your loss is CLIP's times a constant ({ratio:.4g}) on two different batches: the formula is "
                 f"right up to a factor.",
                 f"Look for an extra factor: a sum where a mean belongs (× B = {n2} here), a missing / 2, "
                 f"or a τ used twice.")


def _soft_target_loss(img, txt, tau, target: torch.Tensor) -> float:
    """CLIP's loss with a (B, B) target distribution in each row instead of the one-hot diagonal."""
    logits = img @ txt.T / tau
    return -((target * logits.log_softmax(-1)).sum(-1).mean()
             + (target * logits.T.log_softmax(-1)).sum(-1).mean()).item() / 2


def _smoothed(img, txt, tau, value: float, expected: float, second) -> Feedback | None:
    """Label smoothing: the loss is (1 - ε)·CLIP's + ε·(the loss against a spread target), with the same ε on the
    `second` batch (img2, txt2, tau2, the learner's loss there); spread over the whole row (F.cross_entropy's
    label_smoothing) or over the negatives only."""
    img2, txt2, tau2, other = second
    if other is None:
        return None
    expected2 = clip_loss(img2, txt2, tau2).item()
    for where, spread in (("the whole row", lambda n: torch.full((n, n), 1 / n)),
                          ("the other captions", lambda n: (1 - torch.eye(n)) / (n - 1))):
        spread_loss = _soft_target_loss(img, txt, tau, spread(len(img)))
        spread_loss2 = _soft_target_loss(img2, txt2, tau2, spread(len(img2)))
        if abs(spread_loss - expected) < 1e-6:
            continue
        eps = (value - expected) / (spread_loss - expected)                     # fitted on the first batch
        # a tight tolerance: the two spreads, each with its own best ε, differ by ~1e-3 on the second batch
        if 0 < eps < 1 and close(other, (1 - eps) * expected2 + eps * spread_loss2, 1e-5, 1e-6):
            return wrong(f"your targets are not one-hot: this is CLIP's loss with label smoothing (ε ≈ {eps:.2g}), "
                         f"1 - ε on the matching caption and ε spread over {where}. In CLIP the target of image i is "
                         "caption i alone, with probability 1.",
                         "Drop label_smoothing= (or the soft target matrix): the labels are the class indices "
                         "torch.arange(B).")
    return None


def _pairwise_sigmoid(img, txt, tau) -> torch.Tensor:
    """(B, B) binary cross-entropy of every pair on its own: a match on the diagonal, not a match elsewhere."""
    logits = img @ txt.T / tau
    return F.binary_cross_entropy_with_logits(logits, torch.eye(len(logits)), reduction="none")


def _balanced(terms: torch.Tensor) -> torch.Tensor:
    """The mean over the positives (the diagonal) plus the mean over the negatives."""
    eye = torch.eye(len(terms), dtype=torch.bool)
    return terms[eye].mean() + terms[~eye].mean()


def _sigmoid_instead(img, txt, tau, value: float, second) -> Feedback | None:
    """Per-pair binary cross-entropies (BCE, SigLIP's loss without its bias) instead of a softmax over each row:
    their mean, sum / B or sum (or positives and negatives averaged apart), times a constant, on two batches."""
    img2, txt2, tau2, other = second
    if other is None:
        return None
    for reduce in (torch.mean, _balanced):
        first = reduce(_pairwise_sigmoid(img, txt, tau)).item()
        second = reduce(_pairwise_sigmoid(img2, txt2, tau2)).item()
        for power in (0, 1, 2):                                                 # mean, sum / B, sum
            if value / first > 0 and close(other, value / first * second * (len(img2) / len(img)) ** power, 1e-4):
                return wrong("your loss scores every image–caption pair on its own with a sigmoid (a binary "
                             "cross-entropy: match or not?), as SigLIP does in lesson 09. CLIP's loss is a softmax "
                             "over each row: the matching caption competes with all the others at once.",
                             "Treat row i as one B-way choice whose answer is column i: F.cross_entropy on the "
                             "logits with class-index labels, in both directions; no sigmoid, no binary_cross_entropy.")
    return None


def _diagnose(fn, img, txt, tau, value: float, expected: float) -> Feedback:
    """The value is wrong and no exact formula matched: probe the learner's function for symptoms."""
    n, dim = img.shape
    if value < -1e-6:
        return wrong(f"your loss is negative ({value:.4f}), but a cross-entropy -log P is never negative. "
                     "This usually means probabilities, logits or log-probabilities went into F.nll_loss "
                     "(which only picks -input[i, label_i]), or a minus sign is missing.",
                     "F.nll_loss wants log-probabilities (log_softmax); simplest: F.cross_entropy(logits, labels).")
    # the features have no effect: the function reads tensors from outside it (the lesson's img, txt, sims)
    img3, txt3 = _features(n, dim, seed=n + 50)
    other_features = _value(fn, img3, txt3, tau)
    if (other_features is not None and close(other_features, value)
            and not close(clip_loss(img3, txt3, tau).item(), expected)):
        return wrong(f"your loss does not change when both feature sets are replaced by others (the same {value:.4f}): "
                     "it does not read its arguments image_features and text_features.",
                     "Inside the function, compute the similarities from its arguments, not from the lesson's "
                     "img, txt, sims or logits.")
    # τ has no effect
    other_tau = _value(fn, img, txt, tau * 2)
    if other_tau is not None and close(other_tau, value) and not close(clip_loss(img, txt, tau * 2).item(), expected):
        return wrong(f"your loss does not change when τ changes (the same {value:.4f} at τ = {tau} and at {2 * tau}).",
                     "Divide the similarities by the temperature argument: logits = sims / temperature.")
    # only the diagonal is used
    txt_neg = _same_diagonal(img, txt, seed=n)
    changed = _value(fn, img, txt_neg, tau)
    if changed is not None and close(changed, value) and not close(clip_loss(img, txt_neg, tau).item(), expected):
        return wrong("your loss does not change when only the negatives change (other captions, the same "
                     "positive similarities): it uses only the diagonal, the matching pairs.",
                     "The softmax over each row compares the positive with every negative: "
                     "F.cross_entropy(logits, labels) on the whole (B, B) logits, not on logits.diag().")
    # which caption belongs to which image is ignored
    shuffled = _value(fn, img, txt.roll(1, dims=0), tau)
    if shuffled is not None and close(shuffled, value):
        return wrong("your loss does not change when the captions are shuffled against the images: it does not "
                     "know which caption belongs to which image.",
                     "The labels say it: caption i matches image i, labels = torch.arange(B).")
    # normalised along dim 0: blind to a per-feature rescaling of the whole batch
    scale = _column_scale(dim, seed=n)
    sides = []
    for side, (a, b) in (("image", (img * scale, txt)), ("text", (img, txt * scale))):
        rescaled = _value(fn, a, b, tau)
        if rescaled is not None and close(rescaled, value) and not close(clip_loss(a, b, tau).item(), expected):
            sides.append(side)
    if sides:
        return wrong(f"the {' and '.join(sides)} features are normalised along the wrong dimension: your loss does "
                     "not change when one feature is rescaled across the whole batch, which only dim=0 "
                     "normalisation (each column) undoes.",
                     "The features arrive L2-normalised; if you normalise again, use dim=-1 (each vector).")
    # depends on the order of the pairs in the batch
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    reordered = _value(fn, img[perm], txt[perm], tau)
    if reordered is not None and not close(reordered, value, 1e-4, 1e-5):
        return wrong("your loss changes when the pairs are shuffled together (image i still with caption i). "
                     "CLIP's loss does not care about the order of the batch: the labels or some weights "
                     "depend on the position, not on the pairing.",
                     "labels = torch.arange(B), and the same weight for every row.")
    # one direction, or the two weighted unequally
    swapped = _value(fn, txt, img, tau)
    if swapped is not None and not close(swapped, value):
        return wrong("your loss changes when the image and text features are swapped; CLIP's loss is symmetric "
                     "(the same with the roles exchanged). Usually one direction only, the two directions weighted "
                     "unequally, or only one side normalised.",
                     "loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2, and treat "
                     "both feature sets the same way.")
    # the right formula times a constant
    img2, txt2 = _features(7, 10, 11)                  # another B, D and τ, to confirm a symptom seen on the first
    if expected > 0:
        found = _proportional(fn, value / expected, img2, txt2, 0.2)
        if found is not None:
            return found
    second = (img2, txt2, 0.2, _value(fn, img2, txt2, 0.2))
    found = _smoothed(img, txt, tau, value, expected, second)
    if found is None:                                  # (`is None`, not `or`: a Feedback that says "wrong" is falsy)
        found = _sigmoid_instead(img, txt, tau, value, second)
    if found is not None:
        return found
    return wrong(f"with B = {n} and τ = {tau} your loss is {value:.4f}; CLIP's is {expected:.4f}.",
                 "logits = sims / τ; labels = arange(B); average the cross-entropies of logits and logits.T.")


def check_clip_loss(fn) -> Feedback:
    """Does `fn(image_features, text_features, temperature)` compute CLIP's loss?"""
    feedback = check_function(fn, "your function my_clip_loss",
                              "Pass the function itself: check_clip_loss(my_clip_loss), without calling it.")
    if feedback is not None:
        return feedback
    cases = [(8, 16, 0.1, 0), (5, 12, 0.07, 1), (6, 8, 0.5, 2)]
    for k, (n, dim, tau, seed) in enumerate(cases):
        img, txt = _features(n, dim, seed)
        img_in = img.clone().requires_grad_(True)
        txt_in = txt.clone().requires_grad_(True)
        tau_in = torch.tensor(tau, requires_grad=True) if seed == 1 else tau   # a 0-d tensor once, a float otherwise
        out, err = call(fn, img_in, txt_in, tau_in)
        if err is not None:
            context = "calling " if k == 0 else f"it worked with B = {cases[0][0]}, but with B = {n} "
            feedback = explain_exception(err, context)
            foreign = _foreign_matmul(err, n, dim)
            if foreign is not None:
                return foreign
            if k > 0 and ("size" in str(err) or "shape" in str(err) or "out of bounds" in str(err)):
                feedback.hint = ("Is the batch size written into your code, or taken from outside the function (a B or "
                                 "labels made for another batch)? Use B = len(image_features) inside it. "
                                 + feedback.hint)
            return feedback
        if out is None:
            return not_attempted("the body of my_clip_loss (it still returns None)")
        problem = _returned(out, n)
        if problem is not None:
            return problem
        value = float(out.detach().reshape(()))
        bad = not_finite(value)
        if bad:
            return wrong(f"your loss is {bad} on an ordinary batch (B = {n}, τ = {tau}). Usually a log of 0 or of "
                         "a negative number (torch.log of the similarities or of a softmax that underflowed), "
                         "a division by 0, or exp() of large logits without subtracting the row maximum.",
                         "F.cross_entropy(logits, labels) computes log-softmax stably; avoid torch.log and exp by hand.")
        if not (torch.equal(img_in.detach(), img) and torch.equal(txt_in.detach(), txt)):
            return wrong("your function changed the features it was given, in place (x /= ..., x.div_(...)); the "
                         "caller's tensors must stay as they were.",
                         "Write x = x / x.norm(dim=-1, keepdim=True), never x /= ... or an operation ending in _.")
        expected = clip_loss(img, txt, tau)
        if not torch.allclose(torch.tensor(value), expected, **_TOL):
            for target, message, hint in _mistakes(img, txt, tau):
                if torch.allclose(torch.tensor(value), target.float(), **_TOL):
                    return wrong(message, hint)
            return _diagnose(fn, img, txt, tau, value, expected.item())
        if not out.requires_grad:
            return wrong("the value is right, but no gradient flows back to the features.",
                         "Do not .detach() or go through numpy: keep everything in torch.")
        leaves = [img_in, txt_in] + ([tau_in] if isinstance(tau_in, torch.Tensor) else [])
        grads = torch.autograd.grad(out.reshape(()), leaves, allow_unused=True)
        for name, grad in zip(("image features", "text features", "temperature"), grads):
            if grad is None:
                hint = ("Keep τ a tensor: float(temperature) or .item() cut it off, and lesson 07 learns τ "
                        "through this very division." if name == "temperature"
                        else "Do not .detach() either feature set; keep everything in torch.")
                return wrong(f"the value is right, but no gradient reaches the {name}.", hint)
        ref_leaves = [img.clone().requires_grad_(True), txt.clone().requires_grad_(True)]
        ref_grads = torch.autograd.grad(clip_loss(*ref_leaves, tau), ref_leaves)
        problem = gradient_differs(grads, ref_grads, (img, txt))
        if problem is not None:
            return problem
    # a batch of confident mistakes at CLIP's smallest τ: exp(1/τ) overflows float32 unless the max is subtracted
    img, txt = _confident_mistakes()
    expected = clip_loss(img, txt, 0.01).item()
    value = _value(fn, img, txt, 0.01)
    if value is None or not_finite(value):
        what = "raised an error" if value is None else f"returned {not_finite(value)}"
        return wrong(f"right on ordinary batches, but at τ = 0.01 (CLIP's smallest) with captions that match the "
                     f"wrong image best, your function {what} where CLIP's loss is {expected:.1f}: exp(1/τ) = "
                     "exp(100) overflows float32, or a softmax underflows to 0 and log(0) = -inf.",
                     "Let F.cross_entropy (or torch.logsumexp / log_softmax) do it: they subtract the row maximum.")
    if not close(value, expected, 1e-3, 1e-3):
        return wrong(f"right on ordinary batches, but at τ = 0.01 with captions that match the wrong image best your "
                     f"loss is {value:.2f}, CLIP's {expected:.2f}: something caps or rounds very small probabilities "
                     "(an eps in the log, a clamp).",
                     "Use F.cross_entropy (or log_softmax) on the logits instead of log(softmax + eps).")
    return correct("Your loss equals clip_loss on three batches (with τ as a float and as a tensor).")
