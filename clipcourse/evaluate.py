"""Measuring what a CLIP learned: zero-shot accuracy, retrieval recall@k, alignment and uniformity
(lessons 06-08), a linear probe (lesson 11), BatchNorm statistics refreshed for a model's current weights and the
in-batch accuracy a batch's duplicate captions allow (lesson 06).

Zero-shot classification turns each class into a caption ("a green triangle"), embeds the captions
once, and labels each image with the class whose caption is most similar. On the held-out split no
such image was ever seen in training, so the score measures composition, not memory.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Sequence
from numbers import Integral

import torch
import torch.nn.functional as F

from .data import fix_articles, to_float
from .loss import _check_features, _check_scalar, _check_unit, _check_whole


def _in_eval_mode(model, encode, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """encode(chunk) over `inputs` in chunks, with the model in eval mode and put back as it was (even on an error).

    No inputs give a (0, D) tensor: the encoder runs once on the empty batch.
    """
    _check_whole("batch_size", batch_size, 1)       # inputs encoded at once
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [encode(inputs[i:i + batch_size].to(device)) for i in range(0, max(len(inputs), 1), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def embed_images(model, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """L2-normalised features (N, D) of uint8 images (N, 3, H, W), in eval mode; N = 0 gives (0, D)."""
    return _in_eval_mode(model, lambda x: model.encode_image(to_float(x)), images, batch_size)


@torch.no_grad()
def embed_texts(model, tokens: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """L2-normalised features (N, D) of token ids (N, L), in eval mode; N = 0 gives (0, D)."""
    return _in_eval_mode(model, model.encode_text, tokens, batch_size)


def _unit_rows(x, name: str, min_rows: int = 1) -> torch.Tensor:
    """Raise a TypeError / ValueError naming `name` unless x is a float (N, D) tensor, N >= min_rows, D >= 1, with
    L2-normalised rows (within loss.UNIT_TOLERANCE, which bfloat16-made features meet); return x."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {x.dtype}")
    if x.ndim != 2 or len(x) < min_rows or x.shape[1] < 1:
        raise ValueError(f"{name} must be (N, D) with N >= {min_rows} and D >= 1 (at least {min_rows} "
                         f"embedding{'s' if min_rows > 1 else ''} of at least 1 number), got shape {tuple(x.shape)}")
    _check_unit(name, x)
    return x


def _check_templates(templates) -> None:
    """Each template must hold exactly one '{}' for the class name; a ValueError shows the one that does not."""
    if isinstance(templates, str):
        raise ValueError(f"templates must be a sequence of strings such as ('a {{}}',), got the string {templates!r}")
    if len(templates) == 0:
        raise ValueError("templates is empty: give at least one, such as ('a {}',)")
    for t in templates:
        if not isinstance(t, str):
            raise TypeError(f"each template must be a string such as 'a {{}}', got {type(t).__name__}")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(t) if f is not None]
        except ValueError:                                             # an unmatched brace
            fields = None
        if fields != [""]:
            named = [f for f in fields or [] if f]
            hint = (f" It has named fields ({', '.join('{' + f + '}' for f in named)}), the style of "
                    "data.PROMPT_TEMPLATE and data.class_prompts; here the class name fills a plain '{}', "
                    "e.g. 'a {}' with 'red circle'." if named else "")
            raise ValueError(f"each template needs exactly one '{{}}' for the class name, got {t!r}.{hint}")


@torch.no_grad()
def zero_shot_classifier(model, tokenizer, classnames: Sequence[str],
                         templates: Sequence[str] = ("a {}",)) -> torch.Tensor:
    """Class embeddings (C, D): each class's prompts embedded, averaged, re-normalised (CLIP's
    prompt ensembling). Templates hold one '{}' for the class name; 'a {}' becomes 'an {}' before
    a vowel, as in the training captions."""
    _check_templates(templates)
    if not isinstance(classnames, str):
        classnames = list(classnames)                                    # a generator of names works too
    if isinstance(classnames, str) or not classnames:
        raise ValueError(f"classnames must be a non-empty list of names such as ['red circle'], got {classnames!r}")
    weights = []
    for name in classnames:
        features = embed_texts(model, tokenizer([fix_articles(t.format(name)) for t in templates]))  # (T, D)
        weights.append(F.normalize(features.mean(0), dim=-1))
    return torch.stack(weights)                                                          # (C, D)


