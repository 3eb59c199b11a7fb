"""Checker for lesson 01 (embeddings and similarity): the similarity matrix of a batch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import Feedback, correct, not_attempted, wrong


def _close(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.shape == y.shape and torch.allclose(x, y, atol=1e-4, rtol=1e-4)


def check_similarity_matrix(answer, image_features: torch.Tensor, text_features: torch.Tensor) -> Feedback:
    """Is `answer` the (B, B) cosine-similarity matrix, rows = images, columns = captions?"""
    if answer is None:
        return not_attempted("the (B, B) matrix of cosine similarities between images (rows) and captions (columns)")
    if isinstance(answer, np.ndarray) and answer.dtype.kind in "fiub":
        answer = torch.tensor(answer)                # a numpy array (x.numpy()): judged by its numbers
    if not isinstance(answer, torch.Tensor):
        return wrong(f"expected a torch.Tensor, got {type(answer).__name__}.",
                     "Compute it with tensor operations: normalise, then use @.")
    if answer.is_complex() or not (answer.is_floating_point()):
        return wrong(f"got a {answer.dtype} tensor: cosine similarities are fractions in [-1, 1].",
                     "Keep the features as floats; don't round, compare (>, ==) or argmax.")
    img = image_features.detach().double()
    txt = text_features.detach().double()
    ans = answer.detach().double().cpu()
    b_img, dim = img.shape
    b_txt = len(txt)
    expected = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T          # (B_img, B_txt)
    if ans.shape != expected.shape:
        if ans.shape == (dim, dim):
            return wrong(f"wrong shape {tuple(ans.shape)}: that is (D, D), features x features.",
                         "Put the batch first: image_features @ text_features.T gives (B, B), "
                         "not image_features.T @ text_features.")
        if ans.ndim == 1 and len(ans) == b_img:
            return wrong(f"wrong shape {tuple(ans.shape)}: you computed one similarity per pair "
                         f"(the diagonal only).",
                         "Every image against every caption: a matrix product, not F.cosine_similarity(a, b).")
        if ans.ndim == 0:
            return wrong("got a single number; expected a (B, B) matrix.", "Do not sum or average the matrix.")
        return wrong(f"wrong shape {tuple(ans.shape)}; expected {tuple(expected.shape)} "
                     f"(images x captions).", "normalise both, then image_features @ text_features.T.")
    bad = (~torch.isfinite(ans)).sum().item()
    if bad:
        return wrong(f"{bad} entries are NaN or infinite: a division by a zero length (0 / 0), usually a "
                     "normalisation written by hand.",
                     "F.normalize(x, dim=-1) guards against zero vectors; or check what you divide by.")
    if _close(ans, expected):
        return correct("Rows are images, columns are captions, every entry is a cosine in [-1, 1].")
    raw = img @ txt.T
    n_img, n_txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    candidates = [
        (raw, "not normalised: these are raw dot products, which grow with the vectors' lengths.",
         "L2-normalise both feature sets first: x / x.norm(dim=-1, keepdim=True)."),
        (n_img @ txt.T, "only the image features are normalised.", "Normalise the text features too."),
        (img @ n_txt.T, "only the text features are normalised.", "Normalise the image features too."),
        (F.normalize(img, dim=0) @ F.normalize(txt, dim=0).T,
         "normalised along the wrong dimension: dim=0 scales each feature across the batch.",
         "Normalise each row (each vector): dim=-1 (or dim=1)."),
        (torch.softmax(expected, dim=-1), "you applied a softmax: this exercise wants the cosines themselves.",
         "Stop after the matrix product."),
        (1 - expected, "that is 1 - cos, the cosine *distance*, not the similarity.", "Drop the '1 -'."),
        (torch.cdist(n_img, n_txt), "these are Euclidean distances between the normalised vectors, not cosines.",
         "Use the matrix product of the normalised features: image_features @ text_features.T."),
        (-expected, "the sign is flipped: minus the cosine similarities.", "Drop the minus sign."),
        (F.normalize(img, dim=-1) / img.norm(dim=-1, keepdim=True) @ (F.normalize(txt, dim=-1) / txt.norm(dim=-1,
         keepdim=True)).T, "you divided by the squared lengths ((x * x).sum(), without the square root).",
         "The length is the square root: x.norm(dim=-1, keepdim=True)."),
    ]
    if b_img == b_txt:
        lengths = img.norm(dim=-1) * txt.norm(dim=-1)                          # (B,): |image k| |caption k|
        candidates += [
            (raw / lengths, "you divided column j by the lengths of image j and caption j (a (B,) vector of "
             "lengths broadcast over the rows); entry (i, j) needs |image i| |caption j|.",
             "Normalise each set first, or divide by the (B, B) outer product: "
             "x.norm(dim=-1, keepdim=True) * y.norm(dim=-1)."),
            (raw / lengths[:, None], "you divided row i by the lengths of image i and caption i; entry (i, j) "
             "needs |image i| |caption j|.", "Normalise each set first, then take the matrix product."),
        ]
    if b_img == b_txt == len(n_img):
        candidates += [
            (n_img @ n_img.T, "these are images against images: the matrix is symmetric with 1s on the diagonal.",
             "Rows are images, columns are captions: image_features @ text_features.T."),
            (n_txt @ n_txt.T, "these are captions against captions: the matrix is symmetric with 1s on the diagonal.",
             "Rows are images, columns are captions: image_features @ text_features.T."),
        ]
    if b_img == b_txt:
        candidates.insert(0, (expected.T, "transposed: your rows are captions and columns are images.",
                              "Put the images on the left: image_features @ text_features.T."))
        candidates.append((raw.T, "transposed and not normalised.",
                           "Normalise both sets, and put the images on the left."))
    for target, message, hint in candidates:
        if _close(ans, target):
            return wrong(message, hint)
    # symptoms: what the numbers look like when no exact formula matched
    ratio = ans / expected.where(expected.abs() > 1e-3, torch.full_like(expected, float("nan")))
    usable = ratio[torch.isfinite(ratio)]
    k = usable.mean().item() if usable.numel() else float("nan")
    if usable.numel() >= 2 and torch.allclose(usable, usable.mean().expand_as(usable), rtol=1e-3, atol=1e-6) \
            and abs(k - 1) > 1e-2:                   # a factor of about 1 is low precision (below), not a scale
        return wrong(f"your matrix is the cosine similarities times {k:.4g}: the right pattern, scaled.",
                     "If you divided by τ, these are the logits: this exercise stops at the cosines. Otherwise look "
                     "for an extra factor.")
    raw_ratio = ans / raw.where(raw.abs() > 1e-3, torch.full_like(raw, float("nan")))
    usable = raw_ratio[torch.isfinite(raw_ratio)]
    if usable.numel() >= 2 and torch.allclose(usable, usable.mean().expand_as(usable), rtol=1e-3, atol=1e-9):
        return wrong("these are the raw dot products divided by one number for the whole matrix, not by each "
                     "pair's lengths (x.norm() without dim= is one length for the whole (B, D) matrix).",
                     "Divide each row by its own length: x.norm(dim=-1, keepdim=True), or F.normalize(x, dim=-1).")
    row_ratio = ratio.nanmean(dim=1, keepdim=True)
    col_ratio = ratio.nanmean(dim=0, keepdim=True)
    if torch.isfinite(row_ratio).all() and _close(ans, expected * row_ratio):
        return wrong("each row is the right row times its own factor: the image features are not unit length.",
                     "L2-normalise the image features along dim=-1 (x / x.norm(dim=-1, keepdim=True)).")
    if torch.isfinite(col_ratio).all() and _close(ans, expected * col_ratio):
        return wrong("each column is the right column times its own factor: the text features are not unit length.",
                     "L2-normalise the text features along dim=-1 (x / x.norm(dim=-1, keepdim=True)).")
    if ans.shape[0] == ans.shape[1] and _close(ans.sum(dim=-1), torch.ones(len(ans), dtype=ans.dtype)) \
            and (ans >= 0).all():
        return wrong("every row sums to 1 and nothing is negative: that is a softmax (probabilities), "
                     "not the cosine similarities.", "Stop after the matrix product of the normalised features.")
    if ans.shape[0] == ans.shape[1] and _close(ans.sum(dim=0), torch.ones(ans.shape[1], dtype=ans.dtype)) \
            and (ans >= 0).all():
        return wrong("every column sums to 1 and nothing is negative: that is a softmax over dim=0, "
                     "not the cosine similarities.", "Stop after the matrix product of the normalised features.")
    if ans.abs().max() > 1 + 1e-4:
        return wrong(f"values up to {ans.abs().max().item():.3g}, but cosine similarities lie in [-1, 1].",
                     "Normalise both feature sets before the matrix product.")
    diff = (ans - expected).abs().max().item()
    if diff <= 0.06:
        return wrong(f"close, but not exact (largest difference {diff:.3g}): rounded, or computed in low precision "
                     "(float16 / bfloat16).", "Keep full float32 precision and don't round the result.")
    return wrong(f"the shape is right but the values differ from the cosine similarities "
                 f"(largest difference {diff:.3g}).",
                 "normalise both feature sets along dim=-1, then image_features @ text_features.T.")
