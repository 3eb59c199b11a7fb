"""Softmax against sigmoid across batch sizes, at equal compute (lesson 09).

SigLIP (Zhai et al. 2023) replaces CLIP's softmax over the batch by one binary question per pair:
`loss.siglip_loss`, with a learnable t = 1/τ started at 10 (t' = log t = log 10) and a learnable bias b
started at -10 (`build_model(tokenizer, temperature=0.1, logit_bias=-10.0)`, `TrainConfig(loss="siglip")`).
The paper reports that the sigmoid beats the softmax when batches are small. `compare` tests that at this
course's scale: tiny models trained with each loss at several batch sizes, every run seeing the same
number of pairs (steps x batch size constant), so a smaller batch takes more, smaller steps. Runs train
in `experiments`' worker processes, one per CPU core at a time. `summarize` averages over seeds and
`small_batch_verdict` turns the numbers into an answer: holds, does not hold at this scale, or unclear.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from . import experiments
from .claims import FAILS, HOLDS, MARGIN, UNCLEAR, Verdict, clearly_below
from .temperature import INIT_TEMPERATURE, SIGLIP_INIT_BIAS, SIGLIP_INIT_TEMPERATURE

CLAIM = "SigLIP's claim (the sigmoid beats the softmax at small batch sizes)"
LOSSES = ("clip", "siglip")


def _job(loss: str, batch_size: int, pairs: int, seed: int, bias: float | None = None) -> dict:
    """One run: CLIP from τ = 0.07, SigLIP from t = 10 and b = `bias` (-10 unless given)."""
    if loss == "clip":
        return dict(loss="clip", tau=INIT_TEMPERATURE, learnable=True, logit_bias=None,
                    batch_size=batch_size, steps=pairs // batch_size, seed=seed)
    return dict(loss="siglip", tau=SIGLIP_INIT_TEMPERATURE, learnable=True,
                logit_bias=SIGLIP_INIT_BIAS if bias is None else float(bias),
                batch_size=batch_size, steps=pairs // batch_size, seed=seed)


def compare(batch_sizes: Sequence[int] = (8, 32, 128), seeds: Sequence[int] = (0, 1), pairs: int = 2048, *,
            losses: Sequence[str] = LOSSES, bias_starts: Sequence[float] = (), bias_batch_size: int | None = None,
            n_train: int = 4000, n_heldout: int = 500, resolution: int = 16, widths: tuple[int, ...] = (16, 32),
            lr: float = 5e-3, temperature_lr: float | None = 0.3, device: str = "auto", threads: int | None = 1,
            workers: int | None = None, precision: str = "auto") -> list[dict]:
    """Train one model per (loss, batch size, seed), each on `pairs` pairs; return one row per run.

    A row holds loss, batch_size, steps (= pairs // batch_size), seed, tau (the starting τ), logit_bias
    (the starting b; None for CLIP) and what `experiments.sweep` measures: heldout_acc, train_combo_acc,
    final_tau, tau_trajectory, ...; SigLIP rows also final_bias. `bias_starts` adds SigLIP runs whose b
    starts elsewhere (e.g. 0.0, no bias start), at `bias_batch_size` (default: the middle batch size).
    t and b learn at `temperature_lr` (a learning rate of their own, as in lesson 07), the weights at `lr`.
    As `experiments.sweep`, Ctrl-C raises `experiments.SweepInterrupted` and a failing run
    `experiments.SweepFailed`, both with the finished runs' rows in `.rows`.
    """
    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes:
        raise ValueError("batch_sizes is empty: give at least one batch size")
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    unknown = [name for name in losses if name not in LOSSES]
    if unknown or not losses:
        raise ValueError(f"losses must be a non-empty selection of {LOSSES}, got {list(losses)}")
    for b in batch_sizes:
        if not 2 <= b <= n_train:
            raise ValueError(f"every batch size must be in [2, n_train = {n_train}], got {b}")
        if pairs // b < 1:
            raise ValueError(f"pairs = {pairs} is less than one batch of {b}: give more pairs")
    for bias in bias_starts:                        # build_model would refuse it, but only in a worker
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
            raise ValueError(f"bias_starts must be finite numbers (b's starting values), got {list(bias_starts)}")
    bias_batch = batch_sizes[len(batch_sizes) // 2] if bias_batch_size is None else int(bias_batch_size)
    if bias_starts and not 2 <= bias_batch <= min(n_train, pairs):
        raise ValueError(f"bias_batch_size must be in [2, min(n_train, pairs)], got {bias_batch}")
    jobs = [_job(name, b, pairs, int(seed)) for seed in seeds for b in batch_sizes for name in losses]
    jobs += [_job("siglip", bias_batch, pairs, int(seed), bias) for seed in seeds for bias in bias_starts]
    order = sorted(range(len(jobs)), key=lambda k: -jobs[k]["steps"])   # the longest runs first: less idle
    setup = experiments._Setup(max(pairs // b for b in batch_sizes), n_train, resolution, tuple(widths), 1,
                               max(batch_sizes), lr, n_heldout, 0, device, threads, precision, temperature_lr)
    experiments._check_setup(setup, workers)        # a bad value fails here, not in a worker
    chosen = workers is not None
    workers = experiments._fit_in_memory(
        setup, min(len(jobs), workers or experiments.default_workers(device, threads)), chosen)
    return experiments._run_all(setup, jobs, None, workers, order=order)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Means and standard deviations over seeds, one dict per (loss, batch size, bias start).

    Each holds loss, batch_size, steps, logit_bias (the start), n_seeds, and <m>_mean / <m>_std for
    heldout_acc, train_combo_acc, final_tau and (SigLIP) final_bias; sorted by loss, then batch size.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["loss"], row["batch_size"], row.get("logit_bias")), []).append(row)
    out = []
    for (name, batch, bias), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        entry = {"loss": name, "batch_size": batch, "steps": members[0]["steps"], "logit_bias": bias,
                 "n_seeds": len(members)}
        for metric in ("heldout_acc", "train_combo_acc", "final_tau", "final_bias"):
            if all(metric in r for r in members):
                entry[f"{metric}_mean"], entry[f"{metric}_std"] = _mean_std([r[metric] for r in members])
        out.append(entry)
    return out


def pick(summary: Sequence[dict], loss: str, batch_size: int, logit_bias: float | None = None) -> dict:
    """The summary entry of one loss and batch size (SigLIP: the run from b = -10 unless `logit_bias`)."""
    if loss == "siglip" and logit_bias is None:
        logit_bias = SIGLIP_INIT_BIAS
    for e in summary:
        if e["loss"] == loss and e["batch_size"] == batch_size and e["logit_bias"] == logit_bias:
            return e
    raise ValueError(f"no runs of loss={loss!r} at batch_size={batch_size} (bias start {logit_bias}) in the summary")


def small_batch_verdict(summary: Sequence[dict], metric: str = "train_combo_acc", margin: float = MARGIN) -> Verdict:
    """Does the sigmoid beat the softmax at small batch sizes? Every batch size compared is one (lesson 09).

    All of the course's batches are small next to the paper's (512 and up), so each counts. "Clearly ahead"
    means by more than `margin` and by more than the two seed spreads together. Holds: the sigmoid is
    clearly ahead at some batch size and the softmax at none. Does not hold at this scale: the softmax is
    clearly ahead at some batch size and the sigmoid at none. Unclear: neither is clearly ahead anywhere,
    or each is somewhere. The evidence gives both losses and the gap at every batch size.
    """
    if metric not in ("heldout_acc", "train_combo_acc"):
        raise ValueError(f"metric must be 'heldout_acc' or 'train_combo_acc', got {metric!r}")
    batches = sorted({e["batch_size"] for e in summary if e["loss"] == "clip"}
                     & {e["batch_size"] for e in summary if e["loss"] == "siglip"})
    if not batches:
        raise ValueError("the summary needs runs of both losses at a common batch size: compare(losses=('clip', 'siglip'))")
    parts, sigmoid_ahead, softmax_ahead = [], [], []
    for b in batches:
        soft, sig = pick(summary, "clip", b), pick(summary, "siglip", b)
        args = (soft[f"{metric}_mean"], soft[f"{metric}_std"], sig[f"{metric}_mean"], sig[f"{metric}_std"])
        if clearly_below(*args, margin=margin):
            sigmoid_ahead.append(b)
        elif clearly_below(*args[2:], *args[:2], margin=margin):
            softmax_ahead.append(b)
        parts.append(f"batch {b}: sigmoid {args[2]:.1%} ± {args[3]:.1%} vs softmax {args[0]:.1%} ± {args[1]:.1%} "
                     f"(gap {100 * (args[2] - args[0]):+.1f} points)")
    answer = (HOLDS if sigmoid_ahead and not softmax_ahead else FAILS if softmax_ahead and not sigmoid_ahead
              else UNCLEAR)
    where = lambda bs: f"batch {', '.join(map(str, bs))}" if bs else "no batch size"
    ahead = f"clearly ahead: the sigmoid at {where(sigmoid_ahead)}, the softmax at {where(softmax_ahead)}"
    return Verdict(CLAIM, answer, f"{metric.replace('_', ' ')} over {soft['n_seeds']} seeds; {ahead}; " + "; ".join(parts))