def zero_shot_predict(image_features: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """The most similar class for each image: (N,). Both L2-normalised, (N, D) and (C, D); computed in at least
    float32, in the wider of their dtypes."""
    _unit_rows(image_features, "image_features")
    _unit_rows(class_embeddings, "class_embeddings")
    if image_features.shape[1] != class_embeddings.shape[1]:
        raise ValueError(f"image_features {tuple(image_features.shape)} and class_embeddings "
                         f"{tuple(class_embeddings.shape)} must have the same width (one embedding space)")
    dtype = torch.promote_types(torch.promote_types(image_features.dtype, class_embeddings.dtype), torch.float32)
    return (image_features.to(dtype) @ class_embeddings.to(dtype).T).argmax(dim=1)      # (N,)


def zero_shot_accuracy(image_features: torch.Tensor, class_embeddings: torch.Tensor,
                       labels: torch.Tensor) -> float:
    """Fraction of images whose most similar class prompt is their label."""
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype.is_complex \
            or labels.dtype == torch.bool:
        what = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise TypeError(f"labels must be integer class ids in a tensor (N,), got {what}")
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {tuple(labels.shape)}")
    if len(image_features) != len(labels):
        raise ValueError(f"image_features ({len(image_features)}) and labels ({len(labels)}) differ in length")
    pred = zero_shot_predict(image_features, class_embeddings)
    if not 0 <= int(labels.min()) <= int(labels.max()) < len(class_embeddings):
        raise ValueError(f"labels must be class ids in [0, {len(class_embeddings)}) (one per row of class_embeddings), "
                         f"got values from {int(labels.min())} to {int(labels.max())}")
    return (pred.cpu() == labels.cpu()).float().mean().item()


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor,
                     ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k both ways for N paired features: is the true partner among the k most similar?

    Keys: 'image_to_text_R@k' and 'text_to_image_R@k'. Only the paired caption counts as a hit,
    even when another caption says the same words (common in ShapesWorld), so these are lower
    bounds on what a person would call correct. Exact ties are broken by position.
    """
    if image_features.shape != text_features.shape:
        raise ValueError(f"image_features {tuple(image_features.shape)} and text_features "
                         f"{tuple(text_features.shape)} must be paired row by row")
    if len(image_features) == 0:
        raise ValueError(f"recall of no pairs is undefined: image_features has shape {tuple(image_features.shape)}")
    _check_features(image_features, text_features)
    for name, x in (("image_features", image_features), ("text_features", text_features)):
        if not bool(torch.isfinite(x).all()):            # NaN loses every comparison: each partner would rank first
            raise ValueError(f"{name} holds NaN or infinity: check the model or the precision it ran in")
    if isinstance(ks, Integral) or any(isinstance(k, bool) or not isinstance(k, Integral) or k < 1 for k in ks):
        raise ValueError(f"ks must be a sequence of whole numbers >= 1, such as (1, 5, 10), got {ks!r}")
    sims = image_features @ text_features.T                       # (N, N)
    target = torch.arange(len(sims), device=sims.device)
    out = {}
    for direction, s in (("image_to_text", sims), ("text_to_image", sims.T)):
        # rank of the true partner: candidates scoring higher, plus tied ones with a lower index
        # (ties broken by position, as a stable sort would: a collapsed encoder gets chance, not 1.0)
        true = s[target, target][:, None]                         # (N, 1)
        earlier = target[None, :] < target[:, None]                # (N, N): candidate j comes before i
        rank = (s > true).sum(dim=1) + ((s == true) & earlier).sum(dim=1)  # (N,)
        for k in ks:
            out[f"{direction}_R@{k}"] = (rank < k).float().mean().item()
    return out


def tied_accuracy(fits: torch.Tensor, direction: str = "image_to_text") -> float:
    """In-batch accuracy when every fitting pair ties at the top and ties fall at random (lesson 06).

    fits (B, B) bool: fits[i, j] when caption j fits picture i; the diagonal must hold. image_to_text, picture i
    finds its own among its row's fitting captions: 1 / row count; text_to_image, caption j its own picture among
    its column's: 1 / column count. With fits = "word for word the same caption" both ways give distinct captions / B,
    a ceiling for any model: twins get one feature, so they tie in every row and pick one picture as columns.
    """
    if not isinstance(fits, torch.Tensor) or fits.dtype != torch.bool:
        given = fits.dtype if isinstance(fits, torch.Tensor) else type(fits).__name__     # numpy's dtype reads "bool"
        raise TypeError(f"fits must be a bool tensor (B, B), got {given}")
    if fits.ndim != 2 or fits.shape[0] != fits.shape[1] or len(fits) == 0:
        raise ValueError(f"fits must be square (B, B) with B >= 1, got shape {tuple(fits.shape)}")
    if not bool(fits.diagonal().all()):
        raise ValueError("fits must hold on its diagonal: every caption fits its own picture")
    if direction not in ("image_to_text", "text_to_image"):
        raise ValueError(f"direction must be 'image_to_text' or 'text_to_image', got {direction!r}")
    counts = fits.sum(dim=1 if direction == "image_to_text" else 0)          # (B,) pairs tied with the true one
    return (1 / counts.double()).mean().item()


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """Wang & Isola's alignment: E ||f(x) - f(y)||^alpha over positive pairs (lower is better). x, y: (N, D),
    L2-normalised, row i of x with row i of y."""
    _check_features(x, y, names=("x", "y"))
    _check_unit("x", x)
    _check_unit("y", y)
    _check_scalar("alpha", alpha, positive=True)
    return (x - y).norm(dim=1).pow(alpha).mean().item()


def uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """Wang & Isola's uniformity: log E exp(-t ||f(x) - f(y)||^2) over distinct pairs (lower is
    more uniform on the sphere). x: (N, D), N >= 2, L2-normalised."""
    _unit_rows(x, "x", min_rows=2)
    _check_scalar("t", t, positive=True)
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log().item()


def _check_labelled(x, labels, what: str) -> None:
    """A TypeError or ValueError naming `what` unless x is floating (N, D) and labels are (N,) integer class ids."""
    if not isinstance(x, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(f"{what} takes tensors (features, labels), got {type(x).__name__} and {type(labels).__name__}")
    if x.dim() != 2 or labels.shape != (len(x),):
        raise ValueError(f"{what}: features must be (N, D) and labels (N,), got {tuple(x.shape)} and "
                         f"{tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{what}: labels must be integer class ids, got dtype {labels.dtype}")
    if not x.is_floating_point():
        raise TypeError(f"{what}: features must be floating point, got dtype {x.dtype}")


def _class_pair_sums(x: torch.Tensor, labels: torch.Tensor, what: str) -> tuple[float, float, float, float]:
    """Σ of f_i · f_j and the number of ordered pairs i != j, within one class and across classes."""
    _check_labelled(x, labels, what)
    if not bool((torch.isfinite(x).all(dim=1) & (x != 0).any(dim=1)).all()):   # F.normalize makes 0 of a zero row
        raise ValueError(f"{what}: features hold NaN, infinity or an all-zero row (no direction): check the model")
    x = F.normalize(x.detach().to("cpu", torch.float64), dim=-1)     # (N, D) unit vectors, exact sums
    _, ids = torch.unique(labels.cpu(), return_inverse=True)           # (N,) classes renumbered 0..C-1
    sums = torch.zeros(int(ids.max()) + 1 if len(ids) else 0, x.shape[1], dtype=x.dtype).index_add_(0, ids, x)
    sizes = torch.bincount(ids).double()                               # (C,) pictures per class
    same_pairs, all_pairs = (sizes * (sizes - 1)).sum().item(), len(x) * (len(x) - 1)
    same_sum = (sums.pow(2).sum() - len(x)).item()                     # Σ f_i · f_j over pairs of one class
    all_sum = (x.sum(0).pow(2).sum() - len(x)).item()                  # ... over all pairs i != j
    return same_sum, same_pairs, all_sum - same_sum, all_pairs - same_pairs


def tolerance(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Wang & Liu's tolerance: the mean cosine similarity of two different pictures of one class (higher:
    alike pictures stay together; lesson 07)."""
    same_sum, same_pairs, _, _ = _class_pair_sums(x, labels, "tolerance")
    if same_pairs == 0:
        raise ValueError("tolerance needs two pictures of one class at least; every class in labels has one or none")
    return same_sum / same_pairs


