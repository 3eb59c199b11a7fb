"""What τ does to a batch's softmax, as pure functions of the similarities (lesson 05).

Lesson 05 builds each of these by hand, then imports them from here; the explorers in `widgets`
and the figures in `plots` draw what they compute, and lessons 06–08 apply them to trained models.
Only torch is imported. Every function takes a similarity matrix (or the two feature sets) and τ
and works in float64, so what they print is the same on every computer to many digits.

The one formula to remember (Wang & Liu, CVPR 2021): for image i, the image→text loss is
ℓ_i = -log P_ii with P_ij = softmax_j(s_ij / τ), and its gradient on the similarity of a negative
caption j is ∂ℓ_i/∂s_ij = P_ij / τ. The negatives that already look most like the image get the
largest push, and the lower τ, the more the push concentrates on the hardest few. Entropy and its
exponential, the effective number of negatives, measure how spread that push is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch

from .loss import _check_features, _check_unit, _check_whole, clip_loss
from .temperature import LearnableTemperature, _positive

TAU_RANGE = (1e-3, 10.0)        # the range of τ searched and shown (the sliders' range too)


def _check_tau(tau, name: str = "tau") -> float:
    """τ as a float > 0, or a TypeError / ValueError naming it: at τ = 0 the softmax divides by zero (NaN),
    below 0 it turns over and favours the least similar caption."""
    return _positive(tau, name)


def _check_sims(sims) -> torch.Tensor:
    """The similarity matrix as float64 (B, B), B >= 2, finite; or a TypeError / ValueError naming `sims`."""
    if not isinstance(sims, torch.Tensor):
        raise TypeError(f"sims must be a torch tensor of shape (B, B) (see similarities), got {type(sims).__name__}")
    if not sims.is_floating_point():
        raise TypeError(f"sims must hold floating-point similarities, got dtype {sims.dtype}")
    if sims.ndim != 2 or sims.shape[0] != sims.shape[1] or len(sims) < 2:
        raise ValueError(f"sims must be a square (B, B) matrix with B >= 2 (image i against every caption j; "
                         f"a batch of one has no negatives), got shape {tuple(sims.shape)}")
    if not bool(torch.isfinite(sims).all()):
        raise ValueError("sims holds NaN or infinity: check the features it came from")
    return sims.double()


def _check_pair(image_features, text_features) -> None:
    """Both float (B, D) tensors of one shape with L2-normalised rows (so that image_i · text_j is a cosine), or a
    TypeError / ValueError naming the argument."""
    _check_features(image_features, text_features)
    _check_unit("image_features", image_features)
    _check_unit("text_features", text_features)


def similarities(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarities s_ij = image_i · text_j, in float64: (B, B)."""
    _check_pair(image_features, text_features)
    return image_features.detach().double() @ text_features.detach().double().T


