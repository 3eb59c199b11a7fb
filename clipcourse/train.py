"""Training: one explicit, seeded loop with callbacks (lesson 06).

The loop knows nothing of progress bars, plots or widgets. They subscribe as callbacks and read the
`TrainState` the loop hands them after every step; that is how the lessons' live dashboard, the
history and (later) checkpoints attach without touching the model or the loop.

Each step: a batch of pairs -> `clip_loss(*model(images, tokens))` -> backward -> AdamW step ->
clamp the learnable temperature (as open_clip does, after every optimiser step).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .data import check_uint8, to_float
from .loss import clip_loss, in_batch_accuracy


@dataclass
class TrainConfig:
    steps: int = 800                     # optimiser steps
    batch_size: int = 128                # pairs per batch: each sees batch_size - 1 negatives
    lr: float = 2e-3                     # peak learning rate (AdamW)
    temperature_lr: float | None = None  # peak learning rate of logit_scale alone (None: lr). Adam moves
                                         # it by about this much per step (lesson 07)
    weight_decay: float = 0.05           # on weight matrices only; never on logit_scale, norms or biases
    warmup_steps: int = 20               # linear warm-up, then cosine decay to 0
    seed: int = 0                        # seeds the batch order (the model is seeded when built)
    device: str = "auto"                 # "auto": CUDA when present, else the CPU
    threads: int | None = None           # CPU threads for this run (None: leave torch's setting)
    precision: str = "auto"              # "float32", "bfloat16" (autocast, float32 weights) or "auto"
                                         # ("auto" obeys the CLIPCOURSE_PRECISION environment variable)
    eval_every: int = 0                  # call `evaluate` every this many steps (0: only at the end)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the model keeps its weights from before that step."""


@dataclass
class TrainState:
    """What callbacks see: the model, the optimiser and the latest numbers."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    step: int = 0                        # optimiser steps taken so far
    loss: float = math.nan
    temperature: float = math.nan
    accuracy: float = math.nan           # in-batch: own caption is the most similar
    metrics: dict[str, float] = field(default_factory=dict)  # the latest evaluation
    stop: bool = False                   # a callback may set this to end training early


class Callback:
    """Subscribe to training: override any of these; each receives the TrainState."""

    def on_train_start(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_evaluate(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


class History(Callback):
    """Records loss, τ and in-batch accuracy every step, and every evaluation's metrics."""

    def __init__(self):
        self.step: list[int] = []
        self.loss: list[float] = []
        self.temperature: list[float] = []
        self.accuracy: list[float] = []
        self.evaluations: list[dict[str, float]] = []

    def on_step_end(self, state: TrainState) -> None:
        self.step.append(state.step)
        self.loss.append(state.loss)
        self.temperature.append(state.temperature)
        self.accuracy.append(state.accuracy)

    def on_evaluate(self, state: TrainState) -> None:
        self.evaluations.append({"step": state.step, **state.metrics})

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "loss": self.loss, "temperature": self.temperature,
                "accuracy": self.accuracy, "evaluations": self.evaluations}


class ProgressBar(Callback):
    """A tqdm progress bar showing loss, τ and in-batch accuracy."""

    def __init__(self, every: int = 10, **tqdm_kwargs):
        self.every, self.kwargs, self.bar = every, tqdm_kwargs, None

    def on_train_start(self, state: TrainState) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.config.steps, desc="training", unit="step", **self.kwargs)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0 or state.step == state.config.steps:
            self.bar.set_postfix(loss=f"{state.loss:.3f}", tau=f"{state.temperature:.3f}",
                                 acc=f"{state.accuracy:.2f}", refresh=False)
            self.bar.update(state.step - self.bar.n)

    def on_train_end(self, state: TrainState) -> None:
        self.bar.update(state.step - self.bar.n)
        self.bar.close()


