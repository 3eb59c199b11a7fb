"""The shape of a shared embedding space, and a τ diagnostic for any pair of embedding sets (lesson 12).

Two questions an engineer asks of a contrastive model's embeddings, answered from the embeddings alone:

* **Where do the two modalities sit?** `modality_gap` measures the distance between the centroid of the
  image embeddings and the centroid of the text embeddings (Liang et al. 2022, "Mind the Gap"): in CLIP
  they occupy two separate cones of the sphere. `cone_cosine` measures how narrow one cone is (the mean
  cosine between two different embeddings of the same modality), and `shift_along` moves embeddings along
  a direction, e.g. the gap vector, and puts them back on the sphere.
* **What does τ do to these embeddings?** `diagnose` checks a batch of matching pairs (row i of one set
  belongs with row i of the other) and reports the loss-optimal τ, the entropy and effective number of
  negatives at a given τ, and the hardest negatives, using the maths of lesson 05 (`temperature_maths`).

Only torch is imported; everything is computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real

import torch

from . import temperature_maths as tm
from .loss import _check_unit, _check_whole

NORM_TOLERANCE = 1e-3           # how far from 1 a row's length may be and still count as normalised
TIE_TOLERANCE = 1e-6            # similarities this close count as equal (float32 features of one caption)
MAX_PAIRS = 8192                # diagnose holds several (N, N) float64 matrices: 0.5 GB each at this N


def _features(x, name: str) -> torch.Tensor:
    """`x` as a float64 (N, D) tensor, or a TypeError / ValueError naming the argument."""
    if not isinstance(x, torch.Tensor):
        try:
            import numpy as np
            if isinstance(x, np.ndarray):
                if x.dtype.kind != "f":              # torch's own error for an object array names no argument
                    raise TypeError(f"{name} must hold real floating-point numbers, got numpy dtype {x.dtype}")
                x = torch.from_numpy(np.ascontiguousarray(x))   # a view such as x[::-1] has negative strides
        except ImportError:  # pragma: no cover - numpy comes with torch
            pass
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor (or a numpy array) of shape (N, D), got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must hold real floating-point numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D): one embedding per row, got shape {tuple(x.shape)}")
    if len(x) < 2 or x.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 embeddings of at least 1 number each, got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    bad = ~torch.isfinite(x).all(dim=1)
    if bad.any():
        raise ValueError(f"{name} holds NaN or infinity (first in row {int(bad.nonzero()[0])}): check the model "
                         "or the precision it ran in")
    return x


def _unit(x, name: str) -> torch.Tensor:
    """`x` as float64 (N, D) rows of length 1, or a TypeError / ValueError naming `name`. A row counts as
    normalised within NORM_TOLERANCE, or within its dtype's rounding where that is coarser (bfloat16: 2⁻⁷; such
    rows are then normalised again in float64)."""
    dtype = getattr(x, "dtype", None)
    eps = torch.finfo(dtype).eps if isinstance(dtype, torch.dtype) and dtype.is_floating_point else 0.0
    x = _features(x, name)
    _check_unit(name, x, max(NORM_TOLERANCE, eps))
    return torch.nn.functional.normalize(x, dim=-1) if eps > NORM_TOLERANCE else x


def _pair(image_features, text_features) -> tuple[torch.Tensor, torch.Tensor]:
    img = _unit(image_features, "image_features")
    txt = _unit(text_features, "text_features")
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"image_features and text_features must live in one space: their widths differ "
                         f"({img.shape[1]} and {txt.shape[1]})")
    return img, txt


@dataclass(frozen=True)
class ModalityGap:
    """Where two sets of embeddings sit relative to each other."""

    distance: float             # ‖mean(image) - mean(text)‖: 0 when the centroids coincide, at most 2
    vector: torch.Tensor        # (D,) mean(image) - mean(text), the gap vector (float64)

    def __str__(self) -> str:
        return f"modality gap {self.distance:.3f} (distance between the image and the text centroid)"


def modality_gap(image_features, text_features) -> ModalityGap:
    """The distance between the centroids of two sets of L2-normalised embeddings, and the gap vector.

    The two sets need not have the same number of rows (they need not be pairs), only the same width.
    """
    img, txt = _pair(image_features, text_features)
    vector = img.mean(dim=0) - txt.mean(dim=0)                   # (D,)
    return ModalityGap(distance=float(vector.norm()), vector=vector)


def cone_cosine(features) -> float:
    """The mean cosine similarity between two different rows of one set of L2-normalised embeddings.

    Near 0 for embeddings spread over the sphere, near 1 for a narrow cone. Uses ‖Σ x‖² = N + Σ_i≠j x_i·x_j,
    so it needs no (N, N) matrix.
    """
    x = _unit(features, "features")
    n = len(x)
    return float((x.sum(dim=0).square().sum() - n) / (n * (n - 1)))


def shift_along(features, vector, amount: float) -> torch.Tensor:
    """Each embedding moved by amount · vector, then put back on the unit sphere: (N, D), float64.

    With vector = the gap vector (image centroid - text centroid), a negative amount moves image embeddings
    towards the texts: amount = -1 makes the centroids meet before the re-normalisation.
    """
    x = _unit(features, "features")
    if not isinstance(vector, torch.Tensor) and hasattr(vector, "__array__"):   # numpy, as the features may be
        try:
            vector = torch.tensor(vector, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            pass                                                  # refused below, by name
    v = vector.detach().to("cpu", torch.float64) if isinstance(vector, torch.Tensor) else None
    if v is None or v.shape != (x.shape[1],):
        raise ValueError(f"vector must be a tensor of shape ({x.shape[1]},), one number per feature, got "
                         f"{tuple(v.shape) if v is not None else type(vector).__name__}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("vector holds NaN or infinity: every moved embedding would be NaN")
    if isinstance(amount, torch.Tensor) and amount.ndim == 0 and amount.is_floating_point():
        amount = float(amount)                                    # a 0-d tensor
    if isinstance(amount, bool) or not isinstance(amount, Real) or not math.isfinite(amount):
        raise TypeError(f"amount must be a finite number, got {amount!r}")
    amount = float(amount)
    moved = x + amount * v                                        # (N, D)
    if (moved.norm(dim=1) < 1e-12).any():
        raise ValueError("amount moves an embedding onto the origin, where it has no direction: use a smaller amount")
    return torch.nn.functional.normalize(moved, dim=-1)


@dataclass(frozen=True)
class HardNegative:
    """A non-matching pair that looks like a match: image `image` and caption `text`, j ≠ i."""

    image: int
    text: int
    similarity: float           # image · text of this negative pair
    positive: float             # image · its own caption: a negative above it is ranked first
    copies: tuple[int, ...] = ()  # other captions with the same similarity to every image (a repeated caption)

    @property
    def verdict(self) -> str:
        """'ranked above the match', 'tied with the match' (within 1e-6: often the same words) or ''."""
        if abs(self.similarity - self.positive) <= TIE_TOLERANCE:
            return "tied with the match"
        return "ranked above the match" if self.similarity > self.positive else ""


@dataclass(frozen=True)
class Diagnosis:
    """What τ does to one batch of matching pairs (see `diagnose`)."""

    n: int                      # pairs
    dim: int                    # embedding width
    tau: float                  # the τ the entropy and effective negatives are measured at
    optimal_tau: float          # the τ with the lowest CLIP loss for these fixed embeddings
    loss_at_tau: float
    loss_at_optimum: float
    mean_entropy: float         # nats, mean over the image→text rows; log n when uniform
    effective_negatives: float  # mean over rows of exp(entropy): how many captions share each row's mass
    matched: float              # fraction of images whose own caption is the most similar one (ties count)
    tied_at_top: float          # captions tied for the most similar, mean over images: 1 when every top is unique
    gap: float                  # the modality gap, ‖mean(image) - mean(text)‖
    hardest: tuple[HardNegative, ...] = field(default=())   # the most similar non-matching pairs, hardest first

    @property
    def at_optimum_edge(self) -> bool:
        """True when the loss-optimal τ is an end of the searched range: the loss keeps falling beyond it."""
        return math.isclose(self.optimal_tau, tm.TAU_RANGE[0], rel_tol=1e-6) or \
            math.isclose(self.optimal_tau, tm.TAU_RANGE[1], rel_tol=1e-6)

    def __str__(self) -> str:
        edge = "  (an end of the searched range)" if self.at_optimum_edge else ""
        lines = [f"{self.n} pairs of {self.dim}-d embeddings",
                 f"  loss-optimal τ      {self.optimal_tau:.3g}  (loss {self.loss_at_optimum:.3f}){edge}",
                 f"  at τ = {self.tau:<8.3g}    loss {self.loss_at_tau:.3f}, mean entropy {self.mean_entropy:.3f} nats "
                 f"(uniform: {math.log(self.n):.3f}), effective negatives {self.effective_negatives:.3g} of {self.n}",
                 f"  own caption on top  {self.matched:.1%} of images (a tie counts: repeated captions embed alike)"
                 + (f"; {self.tied_at_top:.3g} captions tie at the top on average"
                    + (": the text features hardly differ (a collapsed text tower?)" if self.tied_at_top > self.n / 2
                       else "") if self.tied_at_top > 1 else ""),
                 f"  modality gap        {self.gap:.3f}"]
        if self.tau > 1:        # open_clip clamps τ to [0.01, 1]: above 1 is most often logit_scale, or its exp, as τ
            lines.append(f"  note: τ = {self.tau:.3g} is above 1. If your model stores logit_scale = log(1/τ), "
                         f"pass tau = exp(-logit_scale), not logit_scale or logit_scale.exp()")
        if self.hardest:
            lines.append("  hardest negatives (image, caption: similarity vs the image's own caption):")
            lines += [f"    {h.image:>5}, {h.text:<5}  {h.similarity:+.3f} vs {h.positive:+.3f}  {h.verdict}".rstrip()
                      + (f"  (the same caption {len(h.copies)} more time{'s' * (len(h.copies) > 1)})" if h.copies else "")
                      for h in self.hardest]
        return "\n".join(lines)


def hardest_negatives(sims: torch.Tensor, k: int = 5) -> tuple[HardNegative, ...]:
    """The k most similar pairs (i, j) with j ≠ i of a (N, N) similarity matrix, hardest first.

    A caption repeated in the batch (the same column of similarities, within TIE_TOLERANCE) is listed once per
    image, with the other copies' columns in `copies`: k pairs name k different captions of an image.
    """
    s = tm._check_sims(sims)                                             # float64 (N, N), N >= 2, finite
    _check_whole("k (how many hardest negatives)", k, 0)
    n = len(s)
    off = s.masked_fill(torch.eye(n, dtype=torch.bool), -math.inf).flatten()    # (N·N,) the diagonal excluded
    order = off.argsort(descending=True, stable=True)[: n * (n - 1)]     # hardest first; a tie: the lower index
    found, listed = [], set()                                            # listed: (image, a copy's column)
    for t in (t for chunk in order.split(1024) for t in chunk.tolist()):
        i, j = divmod(t, n)
        if len(found) == k:
            break
        if (i, j) in listed:                                             # a copy of a caption already listed
            continue
        same = ((s - s[:, j : j + 1]).abs() <= TIE_TOLERANCE).all(dim=0)   # (N,) columns equal to column j
        copies = tuple(c for c in same.nonzero().flatten().tolist() if c not in (i, j))
        listed.update((i, c) for c in copies)
        found.append(HardNegative(image=i, text=j, similarity=float(s[i, j]), positive=float(s[i, i]), copies=copies))
    return tuple(found)


def diagnose(image_features, text_features, tau: float = 0.07, k: int = 5) -> Diagnosis:
    """A τ report for N matching pairs: row i of image_features belongs with row i of text_features.

    Both (N, D), L2-normalised, finite (a TypeError or ValueError names the argument otherwise). Reports the
    loss-optimal τ (`temperature_maths.optimal_temperature`), the image→text rows' mean entropy and effective
    number of negatives at `tau`, how often each image's own caption is the most similar (ties count), the modality gap,
    and the `k` hardest negatives. These numbers describe a batch of N: pass a sample of about your training batch
    size. Costs about 60 CLIP losses of an (N, N) matrix, time growing as N² (seconds for N = 1,000, minutes at
    a few thousand); more than MAX_PAIRS pairs are refused, before they fill the memory.
    """
    tau = tm._check_tau(tau)                                             # a float > 0, or an error naming tau
    _check_whole("k (how many hardest negatives)", k, 0)
    img, txt = _pair(image_features, text_features)
    if img.shape != txt.shape:
        raise ValueError(f"image_features and text_features must be pairs, row i with row i: their shapes differ "
                         f"({tuple(img.shape)} and {tuple(txt.shape)})")
    if len(img) > MAX_PAIRS:
        raise ValueError(f"image_features and text_features hold {len(img)} pairs, more than MAX_PAIRS = {MAX_PAIRS}: "
                         f"each (N, N) matrix would take {len(img) ** 2 * 8 / 2 ** 30:.1f} GiB. Pass a random sample "
                         "of about your training batch size (these numbers describe a batch of N)")
    sims = tm.similarities(img, txt)                                     # (N, N)
    h = tm.entropy(tm.probabilities(sims, tau))                          # (N,) one entropy per image
    # the CLIP loss is convex in 1/τ (log-sum-exps of linear functions, minus linear terms), so it has one valley in
    # log τ: a grid of 4 points a decade brackets it as well as a fine one, and the search between them does the rest
    best_tau, best_loss = tm.optimal_temperature(img, txt, grid=17)
    # own caption on top, ties included: an argmax would pick the first of two identical captions and count
    # every image of the second as a miss
    top = sims >= sims.max(dim=1, keepdim=True).values - TIE_TOLERANCE   # (N, N) the captions tied at each top
    matched = top.diagonal().double().mean()
    return Diagnosis(n=len(img), dim=img.shape[1], tau=float(tau), optimal_tau=best_tau,
                     loss_at_tau=tm.loss_at(img, txt, tau), loss_at_optimum=best_loss,
                     mean_entropy=float(h.mean()), effective_negatives=float(h.exp().mean()),
                     matched=float(matched), tied_at_top=float(top.sum(dim=1).double().mean()), gap=float((img.mean(0) - txt.mean(0)).norm()),
                     hardest=hardest_negatives(sims, k) if k else ())
