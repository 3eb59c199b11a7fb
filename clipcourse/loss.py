"""The contrastive losses: CLIP's symmetric InfoNCE and SigLIP's pairwise sigmoid (lessons 04, 09).

Both take L2-normalised features and a temperature τ; the reference implementation (open_clip) takes
`logit_scale = 1 / τ` instead, and the tests check that the two agree in value and gradient.

Logits are computed in at least float32: at the clamp's τ = 0.01 a logit near 100 moves in bfloat16 in
steps of 0.5, so captions whose similarities differ by less than 0.005 can get one logit, and one step
changes a softmax probability by a factor e^0.5 ≈ 1.6.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F


UNIT_TOLERANCE = 1e-2   # how far from 1 a feature's length may be: autocast's bfloat16 features are within ~4e-3


def _check_features(image_features, text_features,
                    names: tuple[str, str] = ("image_features", "text_features")) -> None:
    """Raise a TypeError / ValueError naming the argument unless both are non-empty float (N, D) tensors of one
    shape."""
    a, b = names
    for name, x in ((a, image_features), (b, text_features)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D (batch, dim), got shape {tuple(x.shape)}")
    if image_features.shape[0] != text_features.shape[0]:
        raise ValueError(f"{a} and {b} need the same batch size, got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(f"{a} and {b} need the same feature size, got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    if image_features.shape[0] == 0:
        raise ValueError(f"empty batch: {a} has shape {tuple(image_features.shape)}")
    if image_features.shape[1] == 0:
        raise ValueError(f"features have size 0: {a} has shape {tuple(image_features.shape)}")


def _check_unit(name: str, x: torch.Tensor, tol: float = UNIT_TOLERANCE) -> None:
    """Raise a ValueError naming `name` unless every row of x has length 1 within tol (a NaN row fails too)."""
    norms = x.detach().to(torch.promote_types(x.dtype, torch.float32)).norm(dim=-1)   # (N,)
    off = ~((norms - 1).abs() <= tol)                                                 # (N,)
    if bool(off.any()):
        i = int(off.nonzero()[0])
        raise ValueError(f"{name} is not L2-normalised: row {i} has length {float(norms[i]):.4g}, not 1. "
                         f"Normalise each embedding first: F.normalize({name}, dim=-1)")


def _check_whole(name: str, value, low: int, high: float = math.inf) -> None:
    """Raise a ValueError naming `name` unless value is a whole number (an int, not a bool) in [low, high)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value < high:
        where = f">= {low}" if high == math.inf else f"in {low} .. {high - 1}"
        raise ValueError(f"{name} must be a whole number {where}, got {value!r}")


def _check_scalar(name: str, value, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (Real, torch.Tensor)):
        raise TypeError(f"{name} must be a float or a 0-d tensor, got {type(value).__name__}")
    if isinstance(value, torch.Tensor):
        if value.ndim != 0:
            raise ValueError(f"{name} must be a scalar (0-d tensor), got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor, got dtype {value.dtype}")
        v = float(value.detach())
    else:
        v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")


def _logits(image_features, text_features, temperature):
    """Cosine similarities / τ in at least float32: logits_per_image (B, B)."""
    dtype = torch.promote_types(image_features.dtype, torch.float32)
    sims = image_features.to(dtype) @ text_features.to(dtype).T          # (B, B)
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.to(dtype)
    return sims / temperature


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, temperature) -> torch.Tensor:
    """CLIP's loss: mean of cross-entropy image->text and text->image over logits = sims / τ."""
    _check_features(image_features, text_features)
    _check_scalar("temperature", temperature, positive=True)
    logits_per_image = _logits(image_features, text_features, temperature)  # (B, B)
    logits_per_text = logits_per_image.T                                    # (B, B)
    labels = torch.arange(len(logits_per_image), device=logits_per_image.device)  # the diagonal
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, temperature,
                bias) -> torch.Tensor:
    """SigLIP's loss: every pair is its own binary question, -Σ log σ(±(sims / τ + bias)) / B."""
    _check_features(image_features, text_features)
    _check_scalar("temperature", temperature, positive=True)
    _check_scalar("bias", bias, positive=False)
    logits = _logits(image_features, text_features, temperature)          # (B, B)
    if isinstance(bias, torch.Tensor):
        bias = bias.to(logits.dtype)
    logits = logits + bias
    n = len(logits)
    labels = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1  # +1 diagonal, -1 elsewhere
    return -F.logsigmoid(labels * logits).sum() / n


def in_batch_accuracy(image_features: torch.Tensor, text_features: torch.Tensor) -> float:
    """Fraction of images whose most similar caption in the batch is their own.

    In float32: bfloat16 similarities (autocast's) are rounded to steps of about 0.004 near 1, and the
    ties that makes would count as misses whenever a twin comes first. Both (B, D), L2-normalised.
    """
    _check_features(image_features, text_features)
    _check_unit("image_features", image_features)
    _check_unit("text_features", text_features)
    sims = image_features.float() @ text_features.float().T                 # (B, B)
    return (sims.argmax(dim=1) == torch.arange(len(sims), device=sims.device)).float().mean().item()


def clip_loss_with_hard_negatives(image_features: torch.Tensor, text_features: torch.Tensor,
                                  hard_negative_features: torch.Tensor, temperature) -> torch.Tensor:
    """NegCLIP's loss (lesson 11): clip_loss with M extra wrong captions in every image's row.

    Image→text: each image picks its caption among the B captions and the M hard negatives, logits
    (B, B + M). Text→image is clip_loss's: a hard negative describes no image, so it gets no row.
    With M = 0 this is clip_loss.
    """
    _check_features(image_features, text_features)
    _check_scalar("temperature", temperature, positive=True)
    if not isinstance(hard_negative_features, torch.Tensor):
        raise TypeError(f"hard_negative_features must be a torch.Tensor, got {type(hard_negative_features).__name__}")
    if not hard_negative_features.is_floating_point():
        raise TypeError(f"hard_negative_features must be floating point, got dtype {hard_negative_features.dtype}")
    if hard_negative_features.ndim != 2 or hard_negative_features.shape[1] != text_features.shape[1]:
        raise ValueError(f"hard_negative_features must be 2-D (M, {text_features.shape[1]}) like text_features, "
                         f"got shape {tuple(hard_negative_features.shape)}")
    all_text = torch.cat([text_features, hard_negative_features.to(text_features.dtype)])  # (B + M, D)
    logits_per_image = _logits(image_features, all_text, temperature)       # (B, B + M)
    logits_per_text = logits_per_image[:, :len(text_features)].T            # (B, B): captions only
    labels = torch.arange(len(logits_per_image), device=logits_per_image.device)  # still the diagonal
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