def probabilities(sims: torch.Tensor, tau: float) -> torch.Tensor:
    """Each row's softmax over the captions, P_ij = softmax_j(s_ij / τ): (B, B)."""
    sims, tau = _check_sims(sims), _check_tau(tau)
    return torch.softmax(sims / tau, dim=-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats along the last dimension (0 · log 0 counts as 0)."""
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point():
        what = probs.dtype if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise TypeError(f"probs must be a float tensor of probabilities, got {what}")
    if not bool(((probs >= 0).all(dim=-1) & ((probs.sum(dim=-1) - 1).abs() <= 1e-3)).all()):
        raise ValueError("probs must be probabilities (>= 0, each row summing to 1): for similarities, take "
                         "probabilities(sims, tau) first")
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def gradient_weights(sims: torch.Tensor, tau: float) -> torch.Tensor:
    """∂ℓ_i/∂s_ij of each row's image→text loss ℓ_i = -log P_ii: (P - I) / τ, shape (B, B).

    Off the diagonal: P_ij / τ, the push on negative j. On the diagonal: -(1 - P_ii) / τ, the pull
    on the positive; each row sums to zero.
    """
    tau = _check_tau(tau)
    p = probabilities(sims, tau)                                  # (B, B); checks sims
    return (p - torch.eye(len(p), dtype=p.dtype)) / tau


@dataclass(frozen=True)
class RowStats:
    """What τ does to one row i (one image against every caption of the batch)."""

    tau: float
    row: int
    probs: torch.Tensor            # (B,) P_ij = softmax_j(s_ij / τ)
    entropy: float                 # nats; log B when uniform, 0 when all mass is on one caption
    effective_negatives: float     # exp(entropy): how many captions share the mass "as if evenly"
    weights: torch.Tensor          # (B,) push on each negative, P_ij / τ; 0 at j = i
    pull: float                    # pull on the positive, (1 - P_ii) / τ = Σ_j≠i P_ij / τ (summed: exact
                                   # even when P_ii rounds to 1)
    hardest: int                   # the negative most similar to image i
    hardest_share: float           # its share of the push, P_i,hardest / Σ_j≠i P_ij


def row_stats(sims: torch.Tensor, tau: float, row: int) -> RowStats:
    """Probabilities, entropy, effective negatives and gradient weights of row `row` at τ."""
    sims, tau = _check_sims(sims), _check_tau(tau)
    b = len(sims)
    if isinstance(row, bool) or not isinstance(row, Integral) or not 0 <= row < b:
        raise ValueError(f"row must be a whole number in [0, {b - 1}] (one image of the batch), got {row!r}")
    s = sims[row]                                                 # (B,)
    p = torch.softmax(s / tau, dim=0)                             # (B,)
    h = float(entropy(p))
    weights = p / tau
    weights[row] = 0.0
    negatives = torch.ones(b, dtype=torch.bool)
    negatives[row] = False
    neg_sims = s.masked_fill(~negatives, -math.inf)
    hardest = int(neg_sims.argmax())
    # the share among negatives as a softmax over negatives only: the same number as
    # P_ij / Σ P_ik, but it stays finite when every P_ij underflows to 0 at a tiny τ
    share = torch.softmax(neg_sims / tau, dim=0)
    return RowStats(tau=float(tau), row=row, probs=p, entropy=h, effective_negatives=math.exp(h),
                    weights=weights, pull=float(weights.sum()), hardest=hardest,
                    hardest_share=float(share[hardest]))


def mean_entropy(sims: torch.Tensor, tau: float) -> float:
    """The entropy of the rows' distributions, averaged over the batch (nats)."""
    return float(entropy(probabilities(sims, tau)).mean())


def mean_effective_negatives(sims: torch.Tensor, tau: float) -> float:
    """The effective number of negatives e^H of each row, averaged over the batch (not e^(mean H), which is smaller)."""
    return float(entropy(probabilities(sims, tau)).exp().mean())


def hardest_shares(sims: torch.Tensor, tau: float) -> torch.Tensor:
    """For every row, the hardest negative's share of that row's push: (B,)."""
    sims, tau = _check_sims(sims), _check_tau(tau)
    s = sims.masked_fill(torch.eye(len(sims), dtype=torch.bool), -math.inf)
    return torch.softmax(s / tau, dim=-1).max(dim=-1).values


def loss_at(image_features: torch.Tensor, text_features: torch.Tensor, tau: float) -> float:
    """The CLIP loss (both directions) of a batch at τ."""
    tau = _check_tau(tau)
    _check_pair(image_features, text_features)
    return float(clip_loss(image_features.detach().double(), text_features.detach().double(), tau))


def loss_curve(image_features: torch.Tensor, text_features: torch.Tensor,
               taus: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The CLIP loss of one fixed batch at each τ: (len(taus),)."""
    return torch.tensor([loss_at(image_features, text_features, float(t)) for t in taus],
                        dtype=torch.float64)


def _check_tau_range(tau_range) -> tuple[float, float]:
    """(low, high) as floats with 0 < low < high, both finite; or a ValueError showing tau_range."""
    try:
        lo, hi = (_check_tau(t) for t in tau_range)
    except (TypeError, ValueError):
        lo = hi = None
    if lo is None or not lo < hi:
        raise ValueError(f"tau_range must be two finite numbers 0 < low < high, got {tau_range!r}")
    return lo, hi


def optimal_temperature(image_features: torch.Tensor, text_features: torch.Tensor,
                        tau_range: tuple[float, float] = TAU_RANGE, grid: int = 161) -> tuple[float, float]:
    """(τ*, loss at τ*): the τ in tau_range with the lowest loss for these fixed embeddings.

    A grid in log τ, then golden-section search between the best point's neighbours. If the best
    τ is an end of the range (the loss keeps falling beyond it), that end is returned.
    """
    lo, hi = (math.log(t) for t in _check_tau_range(tau_range))
    _check_whole("grid", grid, 3)                    # points in log τ
    _check_pair(image_features, text_features)
    us = torch.linspace(lo, hi, grid, dtype=torch.float64)
    losses = loss_curve(image_features, text_features, us.exp())
    k = int(losses.argmin())
    if k in (0, grid - 1):
        return float(us[k].exp()), float(losses[k])
    a, b = float(us[k - 1]), float(us[k + 1])
    f = lambda u: loss_at(image_features, text_features, math.exp(u))  # noqa: E731
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(40):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    u = (a + b) / 2
    return math.exp(u), f(u)


def descend_log_temperature(image_features: torch.Tensor, text_features: torch.Tensor, start: float,
                            steps: int, lr: float = 1.0,
                            tau_range: tuple[float, float] = TAU_RANGE) -> tuple[list[float], list[float]]:
    """Gradient descent on log(1/τ) for fixed embeddings, as CLIP learns τ: (taus, losses).

    Uses the course's own `LearnableTemperature` (it stores logit_scale = log(1/τ)) and plain SGD,
    clamped to tau_range after every step. Returns steps + 1 values: the start and each step's τ.
    """
    lo, hi = _check_tau_range(tau_range)
    start = min(max(_check_tau(start, "start"), lo), hi)
    _check_whole("steps", steps, 0)
    _check_pair(image_features, text_features)
    temp = LearnableTemperature(start, min_temperature=lo, max_temperature=hi).double()
    with torch.no_grad():
        temp.logit_scale.fill_(-math.log(start))          # exactly the start, not its float32 rounding
    opt = torch.optim.SGD(temp.parameters(), lr=lr)
    img, txt = image_features.detach().double(), text_features.detach().double()
    taus, losses = [], []
    for step in range(steps + 1):
        loss = clip_loss(img, txt, temp())
        taus.append(float(temp.temperature.detach()))
        losses.append(float(loss.detach()))
        if step == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        temp.clamp_()
    return taus, losses