def parameter_groups(model: nn.Module, weight_decay: float, temperature_lr: float | None = None) -> list[dict]:
    """AdamW groups as open_clip makes them: decay weight matrices; not biases, norms, τ.

    With `temperature_lr`, logit_scale gets a third group of its own with that learning rate
    (and no weight decay), so τ can travel further than the weights' learning rate allows.
    """
    if temperature_lr is not None and not temperature_lr > 0:
        raise ValueError(f"temperature_lr must be positive (or None), got {temperature_lr}")
    decay, no_decay, tau = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if temperature_lr is not None and "logit_scale" in name:
            tau.append(p)
            continue
        exclude = p.ndim < 2 or "logit_scale" in name or "bias" in name or "norm" in name or "ln" in name
        (no_decay if exclude else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if temperature_lr is not None:
        groups.append({"params": tau, "weight_decay": 0.0, "lr": temperature_lr})
    return groups


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bfloat16(device: torch.device) -> bool:
    """Does this device compute bfloat16 natively (CPUs with AMX or AVX512-BF16, Ampere+ GPUs)?"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        return any(getattr(cpu, name, lambda: False)() for name in
                   ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return False


PRECISION_ENV = "CLIPCOURSE_PRECISION"   # overrides what precision="auto" picks (see README)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the forward pass runs in: 'auto' -> bfloat16 where native, else float32.

    Mixed precision as open_clip's `--precision amp_bf16`: weights, optimiser state and the loss
    stay float32; convolutions and matrix products run in bfloat16. On CPUs without native
    bfloat16 it would be slower, not faster, so 'auto' keeps float32 there. Setting the
    environment variable CLIPCOURSE_PRECISION to 'float32' or 'bfloat16' makes 'auto' pick that
    instead (e.g. to run as a CPU without bfloat16 would); an explicit precision always wins.
    """
    choices = ("float32", "bfloat16")
    if precision == "auto":
        forced = os.environ.get(PRECISION_ENV, "").strip().lower()
        if forced and forced != "auto":
            if forced not in choices:
                raise ValueError(f"the environment variable {PRECISION_ENV} must be 'auto', 'float32' or "
                                 f"'bfloat16', got {os.environ[PRECISION_ENV]!r}")
            return getattr(torch, forced)
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    if precision in choices:
        return getattr(torch, precision)
    raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16', got {precision!r}")


def _schedule(step: int, cfg: TrainConfig) -> float:
    """The fraction of the peak learning rate at `step`: linear warm-up, then cosine decay to 0."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _lr_at(step: int, cfg: TrainConfig) -> float:
    return cfg.lr * _schedule(step, cfg)


def temperature_travel(cfg: TrainConfig) -> float:
    """Σ over steps of logit_scale's learning rate: about the furthest Adam can move log τ (lesson 07).

    Adam's step is about lr whatever the gradient's size, so going from τ₀ to τ* needs
    Σ lr ≥ |ln(τ*/τ₀)|.
    """
    peak = cfg.lr if cfg.temperature_lr is None else cfg.temperature_lr
    return peak * sum(_schedule(step, cfg) for step in range(cfg.steps))


def train(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor,
          config: TrainConfig | None = None, *, callbacks: list[Callback] | None = None,
          evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
          progress: bool = True) -> tuple[nn.Module, History]:
    """Train a CLIP-style model on (images, tokens) pairs; return (model, history).

    images: uint8 (N, 3, H, W); tokens: long (N, L). `evaluate(model) -> {name: value}` runs every
    `config.eval_every` steps and at the end, in eval mode; callbacks see its result in
    `state.metrics`. Raises TrainingDiverged, naming the step, if the loss stops being finite.
    """
    cfg = config or TrainConfig()
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a 4-D tensor (N, 3, H, W), got {getattr(images, 'shape', type(images))}")
    check_uint8(images)  # float pixels would be read as near-black: refuse them, saying how to convert
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or len(tokens) != len(images):
        raise ValueError(f"tokens must be a 2-D tensor with one row per image ({len(images)}), "
                         f"got {getattr(tokens, 'shape', type(tokens))}")
    if not 2 <= cfg.batch_size <= len(images):
        raise ValueError(f"batch_size must be in [2, {len(images)}] (the number of pairs), got {cfg.batch_size}")
    if cfg.steps < 1:
        raise ValueError(f"steps must be at least 1, got {cfg.steps}")

    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model.to(device).train()
    history = History()
    callbacks = [history] + ([ProgressBar()] if progress else []) + list(callbacks or [])
    # fused: one kernel for all parameters instead of a loop of small ops per tensor
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay, cfg.temperature_lr), lr=cfg.lr,
                                  fused=device.type in ("cpu", "cuda"))
    for group in optimizer.param_groups:
        group["peak_lr"] = group["lr"]                          # each group follows the schedule from its peak
    state = TrainState(model, optimizer, cfg)
    order = torch.Generator().manual_seed(cfg.seed)
    n_batches = len(images) // cfg.batch_size
    clamp = getattr(getattr(model, "temperature", None), "clamp_", lambda: None)

    evaluated_at = -1

    def run_evaluation():
        nonlocal evaluated_at
        if evaluate is None:
            return
        evaluated_at = state.step
        model.eval()
        with torch.no_grad():
            state.metrics = dict(evaluate(model))
        model.train()
        for cb in callbacks:
            cb.on_evaluate(state)

    try:
        for cb in callbacks:
            cb.on_train_start(state)
        perm = torch.randperm(len(images), generator=order)
        while state.step < cfg.steps and not state.stop:
            batch = state.step % n_batches
            if batch == 0 and state.step > 0:
                perm = torch.randperm(len(images), generator=order)  # a new epoch
            idx = perm[batch * cfg.batch_size:(batch + 1) * cfg.batch_size]
            x = to_float(images[idx].to(device))                    # (B, 3, H, W)
            t = tokens[idx].to(device)                              # (B, L)
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * _schedule(state.step, cfg)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                image_features, text_features, temperature = model(x, t)
            loss = clip_loss(image_features, text_features, temperature)  # logits in float32 either way
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {state.step + 1} of {cfg.steps} "
                    f"(τ = {float(temperature.detach()):.4g}, lr = {_lr_at(state.step, cfg):.3g}); the "
                    f"model keeps its parameters from step {state.step}. Try a lower lr or a larger τ.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clamp()                                                 # τ back into [0.01, 1]
            state.step += 1
            state.loss = loss.item()
            state.temperature = float(temperature.detach())
            state.accuracy = in_batch_accuracy(image_features.detach(), text_features.detach())
            for cb in callbacks:
                cb.on_step_end(state)
            if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < cfg.steps:
                run_evaluation()
        if evaluated_at != state.step:
            run_evaluation()                                        # the final evaluation, once
        for cb in callbacks:
            cb.on_train_end(state)
    finally:
        model.eval()
        if cfg.threads:
            torch.set_num_threads(old_threads)
    return model, history
