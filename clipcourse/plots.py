"""Static figures for the lessons; matplotlib is imported here, never in the model code.

Every function draws into a new figure (or the `ax` it is given) and returns the figure, so a
notebook cell ends with the call and shows exactly one picture.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .loss import _check_whole
from .temperature_maths import _check_sims


def _axes(ax=None, figsize=(5, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def _tensor(x) -> torch.Tensor:
    """A tensor, numpy array or list as a detached CPU tensor (so the figures take numpy input too)."""
    return torch.as_tensor(x).detach().cpu()


def show_images(images: torch.Tensor, captions: Sequence[str] | None = None, ncols: int = 8,
                scale: float = 1.6):
    """A grid of uint8 images (N, 3, H, W) with their captions underneath (lesson 02)."""
    if isinstance(images, np.ndarray):                  # numpy pictures too (a list of tensors stays as it is)
        images = torch.as_tensor(images)
    n = len(images)
    _check_whole("ncols", ncols, 1)
    if captions is not None and len(captions) != n:
        raise ValueError(f"captions must hold one caption per image: got {len(captions)} for {n} images")
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * scale, nrows * scale * (1.25 if captions else 1)),
                             squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            if captions is not None:
                ax.set_title(_wrap(captions[i]), fontsize=7)
    return fig


def _wrap(text: str, width: int = 18) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def similarity_matrix(sims: torch.Tensor, title: str = "cosine similarity", ax=None,
                      row_label: str = "images", col_label: str = "captions", vmin=-1.0, vmax=1.0,
                      cmap: str = "viridis"):
    """A heatmap of a (B, B) similarity or probability matrix; positives sit on the diagonal."""
    fig, ax = _axes(ax)
    im = ax.imshow(_tensor(sims).numpy(), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set(title=title, xlabel=col_label, ylabel=row_label)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def positive_negative_histogram(sims: torch.Tensor, title: str = "similarities", ax=None,
                                bins: int = 40, range_=(-1.0, 1.0)):
    """Histograms of the diagonal (matching pairs) vs the off-diagonal (non-matching pairs)."""
    fig, ax = _axes(ax)
    s = _tensor(sims)
    _check_sims(s)                                  # square, finite: a NaN would silently drop out of the bars
    eye = torch.eye(len(s), dtype=torch.bool)
    ax.hist(s[~eye].numpy(), bins=bins, range=range_, density=True, alpha=0.6, label="negatives (i ≠ j)")
    ax.hist(s[eye].numpy(), bins=bins, range=range_, density=True, alpha=0.6, label="positives (i = j)")
    ax.set(title=title, xlabel="cosine similarity", ylabel="density")
    ax.legend(fontsize=8)
    return fig


def _bars(row, name: str, positive: int) -> np.ndarray:
    """One row (B,) as numpy, with `positive` an index into it, or a ValueError naming the argument."""
    r = _tensor(row).numpy()
    if r.ndim != 1:
        raise ValueError(f"{name} must be one row (B,), e.g. probs[0], got shape {r.shape}")
    _check_whole("positive (the matching caption's index)", positive, 0, len(r))
    return r


def softmax_row(probs: torch.Tensor, positive: int, title: str = "", ax=None, labels=None):
    """One row of a softmax as bars, the positive highlighted (lessons 01, 04, 05)."""
    fig, ax = _axes(ax, figsize=(6, 3))
    p = _bars(probs, "probs", positive)
    colors = ["tab:gray"] * len(p)
    colors[positive] = "tab:orange"
    ax.bar(np.arange(len(p)), p, color=colors)
    ax.set(title=title, xlabel="caption j", ylabel="probability", ylim=(0, 1))
    if labels is not None:
        ax.set_xticks(np.arange(len(p)), labels, rotation=60, ha="right", fontsize=7)
    return fig


def training_curves(history, metrics: Sequence[str] = ("loss", "temperature", "accuracy"), smooth: int = 10):
    """Loss, τ and in-batch accuracy against the step, side by side (lessons 06, 07)."""
    h = history.as_dict() if hasattr(history, "as_dict") else history
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3), layout="constrained", squeeze=False)
    for ax, name in zip(axes.flat, metrics):
        y = np.asarray(h[name], dtype=float)
        ax.plot(h["step"], y, alpha=0.3 if smooth > 1 else 1.0, color="tab:blue")
        if smooth > 1 and len(y) >= smooth:
            ax.plot(h["step"][smooth - 1:], np.convolve(y, np.ones(smooth) / smooth, mode="valid"),
                    color="tab:blue")
        ax.set(title={"temperature": "τ"}.get(name, name), xlabel="step")
        if name == "temperature":
            ax.set_yscale("log")
    return fig


def accuracy_vs_temperature(taus: Sequence[float], mean: Sequence[float], std: Sequence[float],
                            learnable: tuple[float, float] | dict[str, tuple[float, float]] | None = None, ax=None,
                            ylabel: str = "held-out zero-shot accuracy", colors: Sequence[str] | None = None):
    """Accuracy against a fixed τ with error bars; learnable-τ results as bands (lesson 07).

    `learnable` is one (mean, std), or {label: (mean, std)} for several (e.g. one per start), drawn in
    `colors` (one per band) if given.
    """
    _check_curve(taus, mean, std)
    bands = {"learnable τ (mean ± std)": learnable} if isinstance(learnable, tuple) else learnable or {}
    if len(bands) > len(colors or _BAND_COLORS):
        raise ValueError(f"learnable has {len(bands)} bands but there are {len(colors or _BAND_COLORS)} colours: "
                         "pass colors, one per band")
    fig, ax = _axes(ax, figsize=(6, 4))
    ax.errorbar(taus, mean, yerr=std, marker="o", capsize=3, label="fixed τ (mean ± std over seeds)")
    if learnable is not None:
        for color, (label, (m, s)) in zip(colors or _BAND_COLORS, bands.items()):
            ax.axhspan(m - s, m + s, color=color, alpha=0.2, label=label)
            ax.axhline(m, color=color)
    ax.set(xscale="log", xlabel="τ", ylabel=ylabel)
    ax.legend(fontsize=8)
    return fig


def _check_curve(taus, mean, std, name: str = "") -> None:
    """A ValueError unless taus > 0 and mean, std finite, all of one length: the log axis would drop the rest."""
    t, mu, sd = (np.asarray(v, dtype=float) for v in (taus, mean, std))
    what = f" (metric {name!r})" if name else ""
    if t.ndim != 1 or not t.shape == mu.shape == sd.shape:
        raise ValueError(f"taus, mean and std{what} must be lists of one length, got {t.shape}, {mu.shape}, {sd.shape}")
    if not (np.isfinite([t, mu, sd]).all() and (t > 0).all()):
        raise ValueError(f"taus must be > 0 and taus, mean, std{what} finite, got taus={list(taus)!r}, "
                         f"mean={list(mean)!r}, std={list(std)!r}")


_BAND_COLORS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


# --- lessons 00-04 ---

def vectors_2d(vectors: torch.Tensor, labels: Sequence[str] | None = None, colors: Sequence[str] | None = None,
               linestyles: Sequence[str] | None = None, title: str = "", ax=None, unit_circle: bool = True):
    """2-D vectors as arrows from the origin, the unit circle for reference, labels in a legend (lesson 01)."""
    fig, ax = _axes(ax, figsize=(4, 4))
    v = _tensor(vectors).float().numpy()
    if unit_circle:
        t = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(t), np.sin(t), color="lightgray", lw=1)
    for i, (x, y) in enumerate(v):
        c = colors[i] if colors is not None else f"C{i % 10}"
        ls = linestyles[i] if linestyles is not None else "-"
        ax.annotate("", xy=(x, y), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="-|>", color=c, lw=1.8, linestyle=ls, shrinkA=0, shrinkB=0))
        if labels is not None:
            ax.plot([], [], color=c, ls=ls, lw=1.8, label=labels[i])
    lim = max(1.2, float(np.abs(v).max()) * 1.15)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title)
    ax.axhline(0, color="lightgray", lw=0.5)
    ax.axvline(0, color="lightgray", lw=0.5)
    if labels is not None:
        ax.legend(fontsize=7, loc="lower left")
    return fig


def combo_grid(counts: torch.Tensor, heldout: Sequence[int], colors: Sequence[str], shapes: Sequence[str],
               title: str = "training images per colour × shape", ax=None):
    """Counts per colour x shape (rows x columns) with the held-out combinations marked (lesson 02)."""
    fig, ax = _axes(ax, figsize=(6, 4.5))
    c = _tensor(counts).float().reshape(len(colors), len(shapes)).numpy()
    im = ax.imshow(c, cmap="Blues")
    for k in heldout:
        r, s = divmod(int(k), len(shapes))
        ax.add_patch(plt.Rectangle((s - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="tab:red", lw=2))
        ax.text(s, r, "held\nout", ha="center", va="center", fontsize=7, color="tab:red")
    ax.set_xticks(np.arange(len(shapes)), shapes, rotation=30, ha="right")
    ax.set_yticks(np.arange(len(colors)), colors)
    ax.set(title=title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def gradient_row(grad: torch.Tensor, positive: int, title: str = "", ax=None):
    """One row of d loss / d similarity as signed bars: the positive below zero, negatives above (lesson 04)."""
    fig, ax = _axes(ax, figsize=(6, 3))
    g = _bars(grad, "grad", positive)
    colors = ["tab:red" if x > 0 else "tab:blue" for x in g]
    colors[positive] = "tab:orange"
    ax.bar(np.arange(len(g)), g, color=colors)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(title=title, xlabel="caption j", ylabel="d loss / d similarity")
    return fig


# --- lessons 06-08 ---

def temperature_trajectories(trajectories: dict[str, Sequence[float]], ax=None, bounds=(0.01, 1.0),
                             init: float | None = 0.07, reference: dict[str, float] | None = None,
                             colors: dict[str, str] | None = None, band: tuple[float, float] | None = None):
    """τ against the step for one or more runs, on a log scale, with the clamp's bounds (lesson 07).

    `colors` {label: colour} draws runs in chosen colours (only the first run of each colour gets a
    legend entry, so one label can stand for a group); `band` (low, high) shades a range of τ.
    """
    fig, ax = _axes(ax, figsize=(6, 3.5))
    labelled = set()
    for label, taus in trajectories.items():
        color = (colors or {}).get(label)
        legend = label if color is None or color not in labelled else None
        labelled.add(color)
        ax.plot(np.arange(1, len(taus) + 1), taus, label=legend, color=color, lw=1.2)
    for b in bounds:
        ax.axhline(b, color="gray", ls=":", lw=1)
    if init is not None:
        ax.axhline(init, color="tab:gray", ls="--", lw=1, label=f"start (τ = {init:g})")
    for label, tau in (reference or {}).items():
        ax.axhline(tau, color="tab:green", ls="-.", lw=1, label=label)
    if band is not None:
        ax.axhspan(*band, color="tab:green", alpha=0.1)
    ax.set(yscale="log", xlabel="step", ylabel="τ", title="τ during training", ylim=(bounds[0] * 0.8, bounds[1] * 1.25))
    ax.legend(fontsize=8)
    return fig


def metrics_vs_temperature(taus: Sequence[float], metrics: dict[str, tuple[Sequence[float], Sequence[float]]],
                           learnable: dict[str, tuple[float, float]] | None = None, axes=None):
    """One panel per metric {name: (means, stds)} against a fixed τ (log axis), learnable τ as a band."""
    for name, (mean, std) in metrics.items():
        _check_curve(taus, mean, std, name)
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), layout="constrained",
                                 squeeze=False)
        axes = axes.flat
    fig = None
    for ax, (name, (mean, std)) in zip(axes, metrics.items()):
        fig = ax.figure
        ax.errorbar(taus, mean, yerr=std, marker="o", capsize=3, label="fixed τ")
        if learnable and name in learnable:
            m, s = learnable[name]
            ax.axhspan(m - s, m + s, color="tab:orange", alpha=0.25, label="learnable τ")
            ax.axhline(m, color="tab:orange")
        ax.set(xscale="log", xlabel="τ", title=name)
        ax.legend(fontsize=8)
    return fig


def per_class_accuracy(names: Sequence[str], accuracies: Sequence[float], title: str = "accuracy per class",
                       ax=None, chance: float | None = None):
    """Horizontal bars of accuracy per class, lowest at the top (lesson 08)."""
    fig, ax = _axes(ax, figsize=(5, 0.3 * len(names) + 1.2))
    order = np.argsort(accuracies)
    ax.barh(np.arange(len(names)), np.asarray(accuracies)[order], color="tab:blue")
    ax.set_yticks(np.arange(len(names)), [names[i] for i in order], fontsize=8)
    if chance is not None:
        ax.axvline(chance, color="tab:red", ls=":", label="chance")
        ax.legend(fontsize=8)
    ax.set(xlim=(0, 1), xlabel="accuracy", title=title)
    return fig


def confusion_matrix(matrix: torch.Tensor, row_labels: Sequence[str], col_labels: Sequence[str] | None = None,
                     title: str = "confusion", ax=None, xlabel: str = "predicted", ylabel: str = "true"):
    """A count matrix as a heatmap with each count written in its cell (lesson 08)."""
    m = _tensor(matrix)
    col_labels = row_labels if col_labels is None else col_labels
    if m.shape != (len(row_labels), len(col_labels)):        # else cells would be unlabelled or mislabelled
        raise ValueError(f"matrix must be (rows, columns) with one name each in row_labels and col_labels (which "
                         f"defaults to row_labels): got shape {tuple(m.shape)}, {len(row_labels)} row_labels and "
                         f"{len(col_labels)} col_labels")
    fig, ax = _axes(ax, figsize=(0.45 * len(col_labels) + 2, 0.4 * len(row_labels) + 1.5))
    ax.imshow(m.numpy(), cmap="Blues")
    for (i, j), v in np.ndenumerate(m.numpy()):
        if v:
            ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=7,
                    color="white" if v > m.max().item() / 2 else "black")
    ax.set_xticks(np.arange(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(row_labels)), row_labels, fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig


def image_to_text_examples(images: torch.Tensor, captions: Sequence[Sequence[str]], scores: torch.Tensor,
                           correct: Sequence[Sequence[bool]] | None = None):
    """Each query image beside its top-k captions with their similarities; right ones in green (lesson 08)."""
    images = _tensor(images)                            # numpy pictures too
    n, k = len(images), len(captions[0])
    fig, axes = plt.subplots(n, 2, figsize=(7, 1.25 * n), layout="constrained", squeeze=False,
                             gridspec_kw={"width_ratios": [1, 4]})
    for i in range(n):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
        axes[i, 0].axis("off")
        ax = axes[i, 1]
        ax.axis("off")
        for r in range(k):
            ok = correct[i][r] if correct is not None else None
            color = "black" if ok is None else ("tab:green" if ok else "tab:red")
            ax.text(0, 1 - (r + 0.5) / k, f"{r + 1}. {float(scores[i][r]):+.3f}  {captions[i][r]}",
                    va="center", fontsize=8, color=color, transform=ax.transAxes)
    return fig


def text_to_image_examples(queries: Sequence[str], images: torch.Tensor, scores: torch.Tensor,
                           correct: Sequence[Sequence[bool]] | None = None):
    """Each text query (a row) with its top-k images (Q, k, 3, H, W), framed green when right (lesson 08)."""
    q, k = images.shape[:2]
    fig, axes = plt.subplots(q, k, figsize=(1.3 * k + 1.5, 1.45 * q), layout="constrained", squeeze=False)
    for i in range(q):
        for r in range(k):
            ax = axes[i, r]
            ax.imshow(images[i, r].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if correct is not None:
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:green" if correct[i][r] else "tab:red")
                    spine.set_linewidth(2.5)
            ax.set_title(f"{float(scores[i][r]):+.3f}", fontsize=7)
        axes[i, 0].set_ylabel(_wrap(queries[i], 14), fontsize=8, rotation=0, ha="right", va="center")
    return fig
