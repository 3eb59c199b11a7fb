"""Lesson 10 exercises: how many nats a batch can certify, and one process's share of the gathered loss.

`check_bound(answer)`: the most mutual information (in nats) CLIP's loss can certify in the lesson's
setting (2 processes x 128 pairs, features gathered, 4 steps of plain gradient accumulation).
`check_local_loss(fn)`: the learner's `fn(image_features, text_features, all_image_features,
all_text_features, temperature, rank)`, run for every rank of simulated processes (no real processes
needed) and compared with `distributed.local_clip_loss`, in value and in the gradient (along the sphere) that
reaches the process's own features (local plus its rows of the gathered ones) and the other processes' rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data import NUM_COMBOS
from ..distributed import local_clip_loss
from ..loss import clip_loss
from . import Feedback, check_function, correct, not_attempted, wrong
from ._symptoms import along_sphere, batch_sizes, call, close, explain_exception, not_finite, number

# --- the bound -----------------------------------------------------------------------------------

PROCESSES, PER_PROCESS, ACCUMULATION = 2, 128, 4     # the exercise's setting
ROUNDED = 1e-3          # a typed-in value this close to log 256 passes ("Give a number": 5.545 is right)


def check_bound(answer) -> Feedback:
    """log(2 · 128) = log 256 ≈ 5.545 nats: the gathered batch counts, accumulation does not.

    A value within ROUNDED of log 256 passes (with a note that math.log gives it exactly); the known
    mistakes are recognised exactly first, then rounded the same way.
    """
    if answer is None:
        return not_attempted("the most mutual information, in nats, the loss can certify here (a number)")
    value = number(answer)
    if value is None:
        if isinstance(answer, str):
            return wrong(f"expected a number, got a string ({answer!r}).", "Remove the quotes: answer = math.log(...).")
        return wrong(f"expected a number, got a {type(answer).__name__}.", "For example answer = math.log(...).")
    if not_finite(value):
        return wrong(f"the bound is a finite number of nats, got {value}.", "It is the log of a batch size.")
    b = PROCESSES * PER_PROCESS                       # the batch every softmax row chooses from
    if close(value, math.log(b), 0.0, ROUNDED):
        exact = close(value, math.log(b), 1e-9, 1e-9)
        return correct(f"log({PROCESSES} × {PER_PROCESS}) = log {b} = {math.log(b):.3f} nats: each row of the loss "
                       f"chooses among the {b} gathered captions; accumulation adds steps, not candidates."
                       + ("" if exact else f" (Your {value:g} is log {b} rounded; math.log({b}) gives it exactly.)"))
    known = [
        (math.log(b * ACCUMULATION), "plain gradient accumulation adds no negatives: each micro-step's softmax "
         f"still chooses among the {b} captions of that step, so the {ACCUMULATION} steps do not multiply the batch.",
         f"Leave the accumulation out: the batch of one row is {PROCESSES} × {PER_PROCESS}."),
        (math.log(PER_PROCESS), "that is one process's batch: with the gather each image also meets the other "
         "process's captions.", f"The gathered batch is {PROCESSES} × {PER_PROCESS} pairs."),
        (math.log(PER_PROCESS * ACCUMULATION), f"log {PER_PROCESS * ACCUMULATION}: either {PER_PROCESS} × "
         f"{ACCUMULATION}, two mistakes (the gather does add the other process's captions, plain accumulation adds "
         f"none), or 2 × {b}, SimCLR's count: in CLIP an image chooses among the captions only, not the other images.",
         f"The batch of one row is {PROCESSES} × {PER_PROCESS} captions."),
        (math.log(2 * b - 1), f"log({2 * b - 1}) counts as SimCLR's NT-Xent does, every other view of 2 × {b}; in "
         "CLIP an image chooses among the captions only, not the other images.",
         f"The bound is log B with B = {b}, the gathered captions."),
        (math.log(NUM_COMBOS), f"log {NUM_COMBOS} is log K, what image and caption share in the lesson's table; "
         "the question asks what the batch lets the loss certify, whatever the data share.",
         f"The cap is set by the batch alone: log B with B = {PROCESSES} × {PER_PROCESS}."),
        (PROCESSES * math.log(PER_PROCESS), f"the bounds of the {PROCESSES} processes do not add up: with the gather "
         f"one row chooses among {b} captions, and log {b} < {PROCESSES} × log {PER_PROCESS}.",
         f"The bound is the log of the gathered batch: math.log({PROCESSES} * {PER_PROCESS})."),
        (math.log(b - 1), f"log({b - 1}) counts the negatives only; the softmax chooses among all {b} candidates, "
         "the positive included.", f"The bound is log B with B = {b}."),
        (math.log(b * ACCUMULATION - 1), "the negatives only, and plain accumulation adds none.",
         f"The bound is log B with B = {b}, the gathered batch."),
        (math.log(PER_PROCESS - 1), "one process's negatives only: the gather adds the other process's, and the "
         "softmax also counts the positive.", f"The bound is log B with B = {b}."),
        (math.log2(b), "that is the bound in bits (log base 2); the question asks for nats, the natural log PyTorch's "
         "cross-entropy uses.", "Use math.log, not math.log2."),
        (math.log2(b * ACCUMULATION), "in bits, and plain accumulation adds no negatives.",
         f"math.log of the gathered batch, {PROCESSES} × {PER_PROCESS}."),
        (math.log2(PER_PROCESS), "in bits, and one process's batch only.",
         f"math.log of the gathered batch, {PROCESSES} × {PER_PROCESS}."),
        (math.log10(b), "that is log base 10; nats use the natural log.", "Use math.log."),
        (float(b), f"{b} is the batch size; the bound is its logarithm.", f"answer = math.log({b})."),
        (float(b * ACCUMULATION), "a batch size, not its log, and accumulation adds no negatives.",
         f"answer = math.log({b})."),
        (float(PER_PROCESS), "a batch size, not its log, and one process's only.", f"answer = math.log({b})."),
        (float(b - 1), "a count of negatives, not a number of nats.", f"answer = math.log({b})."),
    ]
    for rel, abs_ in ((1e-5, 1e-6), (0.0, ROUNDED)):    # exact first, then a rounded value of the same mistake
        for target, message, hint in known:
            if close(value, target, rel, abs_):
                return wrong(message, hint)
    if value <= 0:
        return wrong(f"mutual information is never negative, and the bound log B is positive for B ≥ 2; got {value:g}.",
                     "The bound is log B: the log of how many captions each image chooses among.")
    if close(value, math.log(b), 0.0, 0.05):
        return wrong(f"{value:.4f} is close to log {b} = {math.log(b):.4f} but not within {ROUNDED:g}: rounded too far?",
                     f"Give at least four significant digits, or compute it: math.log({b}).")
    return wrong(f"{value:g} nats is not the bound.",
                 "The loss can certify at most log B nats, B the number of captions each image chooses among: "
                 "which pairs are in the softmax of one row?")


# --- one process's share of the gathered loss ---------------------------------------------------------

def _world(processes: int, per_process: int, seed: int):
    """Gathered features of `processes` simulated processes: (W·B, D) each, captions near their images."""
    g = torch.Generator().manual_seed(seed)
    n, dim = processes * per_process, 12
    img = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    txt = F.normalize(img + 0.8 * torch.randn(n, dim, generator=g), dim=-1)
    return img, txt


def _run(fn, img, txt, tau, rank, per_process, *, grad=False):
    """The learner's loss for `rank` (its rows of the gathered batch), the call's error, the gradients,
    and whether the call changed the tensors it was given."""
    mine = slice(rank * per_process, (rank + 1) * per_process)
    all_img, all_txt = img.clone().requires_grad_(grad), txt.clone().requires_grad_(grad)
    local_img, local_txt = img[mine].clone().requires_grad_(grad), txt[mine].clone().requires_grad_(grad)
    given = (local_img, local_txt, all_img, all_txt)
    out, err = call(fn, local_img, local_txt, all_img, all_txt, tau, rank)
    changed = not all(torch.equal(t.detach(), o) for t, o in zip(given, (img[mine], txt[mine], img, txt)))
    grads = None
    if grad and err is None and isinstance(out, torch.Tensor) and out.numel() == 1 and out.requires_grad:
        try:
            out.reshape(()).backward()
            grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in (local_img, local_txt, all_img, all_txt)]
        except RuntimeError:
            grads = None
    return out, err, grads, changed


def _reference_grads(img, txt, tau, rank, per_process):
    mine = slice(rank * per_process, (rank + 1) * per_process)
    tensors = [img[mine].clone(), txt[mine].clone(), img.clone(), txt.clone()]
    for t in tensors:
        t.requires_grad_(True)
    local_clip_loss(*tensors, tau, rank).backward()
    return [t.grad for t in tensors]


NOTEBOOK_B = 8       # lesson 10's pairs per process: a learner's function may read it instead of its arguments
GRADIENT_NAMES = ("this process's image features (local, plus its rows of the gathered ones)",
                  "this process's caption features (local, plus its rows of the gathered ones)",
                  "the other processes' rows of the gathered image features",
                  "the other processes' rows of the gathered caption features")


def _reaching(grads, rank, per_process):
    """What each gradient does once the gather's backward has run: this process's rows of the gathered
    features come back to it and add to the local ones (so putting its own rows back into the gathered
    tensors, open_clip's pattern, is as right as using them as given); the other rows go to their processes."""
    local_img, local_txt, all_img, all_txt = grads
    mine = torch.zeros(len(all_img), dtype=torch.bool)
    mine[rank * per_process:(rank + 1) * per_process] = True
    return [local_img + all_img[mine], local_txt + all_txt[mine], all_img[~mine], all_txt[~mine]]


def _returned(out, per_process: int) -> Feedback | None:
    if not isinstance(out, torch.Tensor):
        if number(out) is not None:
            return wrong(f"your function returned a {type(out).__name__}, not a tensor.",
                         "Return the tensor itself: .item() or float() cut the graph, so no gradient flows back.")
        return wrong(f"your function returned a {type(out).__name__}, not a tensor.", "Return the loss as a 0-d tensor.")
    if out.numel() != 1:
        shape = tuple(out.shape)
        if shape == (per_process,):
            return wrong(f"your function returned shape {shape}: one loss per local pair, not yet averaged.",
                         "F.cross_entropy averages over the rows by default (no reduction='none').")
        return wrong(f"your function returned shape {shape}; the loss is one number.",
                     "Reduce to one number: the average of the two directions' cross-entropies.")
    if not out.is_floating_point():
        return wrong(f"your function returned an integer tensor ({out.dtype}).", "The loss is a real number.")
    return None


def _shapes_mismatch(err, processes: int, per_process: int) -> Feedback | None:
    """Name the shape slips behind F.cross_entropy's and clip_loss's batch-size errors; None for others."""
    text, b, total = str(err), per_process, processes * per_process
    if "need the same batch size" in text:             # clip_loss(local, gathered, ...)
        return wrong(f"clip_loss was given {b} local rows and {total} gathered ones: it computes the loss of one "
                     "square batch, B images against their own B captions.",
                     "Write the two cross-entropies yourself: image_features @ all_text_features.T / temperature, "
                     "and text_features @ all_image_features.T / temperature, labels rank * B + torch.arange(B).")
    found = batch_sizes(err)
    if found is None:
        return None
    rows, labels = found
    if rows == total:
        return wrong(f"some logits are (W·B, B) = ({total}, {b}): one row per gathered feature. Lesson 04's "
                     "logits_per_image.T is right for one process's square matrix only; here the rows must be "
                     "this process's.",
                     "logits_per_text = text_features @ all_image_features.T / temperature: the local captions "
                     "as rows, every gathered image as a column.")
    if labels == NOTEBOOK_B and b != NOTEBOOK_B:
        return wrong(f"your labels have {NOTEBOOK_B} entries, but this call has {b} pairs per process: the "
                     "notebook's global B?", "Take B from the arguments: B = len(image_features); "
                     "labels = rank * B + torch.arange(B).")
    where = "the gathered batch W·B" if labels == total else "neither this call's B nor its W·B"
    return wrong(f"your labels have {labels} entries for {rows} local rows: their B is {where}.",
                 "B is this process's batch, B = len(image_features); labels = rank * B + torch.arange(B).")


def _tangent(grads, img, txt, rank, per_process):
    """The gradients along the sphere only: normalising unit features again rightly drops the radial part."""
    mine = torch.zeros(len(img), dtype=torch.bool)
    mine[rank * per_process:(rank + 1) * per_process] = True
    points = (img[mine], txt[mine], img[~mine], txt[~mine])
    return [along_sphere(g, x) for g, x in zip(grads, points)]


def check_local_loss(fn) -> Feedback:
    """fn(image_features, text_features, all_image_features, all_text_features, temperature, rank):
    this process's B images against all W·B captions and its B captions against all W·B images, with
    the labels where its pairs sit in the gathered batch (rank·B ...)."""
    early = check_function(fn, "the body of my_local_loss, then set answer = my_local_loss",
                           "Define my_local_loss(...) and set answer = my_local_loss (no parentheses).")
    if early is not None:
        return early
    tau = 0.1
    for processes, per_process, seed in ((3, 4, 0), (2, 5, 1)):
        img, txt = _world(processes, per_process, seed)
        values = []
        for rank in range(processes):
            out, err, _, changed = _run(fn, img, txt, tau, rank, per_process)
            if err is not None:
                named = _shapes_mismatch(err, processes, per_process)   # (a Feedback that is wrong is falsy)
                return named if named is not None else explain_exception(
                    err, f"for rank {rank} of {processes} processes with {per_process} pairs each, ")
            if changed:
                return wrong("your function changed the features it was given (in place).",
                             "Never modify the inputs: write x = x / t, not x /= t.")
            problem = _returned(out, per_process)
            if problem is not None:
                return problem
            value = number(out)
            if not_finite(value):
                return wrong(f"your loss is {not_finite(value)} for rank {rank}.",
                             "Divide the similarities by τ once, and let F.cross_entropy take the logits.")
            expected = local_clip_loss(img[rank * per_process:(rank + 1) * per_process],
                                       txt[rank * per_process:(rank + 1) * per_process], img, txt, tau, rank).item()
            if not close(value, expected):
                return _diagnose(value, expected, img, txt, tau, rank, processes, per_process)
            values.append(value)
        mean, big = sum(values) / processes, clip_loss(img, txt, tau).item()
        if not close(mean, big):   # pragma: no cover - equal to the reference on every rank implies this
            return wrong("the mean over the processes is not the big batch's loss.", "")
        for rank in range(processes):
            _, _, grads, _ = _run(fn, img, txt, tau, rank, per_process, grad=True)
            if grads is None:
                return wrong("no gradient flows back from your loss to the features.",
                             "Stay in torch: no .detach(), .item(), .numpy() or torch.no_grad() on the way.")
            got = _reaching(grads, rank, per_process)
            ref = _reaching(_reference_grads(img, txt, tau, rank, per_process), rank, per_process)
            for name, g, r in zip(GRADIENT_NAMES, got, ref):
                if g.abs().max() == 0 and r.abs().max() > 0:
                    return wrong(f"the right value, but no gradient reaches {name}: they were detached.",
                                 "Use the gathered features as they are: their gradient is how this process's "
                                 "loss pushes the other processes' pairs (open_clip's gather_with_grad).")
            for name, g, r in zip(GRADIENT_NAMES, _tangent(got, img, txt, rank, per_process),
                                  _tangent(ref, img, txt, rank, per_process)):
                if not torch.allclose(g, r, atol=1e-6, rtol=1e-4):
                    return wrong(f"the right value, but the gradient on {name} differs from the reference.",
                                 "Compute the loss from the arguments as given, with the same operations for every "
                                 "row; detach nothing.")
    return correct("This is open_clip's local loss: the mean over the processes is the big batch's clip_loss, "
                   "and each process only builds B × W·B logits.")


def _diagnose(value, expected, img, txt, tau, rank, processes, per_process) -> Feedback:
    """Name the usual mistakes by computing each on the same features."""
    b = per_process
    mine = slice(rank * b, (rank + 1) * b)
    li, lt = img[mine], txt[mine]
    ce = F.cross_entropy
    arange = torch.arange(b)
    right = rank * b + arange

    def two(a, c, labels, t=tau, **kw):
        return ((ce(li @ c.T / t, labels, **kw) + ce(lt @ a.T / t, labels, **kw)) / 2).item()

    where = f"(rank {rank} of {processes}, {b} pairs each)"
    mistakes = [
        (two(img, txt, arange), f"the labels ignore the rank {where}: torch.arange(B) points at rank 0's pairs, "
         "but this process's pairs sit at rows rank·B ... rank·B + B - 1 of the gathered batch.",
         "labels = rank * B + torch.arange(B)."),
        (two(img, txt, rank + arange), f"the labels are shifted by rank, not by rank·B {where}.",
         "Every process before this one holds B pairs: labels = rank * B + torch.arange(B)."),
        (clip_loss(li, lt, tau).item(), "only the local pairs: the captions and images of the other processes are "
         "missing from the softmax, so the gather adds no negatives.",
         "Compare the local features with the gathered ones: image_features @ all_text_features.T."),
        (clip_loss(img, txt, tau).item(), "that is the loss of the whole gathered batch (open_clip's local_loss=False): "
         "the same number in every process. This exercise asks for this process's share, its B rows.",
         "Use the local features for the rows and the gathered ones for the columns."),
        (two(img, txt, right, t=1.0), "you forgot to divide by τ.", "logits = similarities / temperature."),
        (two(img, txt, right, t=1 / tau), "the similarities are multiplied by τ; the logits divide them by it.",
         "logits = similarities / temperature (open_clip multiplies by logit_scale.exp(), which is 1 / τ)."),
        (two(img, txt, right, t=0.07), f"the logits are divided by τ = 0.07, not by the temperature the function "
         f"was given ({tau}): the notebook's global tau?", "Use the temperature argument, not a variable from outside."),
        (ce(li @ txt.T / tau, right).item(), "only one direction: image→text.",
         "Add the text→image half: text_features @ all_image_features.T, the same labels; average the two."),
        (ce(lt @ img.T / tau, right).item(), "only one direction: text→image.",
         "Add the image→text half: image_features @ all_text_features.T, the same labels; average the two."),
        (2 * two(img, txt, right), "the two directions are added, not averaged.", "Divide their sum by 2."),
        (two(img, txt, right, reduction="sum"), "summed over the rows instead of averaged.",
         "F.cross_entropy averages by default: drop reduction='sum'."),
        (((ce(li @ txt.T / tau, right) + ce(lt @ li.T / tau, arange)) / 2).item(),
         "the text→image half compares the captions with the local images only.",
         "Use all_image_features for it: each local caption picks its image among all W·B."),
        (((ce(li @ lt.T / tau, arange) + ce(lt @ img.T / tau, right)) / 2).item(),
         "the image→text half compares the images with the local captions only.",
         "Use all_text_features for it: each local image picks its caption among all W·B."),
    ]
    fixed = rank * NOTEBOOK_B + arange                  # labels from the notebook's B = 8, not this call's B
    if b != NOTEBOOK_B and int(fixed.max()) < len(img):
        mistakes.append((two(img, txt, fixed), f"the labels use B = {NOTEBOOK_B}, but this call has {b} pairs per "
                         f"process {where}: the notebook's global B?",
                         "Take B from the arguments: B = len(image_features); labels = rank * B + torch.arange(B)."))
    for target, message, hint in mistakes:
        if close(value, target):
            return wrong(message, hint)
    if value < 0:
        return wrong(f"your loss is negative ({value:.4f}); a cross-entropy never is.",
                     "Pass the logits to F.cross_entropy (not probabilities to F.nll_loss).")
    return wrong(f"for rank {rank} of {processes} processes ({b} pairs each) your loss is {value:.4f}; "
                 f"the local loss is {expected:.4f}.",
                 "Rows: the local features. Columns: the gathered ones. Labels: rank * B + torch.arange(B). "
                 "Both directions, averaged, logits divided by τ.")
