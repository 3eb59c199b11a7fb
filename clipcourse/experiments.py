"""The temperature experiment: a fixed-τ sweep against a learnable τ, over seeds (lesson 07).

`sweep` trains one small CLIP per (τ, seed), plus one with a learnable τ per seed, all on the same
data, and measures each on held-out colour x shape combinations: zero-shot accuracy, and the
alignment and uniformity of the held-out features. `summarize` turns its rows into means and
standard deviations over seeds, one entry per τ.

To fit a dozen runs into about a minute on a laptop CPU the runs are smaller than the lesson 06
model: 16x16 images, a narrower CNN, fewer pairs and fewer steps. Accuracies are therefore lower
than a full training reaches; what the sweep compares is the *shape* of accuracy against τ.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import torch

from . import data, evaluate, train
from .encoders import ImageEncoderConfig
from .model import build_model
from .temperature import INIT_TEMPERATURE
from .text import Tokenizer


def log_spaced(low: float = 0.01, high: float = 1.0, n: int = 5) -> list[float]:
    """n temperatures evenly spaced on a log scale from low to high, both included."""
    if n < 2 or not 0 < low < high:
        raise ValueError(f"need n >= 2 and 0 < low < high, got n={n}, low={low}, high={high}")
    return [low * (high / low) ** (i / (n - 1)) for i in range(n)]


def sweep(taus: Sequence[float], seeds: Sequence[int], steps: int = 200, n_train: int = 8000, *,
          learnable: bool = True, resolution: int = 16, widths: tuple[int, ...] = (24, 48, 96),
          batch_size: int = 128, lr: float = 3e-3, n_heldout: int = 1000, data_seed: int = 0,
          device: str = "auto", threads: int | None = 1,
          callbacks: Callable[[dict], list] | None = None) -> list[dict]:
    """Train one model per (τ, seed) (and per seed with a learnable τ); return one row per run.

    Each row: tau (the fixed τ, or the starting τ of a learnable run), learnable, seed,
    heldout_acc and train_combo_acc (zero-shot over all 48 prompts, on held-out and on training
    colour x shape combinations), final_tau, final_loss, alignment and uniformity of the held-out
    image-caption features, and tau_trajectory (τ after every step).
    `callbacks(run) -> list of Callbacks` may attach e.g. a dashboard to some runs; `run` is a
    dict with tau, learnable and seed. These small models train fastest on one CPU thread
    (benchmarks/NOTES.md), hence `threads=1`; None leaves torch's setting.
    """
    if not taus and not learnable:
        raise ValueError("nothing to run: give at least one τ or learnable=True")
    tok = Tokenizer.for_shapesworld()
    world = data.ShapesWorld.generate(n_train, seed=data_seed, resolution=resolution)
    tokens = tok(world.captions)
    held = data.ShapesWorld.generate(n_heldout, split="heldout", seed=data_seed + 1,
                                     resolution=resolution, two_object_prob=0.0)
    seen = data.ShapesWorld.generate(n_heldout, split="train", seed=data_seed + 2,
                                     resolution=resolution, two_object_prob=0.0)
    held_tokens = tok(held.captions)
    classnames = [data.combo_name(i) for i in range(data.NUM_COMBOS)]

    runs = [dict(tau=float(t), learnable=False) for t in taus]
    if learnable:
        runs.append(dict(tau=INIT_TEMPERATURE, learnable=True))
    rows = []
    for seed in seeds:
        for run in runs:
            run = dict(run, seed=int(seed))
            model = build_model(tok, seed=run["seed"], image=ImageEncoderConfig(resolution=resolution, widths=widths),
                                learnable_temperature=run["learnable"], temperature=run["tau"])
            cfg = train.TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=run["seed"], device=device,
                                    threads=threads)
            model, history = train.train(model, world.images, tokens, cfg, progress=False,
                                         callbacks=callbacks(run) if callbacks else None)
            classes = evaluate.zero_shot_classifier(model, tok, classnames)
            held_img = evaluate.embed_images(model, held.images)
            held_txt = evaluate.embed_texts(model, held_tokens)
            seen_img = evaluate.embed_images(model, seen.images)
            rows.append(dict(
                run,
                heldout_acc=evaluate.zero_shot_accuracy(held_img, classes, held.labels),
                train_combo_acc=evaluate.zero_shot_accuracy(seen_img, classes, seen.labels),
                final_tau=history.temperature[-1],
                final_loss=history.loss[-1],
                alignment=evaluate.alignment(held_img.cpu(), held_txt.cpu()),
                uniformity=evaluate.uniformity(held_img.cpu()),
                tau_trajectory=list(history.temperature),
            ))
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


_METRICS = ("heldout_acc", "train_combo_acc", "final_tau", "alignment", "uniformity")


def summarize(rows: Sequence[dict]) -> dict:
    """Means and standard deviations over seeds.

    Returns {"sweep": [one dict per fixed τ, ascending], "learnable": dict or None}; each dict
    holds tau, n_seeds and <metric>_mean / <metric>_std for heldout_acc, train_combo_acc,
    final_tau, alignment and uniformity, plus acc_mean / acc_std (= held-out accuracy).
    """
    groups: dict[tuple[bool, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["learnable"], row["tau"]), []).append(row)

    def stats(tau, members):
        out = {"tau": tau, "n_seeds": len(members)}
        for m in _METRICS:
            out[f"{m}_mean"], out[f"{m}_std"] = _mean_std([r[m] for r in members])
        out["acc_mean"], out["acc_std"] = out["heldout_acc_mean"], out["heldout_acc_std"]
        return out

    fixed = [stats(tau, members) for (is_learnable, tau), members in sorted(groups.items()) if not is_learnable]
    learn = [stats(tau, members) for (is_learnable, tau), members in groups.items() if is_learnable]
    return {"sweep": fixed, "learnable": learn[0] if learn else None}


def clearly_below(a_mean: float, a_std: float, b_mean: float, b_std: float, margin: float = 0.05) -> bool:
    """Is a clearly below b: by more than `margin` and by more than the two seed spreads together?"""
    gap = b_mean - a_mean
    return gap > margin and gap > a_std + b_std and not math.isnan(gap)
