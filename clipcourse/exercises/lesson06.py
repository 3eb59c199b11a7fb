"""Lesson 06 exercise: write one training step of CLIP.

`check_training_step(fn)` runs your `fn(model, optimizer, images, tokens)` twice on a tiny model
and compares it, step by step, with the reference step on an identical twin: forward, loss,
zero_grad, backward, optimiser step, clamp of the temperature.
"""

from __future__ import annotations

import copy
import math

import torch

from . import Feedback, check_function, correct, not_attempted, wrong
from ._symptoms import explain_exception


def reference_step(model, optimizer, images, tokens) -> float:
    """One CLIP training step, as train.train takes it; returns the loss."""
    from ..loss import clip_loss

    image_features, text_features, temperature = model(images, tokens)
    loss = clip_loss(image_features, text_features, temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.temperature.clamp_()              # τ back into [0.01, 1]
    return loss.item()


def _setup():
    """A tiny seeded model whose logit_scale starts *above* the clamp, its optimiser and a batch."""
    from .. import data, train
    from ..encoders import ImageEncoderConfig, TextEncoderConfig
    from ..model import build_model
    from ..text import Tokenizer

    tok = Tokenizer.for_shapesworld()
    model = build_model(tok, seed=0, embed_dim=16, image=ImageEncoderConfig(resolution=16, widths=(8, 16)),
                        text=TextEncoderConfig(width=16, heads=2))
    with torch.no_grad():
        model.temperature.logit_scale.fill_(math.log(100) + 0.5)   # τ below 0.01: the clamp must act
    model.train()
    world = data.ShapesWorld.generate(12, seed=0, resolution=16)
    batches = [(data.to_float(world.images[i:i + 6]), tok(world.captions[i:i + 6])) for i in (0, 6)]

    def optimizer_for(m):
        return torch.optim.AdamW(train.parameter_groups(m, 0.05), lr=1e-2)

    return model, optimizer_for, batches


def _same(a, b, *, weights_only: bool = False) -> bool:
    """Do two twins hold the same parameters (weights_only: all but logit_scale, which the clamp moves)?"""
    pairs = zip(a.named_parameters(), b.named_parameters())
    return all(torch.allclose(p, q, atol=1e-6, rtol=1e-5) for (name, p), (_, q) in pairs
               if not (weights_only and "logit_scale" in name))


def _as_float(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _explain(err: Exception, step: int) -> Feedback:
    """What an error raised by the learner's training step usually means."""
    low = str(err).lower()
    said = f"your function raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if step == 2:
        said = "the first step ran, but on the second call " + said
    if "does not require grad and does not have a grad_fn" in low:
        return wrong(f"{said} — .backward() was called on a value cut off from the model: .item(), .detach(), "
                     "torch.no_grad() or a number rebuilt with torch.tensor(...).",
                     "Call loss.backward() on the tensor clip_loss returns, outside torch.no_grad().")
    if "backward through the graph a second time" in low:
        return wrong(f"{said} — backward ran twice on the same graph.",
                     "Compute the loss and call loss.backward() once per step.")
    feedback = explain_exception(err, "the first step ran, but on the second call " if step == 2 else "")
    if feedback.hint.startswith("Test it on small tensors"):
        feedback.hint = "Follow the hand-built loop: forward, loss, zero_grad, backward, step, clamp."
    return feedback


def check_training_step(answer) -> Feedback:
    """Check `answer(model, optimizer, images, tokens) -> loss` against the reference step."""
    feedback = check_function(
        answer, "a function training_step(model, optimizer, images, tokens) that takes one step",
        "Define `def training_step(model, optimizer, images, tokens): ...` and set answer = training_step.")
    if feedback is not None:
        return feedback
    from ..loss import clip_loss

    mine, optimizer_for, batches = _setup()
    ref = copy.deepcopy(mine)
    start = copy.deepcopy(mine)
    opt_mine, opt_ref = optimizer_for(mine), optimizer_for(ref)
    ceiling = math.log(100)

    # what the first loss would be with the usual mistakes about τ
    images, tokens = batches[0]
    with torch.no_grad():
        img, txt, tau = copy.deepcopy(start)(images, tokens)
        variants = {"right": clip_loss(img, txt, tau).item(), "no_tau": clip_loss(img, txt, 1.0).item(),
                    "times_tau": clip_loss(img, txt, 1 / tau).item(),
                    "init_tau": clip_loss(img, txt, 0.07).item(),
                    "logit_scale": clip_loss(img, txt, start.logit_scale.detach().clone()).item()}
        with torch.autocast("cpu", dtype=torch.bfloat16):       # the lesson's loop, copied with its autocast line
            img16, txt16, tau16 = copy.deepcopy(start)(images, tokens)
        variants["bfloat16"] = clip_loss(img16, txt16, tau16).item()

    for step, (images, tokens) in enumerate(batches, 1):
        try:
            returned = answer(mine, opt_mine, images.clone(), tokens.clone())
        except Exception as e:  # the learner's code: report, don't crash the lesson
            return _explain(e, step)
        expected = reference_step(ref, opt_ref, images, tokens)
        value = _as_float(returned)
        if value is None:
            return wrong(f"your function returned {type(returned).__name__}, not the loss.",
                         "End with `return loss.item()` (or return the loss tensor).")
        if not math.isfinite(value):
            return wrong(f"your function returned a loss of {value}: a NaN or infinite loss ruins every weight it "
                         "touches.", "Use clip_loss(*model(images, tokens)); don't compute logs or exps by hand.")
        if not mine.training:
            return wrong("your function left the model in evaluation mode (model.eval()); training steps run in "
                         "training mode.", "Don't call model.eval() in a training step (or call model.train() "
                         "before returning).")
        if step == 1 and not math.isclose(value, expected, rel_tol=1e-4, abs_tol=1e-5):
            if math.isclose(value, variants["init_tau"], rel_tol=1e-4, abs_tol=1e-5):
                return wrong("the loss uses a fixed τ = 0.07, not the model's learnable temperature.",
                             "Pass the temperature the model returns: clip_loss(*model(images, tokens)).")
            if math.isclose(value, variants["bfloat16"], rel_tol=1e-4, abs_tol=1e-5):
                return wrong("that is the loop's bfloat16 forward pass (torch.autocast): right, but the checker "
                             "compares float32 steps, so its numbers differ.",
                             "Leave out the `with torch.autocast(...)` line: image_features, text_features, tau = "
                             "model(images, tokens).")
            if math.isclose(value, variants["logit_scale"], rel_tol=1e-4, abs_tol=1e-5):
                return wrong("the loss was given logit_scale = log(1/τ) as its temperature.",
                             "The temperature is exp(-logit_scale); model(images, tokens) returns it third.")
            after = copy.deepcopy(start)                # the loss one reference step later
            reference_step(after, optimizer_for(after), images, tokens)
            with torch.no_grad():
                after_loss = clip_loss(*after(images, tokens)).item()
            if math.isclose(value, after_loss, rel_tol=1e-4, abs_tol=1e-5):
                return wrong("you returned the loss computed after the step, on the updated weights; the step's "
                             "loss is the one that was backpropagated.",
                             "Return the value of the loss you called .backward() on.")
            if math.isclose(value, variants["no_tau"], rel_tol=1e-4, abs_tol=1e-5):
                return wrong("the loss ignores the temperature.",
                             "model(images, tokens) returns (image_features, text_features, temperature): "
                             "pass all three to clip_loss.")
            if math.isclose(value, variants["times_tau"], rel_tol=1e-4, abs_tol=1e-5):
                return wrong("the similarities were multiplied by τ instead of divided by it.",
                             "clip_loss(image_features, text_features, temperature) divides by τ for you.")
            return wrong(f"the loss you returned ({value:.4f}) is not CLIP's loss on this batch ({expected:.4f}).",
                         "Use loss = clip_loss(*model(images, tokens)) with the model in training mode.")
        if step == 1:
            grads = [p.grad for p in mine.parameters() if p.requires_grad and p is not mine.logit_scale]
            if _same(mine, start, weights_only=True):
                if all(g is None for g in grads):
                    return wrong("the weights did not move and no gradient reached them.",
                                 "Call loss.backward() after optimizer.zero_grad() and before optimizer.step() "
                                 "(zero_grad between backward and step throws the gradients away).")
                return wrong("the weights did not move although gradients were computed.",
                             "Call optimizer.step() after loss.backward().")
            if all(g is None or not g.any() for g in grads):
                return wrong("the gradients were zero when the optimiser stepped.",
                             "Zero the gradients *before* loss.backward(), not between backward and step.")
            if not opt_mine.state:
                return wrong("the weights moved, but the optimizer you were given never stepped: you built your "
                             "own optimiser, which starts from scratch (no Adam moments) at every call.",
                             "Use the optimizer argument: optimizer.zero_grad(), loss.backward(), optimizer.step().")
            steps = {int(st["step"]) for st in opt_mine.state.values() if "step" in st}
            if steps and max(steps) > 1:
                return wrong(f"the optimiser stepped {max(steps)} times in one call.", "One optimizer.step() per call.")
            ls = mine.logit_scale.item()
            if 1e-6 < abs(ls - ceiling) <= 0.05:
                return wrong(f"logit_scale is {ls:.4f}, near but not at ln 100 = {ceiling:.4f}, where the clamp puts "
                             "it: you clamped *before* the step, and the step moved it again.",
                             "Clamp last: after optimizer.step(), call model.temperature.clamp_().")
            if ls > ceiling + 1e-6:
                return wrong(f"logit_scale is {ls:.4f}, above ln 100 = {ceiling:.4f}: "
                             "τ fell below 0.01.",
                             "After optimizer.step(), call model.temperature.clamp_() (the bounds on logit_scale "
                             "are [0, ln 100], not [0, 100]).")
            if math.isclose(ls, 1.0, abs_tol=1e-6) or math.isclose(ls, 0.01, abs_tol=1e-6):
                return wrong(f"logit_scale is {ls:g}: you clamped logit_scale into τ's range [0.01, 1]. "
                             "logit_scale is log(1/τ), so its range is [0, ln 100].",
                             "model.temperature.clamp_() does it right; by hand: logit_scale.clamp_(0, math.log(100)).")
            if ls < ceiling - 0.05:
                return wrong(f"logit_scale is {ls:.4f}, well below ln 100 = {ceiling:.4f}, where the clamp should "
                             "have put it: it was clamped to the wrong bound.",
                             "model.temperature.clamp_() keeps logit_scale in [0, ln 100] (τ in [0.01, 1]).")
            if not _same(mine, ref):
                return wrong("after one step your weights differ from the reference step's.",
                             "Use the optimizer you are given, one step per call, and no other changes to the model.")
        elif not _same(mine, ref):
            tau_cut_off = mine.logit_scale.grad is None or not mine.logit_scale.grad.any()
            if _same(mine, ref, weights_only=True) or (tau_cut_off and ref.logit_scale.grad is not None
                                                            and ref.logit_scale.grad.any()):
                # τ got no gradient (the clamp hid it at step 1); a τ rebuilt as a float also moves the weights a little
                return wrong(f"the weights follow the reference step, but τ does not learn: logit_scale stayed at "
                             f"{mine.logit_scale.item():.4f} where the reference's moved to {ref.logit_scale.item():.4f}.",
                             "Pass the temperature tensor the model returns to clip_loss, not tau.item() or "
                             "tau.detach(): those cut τ off from the gradient.")
            return wrong("the first step was right but the second went elsewhere: the gradients of the "
                         "first batch were still there.",
                         "Call optimizer.zero_grad() every step: PyTorch adds new gradients to old ones.")
    return correct("forward → clip_loss → zero_grad → backward → step → clamp: the same as train.train.")
