"""Checker for lesson 01 (embeddings and similarity): the similarity matrix of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Feedback, correct, not_attempted, wrong


def _close(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.shape == y.shape and torch.allclose(x, y, atol=1e-4, rtol=1e-4)


def check_similarity_matrix(answer, image_features: torch.Tensor, text_features: torch.Tensor) -> Feedback:
    """Is `answer` the (B, B) cosine-similarity matrix, rows = images, columns = captions?"""
    if answer is None:
        return not_attempted("the (B, B) matrix of cosine similarities between images (rows) and captions (columns)")
    if not isinstance(answer, torch.Tensor):
        return wrong(f"expected a torch.Tensor, got {type(answer).__name__}.",
                     "Compute it with tensor operations: normalise, then use @.")
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
    ]
    if b_img == b_txt:
        candidates.insert(0, (expected.T, "transposed: your rows are captions and columns are images.",
                              "Put the images on the left: image_features @ text_features.T."))
        candidates.append((raw.T, "transposed and not normalised.",
                           "Normalise both sets, and put the images on the left."))
    for target, message, hint in candidates:
        if _close(ans, target):
            return wrong(message, hint)
    if ans.abs().max() > 1 + 1e-4:
        return wrong(f"values up to {ans.abs().max().item():.3g}, but cosine similarities lie in [-1, 1].",
                     "Normalise both feature sets before the matrix product.")
    diff = (ans - expected).abs().max().item()
    return wrong(f"the shape is right but the values differ from the cosine similarities "
                 f"(largest difference {diff:.3g}).",
                 "normalise both feature sets along dim=-1, then image_features @ text_features.T.")