def other_class_similarity(x: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean cosine similarity of two pictures of different classes: what tolerance is compared with
    (lesson 07)."""
    _, _, other_sum, other_pairs = _class_pair_sums(x, labels, "other_class_similarity")
    if other_pairs == 0:
        raise ValueError("other_class_similarity needs pictures of two classes at least; labels hold one or none")
    return other_sum / other_pairs


def linear_probe(features: torch.Tensor, labels: torch.Tensor, fit_fraction: float = 0.5,
                 weight_decay: float = 1e-4) -> float:
    """Accuracy of a linear read-out of `labels` from `features`: a logistic regression fitted on the first
    `fit_fraction` of the rows, scored on the rest (the linear probe of Radford et al. 2021; lesson 11).

    It asks what the features hold, whether or not a caption can reach it: chance is 1 / (number of classes).
    """
    _check_labelled(features, labels, "linear_probe")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"linear_probe: labels must be class ids >= 0, got {int(labels.min())}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("linear_probe: features must be finite (they hold NaN or infinity): check the model")
    n_fit = int(len(labels) * fit_fraction)
    if not 0 < n_fit < len(labels):
        raise ValueError(f"fit_fraction must leave rows to fit and rows to score, got {fit_fraction} of {len(labels)}")
    x, y = features.detach().to("cpu", torch.float64), labels.cpu()
    w = torch.zeros(x.shape[1], int(y.max()) + 1, dtype=x.dtype, requires_grad=True)   # (D, C)
    b = torch.zeros(int(y.max()) + 1, dtype=x.dtype, requires_grad=True)                # (C,)
    optimizer = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = F.cross_entropy(x[:n_fit] @ w + b, y[:n_fit]) + weight_decay * w.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(closure)
    return ((x[n_fit:] @ w + b).argmax(-1) == y[n_fit:]).double().mean().item()


def recalibrate_batchnorm(model, images: torch.Tensor, batch_size: int = 256) -> torch.nn.Module:
    """A copy of `model` whose BatchNorm running statistics are recomputed on uint8 `images` (N, 3, H, W)
    for its current weights (lesson 06); the model itself is left as it was.

    In eval mode BatchNorm normalises with running averages of recent training batches. While the
    weights move fast those averages describe an older network; the copy's are averages over `images`
    for today's weights (torch.optim.swa_utils.update_bn, the routine SWA uses after averaging weights:
    each batch's mean and variance count equally, close to but not exactly the statistics of all images).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty tensor of shape (N, 3, H, W), got {shape}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 pictures as ShapesWorld stores them, got {images.dtype}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 (BatchNorm needs a batch statistic), got {batch_size}")
    fresh = copy.deepcopy(model)
    device = next(fresh.parameters()).device
    batches = [to_float(images[i:i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(batches, fresh.visual)   # resets the statistics, then averages
    return fresh
