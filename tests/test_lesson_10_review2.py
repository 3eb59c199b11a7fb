"""Lesson 10, second review: answers the checkers misjudged, and two faults of clipcourse.distributed.

Each test failed before the fix it names: a right answer that re-normalises its inputs was rejected;
realistic slips (the square-matrix transpose of lesson 04, B read from the gathered batch, `clip_loss`
on a rectangle, τ multiplied, log K, a sum of per-process bounds, SimCLR's 2B - 1) got only a generic
hint; the gather's backward changed the gradient tensor it was given (a hook saw the summed values);
a feature-size mismatch in `local_clip_loss` raised torch's matmul error instead of naming the argument.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from clipcourse import distributed
from clipcourse.exercises import lesson10


def reference(image_features, text_features, all_image_features, all_text_features, temperature, rank):
    b = len(image_features)
    labels = rank * b + torch.arange(b)
    return (F.cross_entropy(image_features @ all_text_features.T / temperature, labels)
            + F.cross_entropy(text_features @ all_image_features.T / temperature, labels)) / 2


# --- check_local_loss: an equivalent right answer ------------------------------------------------

def test_a_right_answer_that_normalises_its_inputs_again_passes():
    # a no-op on unit vectors; its gradient differs only along each feature (radially), which the
    # model's own normalisation removes anyway
    def renormalised(i, t, ai, at, tau, rank):
        return reference(*(F.normalize(x, dim=-1) for x in (i, t, ai, at)), tau, rank)

    fb = lesson10.check_local_loss(renormalised)
    assert fb.passed is True, str(fb)


def test_a_wrong_gradient_is_still_caught_along_the_sphere():
    def rows_detached(i, t, ai, at, tau, rank):                  # the rows carry no gradient
        return reference(F.normalize(i.detach(), dim=-1), t.detach(), ai, at, tau, rank)

    fb = lesson10.check_local_loss(rows_detached)
    assert fb.passed is False and "differs" in str(fb), str(fb)


# --- check_local_loss: slips named ------------------------------------------------------------

def _transposed(i, t, ai, at, tau, rank):
    # lesson 04's clip_loss pattern: only right for the square matrix of one process
    logits_per_image = i @ at.T / tau                             # (B, W·B)
    labels = rank * len(i) + torch.arange(len(i))
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


def _gathered_rows(i, t, ai, at, tau, rank):
    labels = rank * len(i) + torch.arange(len(i))
    return (F.cross_entropy(i @ at.T / tau, labels) + F.cross_entropy(ai @ t.T / tau, labels)) / 2


def _b_from_the_gather(i, t, ai, at, tau, rank):
    b = len(ai)                                                   # W·B, not B
    labels = rank * b + torch.arange(b)
    return (F.cross_entropy(i @ at.T / tau, labels) + F.cross_entropy(t @ ai.T / tau, labels)) / 2


def _notebook_w(i, t, ai, at, tau, rank):
    b = len(ai) // 2                                              # the notebook's W = 2
    labels = rank * b + torch.arange(b)
    return (F.cross_entropy(i @ at.T / tau, labels) + F.cross_entropy(t @ ai.T / tau, labels)) / 2


def _clip_loss_on_a_rectangle(i, t, ai, at, tau, rank):
    from clipcourse.loss import clip_loss
    return clip_loss(i, at, tau)


@pytest.mark.parametrize("fn, says", [
    (_transposed, "(W·B, B)"),
    (_gathered_rows, "(W·B, B)"),
    (_b_from_the_gather, "len(image_features)"),
    (_notebook_w, "len(image_features)"),
    (_clip_loss_on_a_rectangle, "square"),
    (lambda i, t, ai, at, tau, r: reference(i, t, ai, at, 1 / tau, r), "multiplied by τ"),
])
def test_local_loss_slips_are_named(fn, says):
    fb = lesson10.check_local_loss(fn)
    assert fb.passed is False, str(fb)
    assert says in str(fb), str(fb)
    assert "Test it on small tensors first" not in str(fb)         # not the generic hint


# --- check_bound: slips named -----------------------------------------------------------------

@pytest.mark.parametrize("answer, says", [
    (math.log(48), "log K"),                                      # the table's shared information
    (3.871, "log K"),
    (2 * math.log(128), "not add up"),                            # one bound per process, summed
    (math.log(511), "SimCLR"),                                    # NT-Xent's 2B - 1 candidates
    (math.log(512), "SimCLR"),                                    # 2 × 256 (or 128 × 4: both named)
])
def test_bound_slips_are_named(answer, says):
    fb = lesson10.check_bound(answer)
    assert fb.passed is False, str(fb)
    assert says in str(fb), str(fb)


def test_log_512_still_names_both_readings():
    text = str(lesson10.check_bound(math.log(512)))
    assert "accumulation" in text and "SimCLR" in text, text


# --- clipcourse.distributed -------------------------------------------------------------------

def test_local_clip_loss_names_a_feature_size_mismatch():
    img, txt = F.normalize(torch.randn(8, 6), dim=-1), F.normalize(torch.randn(8, 6), dim=-1)
    with pytest.raises(ValueError, match="all_text_features"):
        distributed.local_clip_loss(img[:4], txt[:4], img, torch.randn(8, 5), 0.1, 0)
    with pytest.raises(ValueError, match="all_image_features"):
        distributed.local_clip_loss(img[:4, :5], txt[:4, :5], img, txt, 0.1, 0)


def test_local_clip_loss_names_a_gathered_batch_that_is_not_whole_local_batches():
    img, txt = torch.randn(6, 4), torch.randn(6, 4)
    with pytest.raises(ValueError, match="multiple of the local batch"):
        distributed.local_clip_loss(img[:4], txt[:4], img, txt, 0.1, 0)


def _hooked_gather(rank, world_size):
    """What a gradient hook on the gathered features sees, next to what it should see."""
    torch.manual_seed(0)
    x = torch.randn(world_size * 3, 4)[rank * 3:(rank + 1) * 3].clone().requires_grad_(True)
    w = torch.randn(world_size * 3, 4)                            # the same in every process
    gathered = distributed.all_gather_with_grad(x)                # (W·3, 4)
    seen = []
    gathered.register_hook(seen.append)                           # e.g. logging the features' gradient
    (gathered * w).sum().backward()
    return {"seen": seen[0].clone(), "expected": w, "x": x.grad.clone()}


def test_the_gathers_backward_leaves_the_incoming_gradient_alone():
    results = distributed.launch(_hooked_gather, world_size=2, timeout=300)
    for rank, r in enumerate(results):
        assert torch.equal(r["seen"], r["expected"]), rank        # not the all-reduced sum
        assert torch.allclose(r["x"], 2 * r["expected"][rank * 3:(rank + 1) * 3])   # both losses' share
