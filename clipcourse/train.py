"""Training: one explicit, seeded loop with callbacks (lesson 06).

The loop knows nothing of progress bars, plots or widgets. They subscribe as callbacks and read the
`TrainState` the loop hands them after every step; that is how the lessons' live dashboard, the
history and checkpoints attach without touching the model or the loop.

Each step: a batch of pairs -> `clip_loss(*model(images, tokens))` (or SigLIP's `siglip_loss` with the
model's `logit_bias`, lesson 09) -> backward -> AdamW step ->
clamp the learnable temperature (as open_clip does, after every optimiser step).

A step is all or nothing. A non-finite loss or gradient stops training before the optimiser step
(under DDP in every process at the same step, as their averaged gradients are then NaN) and puts back what the forward pass changed (BatchNorm's running statistics, the batch order, the random
state); Ctrl-C is taken at the end of a step. Either way callbacks hear it (`on_diverge`, `on_interrupt`:
`Checkpoint` saves, `ProgressBar` closes), so the model, the history and the last checkpoint describe
the same step, and `train(..., resume=checkpoint)` continues a run exactly as if it had never stopped.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from dataclasses import asdict, dataclass, field
from numbers import Integral
from typing import Any, Callable

import torch
from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .data import check_uint8, to_float
from .loss import _check_scalar, _check_whole, clip_loss, clip_loss_with_hard_negatives, in_batch_accuracy, siglip_loss
from .temperature import INIT_TEMPERATURE, MAX_TEMPERATURE, MIN_TEMPERATURE


@dataclass
class TrainConfig:
    steps: int = 600                     # optimiser steps
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
    loss: str = "clip"                   # "clip" (softmax, lesson 04) or "siglip" (pairwise sigmoid with the
                                         # model's logit_bias, lesson 09)


class TrainingDiverged(FloatingPointError):
    """The loss or the gradients became NaN or infinite; the model keeps its state from the step before."""

    def __init__(self, message: str, history: History | None = None):
        super().__init__(message)
        self.history = history               # the steps before it diverged


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training at the end of a step: the model, `history` and any checkpoint agree."""

    def __init__(self, message: str, history: History | None = None):
        super().__init__(message)
        self.history = history


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
    history: History | None = None       # every step so far (train's own History)
    batches: BatchOrder | None = None    # which pairs each step trains on

    def state_dict(self) -> dict[str, Any]:
        """All a resumed run needs to continue exactly as this one would (see clipcourse.checkpoint)."""
        out = {"step": self.step, "temperature": self.temperature, "config": asdict(self.config),
               "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
               "history": self.history.as_dict(), "batches": self.batches.state_dict(),
               "torch_rng": torch.get_rng_state()}     # dropout, if a model has any, draws from it
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda_rng"] = torch.cuda.get_rng_state_all()
        return out

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Continue from `checkpoint`: same model, data and TrainConfig as the run that wrote it."""
        saved, now = checkpoint["config"], asdict(self.config)
        changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in _RESUME_MUST_MATCH if saved.get(k) != now[k]]
        if changed:
            raise ValueError("resume: the TrainConfig differs from the checkpoint's, so the run would not "
                             f"continue as it started ({', '.join(changed)})")
        try:
            self.model.load_state_dict(checkpoint["model"])
        except RuntimeError as error:
            raise ValueError(f"resume: the checkpoint holds another model: {error}") from None
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.history.load_state_dict(checkpoint["history"])
        self.batches.load_state_dict(checkpoint["batches"])
        if self.batches.epoch is None:      # an older checkpoint: its shuffle is that of the last step taken
            self.batches.epoch = max(checkpoint["step"] - 1, 0) // self.batches.n_batches
        torch.set_rng_state(checkpoint["torch_rng"])
        if "cuda_rng" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
        self.step = checkpoint["step"]
        if self.history.step:
            self.loss, self.temperature, self.accuracy = (self.history.loss[-1], self.history.temperature[-1],
                                                          self.history.accuracy[-1])
        if self.history.evaluations:
            self.metrics = {k: v for k, v in self.history.evaluations[-1].items() if k != "step"}


# What must not change between a run and its resumption (device, threads, precision and eval_every may).
_RESUME_MUST_MATCH = ("steps", "batch_size", "lr", "temperature_lr", "weight_decay", "warmup_steps", "seed")


class Callback:
    """Subscribe to training: override any of these; each receives the TrainState."""

    def on_train_start(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_evaluate(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...
    def on_interrupt(self, state: TrainState) -> None: ...   # Ctrl-C, at the end of a completed step

    def on_diverge(self, state: TrainState) -> None:
        """A NaN or infinite loss or gradient: `state` is the last completed step, the failed one undone."""
        self.on_interrupt(state)          # by default, what Ctrl-C does: Checkpoint saves, ProgressBar closes


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

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Replace the records with those of `as_dict()` (as a checkpoint holds them)."""
        self.step, self.loss = list(d["step"]), list(d["loss"])
        self.temperature, self.accuracy = list(d["temperature"]), list(d["accuracy"])
        self.evaluations = [dict(e) for e in d["evaluations"]]


class ProgressBar(Callback):
    """A tqdm progress bar showing loss, τ and in-batch accuracy."""

    def __init__(self, every: int = 10, **tqdm_kwargs):
        self.every, self.kwargs, self.bar = every, tqdm_kwargs, None

    def on_train_start(self, state: TrainState) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.config.steps, initial=state.step, desc="training", unit="step", **self.kwargs)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0 or state.step == state.config.steps:
            self.bar.set_postfix(loss=f"{state.loss:.3f}", tau=f"{state.temperature:.3f}",
                                 acc=f"{state.accuracy:.2f}", refresh=False)
            self.bar.update(state.step - self.bar.n)

    def on_train_end(self, state: TrainState) -> None:
        self.bar.update(state.step - self.bar.n)
        self.bar.close()

    def on_interrupt(self, state: TrainState) -> None:
        self.on_train_end(state)           # stopped early: show the last step, then close


class Checkpoint(Callback):
    """Saves the run to `path` every `every` steps, at the end, and when Ctrl-C or a divergence stops it
    (then the last completed step; see checkpoint.py)."""

    def __init__(self, path: str | os.PathLike, every: int = 100):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every!r}")
        self.path, self.every = path, every

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            save_checkpoint(self.path, state.state_dict())

    def on_train_end(self, state: TrainState) -> None:
        save_checkpoint(self.path, state.state_dict())  # with the final evaluation in the history

    def on_interrupt(self, state: TrainState) -> None:
        save_checkpoint(self.path, state.state_dict())


def parameter_groups(model: nn.Module, weight_decay: float, temperature_lr: float | None = None) -> list[dict]:
    """AdamW groups as open_clip makes them: decay weight matrices; not biases, norms, τ, the class token.

    open_clip leaves out of weight decay every parameter with fewer than 2 dimensions, and those named
    bias, ln, bn or logit_scale. Its ViT class token is 1-D; ours (`visual.cls`) is (1, 1, W), so it is
    left out by name. With `temperature_lr`, logit_scale gets a third group of its own with that learning
    rate (and no weight decay), so τ can travel further than the weights' learning rate allows. A SigLIP
    model's logit_bias joins it: b, like t, is one number that must travel far (lesson 09). Names are
    matched by their ending, so a wrapped model (DDP's `module.logit_bias`) gets the same groups.
    """
    if temperature_lr is not None and not temperature_lr > 0:
        raise ValueError(f"temperature_lr must be positive (or None), got {temperature_lr}")
    decay, no_decay, tau = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if temperature_lr is not None and ("logit_scale" in name or name.endswith("logit_bias")):
            tau.append(p)
            continue
        exclude = (p.ndim < 2 or "logit_scale" in name or "bias" in name or "norm" in name or "ln" in name
                   or name.endswith("visual.cls"))          # the ViT class token: 1-D in open_clip
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


def temperature_travel(cfg: TrainConfig, from_step: int = 0) -> float:
    """Σ over steps (from `from_step` on) of logit_scale's learning rate: about how far Adam moves log τ (lesson 07).

    Adam's step is about lr whatever the gradient's size while the gradient keeps its sign (more when the
    gradient grows: Kingma & Ba's rough bound (1 - β₁) / √(1 - β₂) ≈ 3.2 lr with the default betas, not a
    strict cap), so going from τ₀ to τ* needs roughly Σ lr ≥ |ln(τ*/τ₀)|.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    _check_whole("cfg.steps", cfg.steps, 0)
    if isinstance(from_step, bool) or not isinstance(from_step, Integral) or not 0 <= from_step <= cfg.steps:
        raise ValueError(f"from_step must be a step in [0, {cfg.steps}], got {from_step!r}")
    peak = cfg.lr if cfg.temperature_lr is None else cfg.temperature_lr
    _check_scalar("cfg.lr" if cfg.temperature_lr is None else "cfg.temperature_lr", peak, positive=True)
    return peak * sum(_schedule(step, cfg) for step in range(from_step, cfg.steps))


def reachable_temperatures(cfg: TrainConfig, start: float = INIT_TEMPERATURE) -> tuple[float, float]:
    """About the lowest and highest τ a learnable τ can reach from `start` in `cfg`'s steps (lesson 07):
    start · e^(∓Σ lr), inside the clamp [0.01, 1]."""
    _check_scalar("start", start, positive=True)
    start = float(start.detach() if isinstance(start, torch.Tensor) else start)   # e.g. model.temperature()
    if not MIN_TEMPERATURE <= start <= MAX_TEMPERATURE:
        raise ValueError(f"start must be a temperature in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got {start}")
    travel = min(temperature_travel(cfg), 700.0)     # e^700 is far past the clamp; e^710 would overflow a float
    return max(MIN_TEMPERATURE, start * math.exp(-travel)), min(MAX_TEMPERATURE, start * math.exp(travel))


class BatchOrder:
    """Which pairs each step trains on: a seeded shuffle per epoch, resumable mid-epoch."""

    def __init__(self, n: int, batch_size: int, seed: int):
        _check_whole("n", n, 1)
        _check_whole("batch_size", batch_size, 1, n + 1)             # at least one whole batch per epoch
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise TypeError(f"seed must be an int (the same seed gives the same order), got {seed!r}")
        self.n, self.batch_size, self.n_batches = n, batch_size, n // batch_size
        self.generator = torch.Generator().manual_seed(int(seed))
        self.perm = torch.randperm(n, generator=self.generator)      # (n,) this epoch's order
        self.epoch = 0                                               # the epoch self.perm belongs to

    def indices(self, step: int) -> torch.Tensor:
        """The pairs of step `step` (counted from 0). Steps go forward: a later epoch draws the shuffles of
        the epochs before it, an earlier one is refused (a new BatchOrder replays from the start)."""
        _check_whole("step", step, 0)
        epoch, batch = divmod(step, self.n_batches)
        if epoch < self.epoch:
            raise ValueError(f"step {step} belongs to epoch {epoch}, but this BatchOrder has moved on to epoch "
                             f"{self.epoch}: make a new BatchOrder with the same seed to replay earlier steps")
        while self.epoch < epoch:
            self.perm = torch.randperm(self.n, generator=self.generator)  # a new epoch
            self.epoch += 1
        return self.perm[batch * self.batch_size:(batch + 1) * self.batch_size]  # (B,)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "epoch": self.epoch}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        missing = [k for k in ("generator", "perm") if k not in d]
        if missing:
            raise ValueError(f"resume: the batch order holds no {' and no '.join(missing)}: not a BatchOrder's state")
        perm = torch.as_tensor(d["perm"])
        if len(perm) != self.n:
            raise ValueError(f"resume: the checkpoint was trained on {len(perm)} pairs, these are {self.n}")
        if not torch.equal(perm.sort().values, torch.arange(self.n)):
            raise ValueError("resume: the checkpoint's batch order is not a shuffle of the pairs (a damaged file?)")
        self.generator.set_state(d["generator"])
        self.perm = perm.clone()
        self.epoch = d.get("epoch")             # None in checkpoints older than this field: TrainState fills it in


class _StopAtStepEnd:
    """Ctrl-C while training: finish the step, then stop. A second Ctrl-C stops at once.

    A KeyboardInterrupt can land between any two lines: after the optimiser step but before the
    history records it, or halfway through writing a checkpoint. Taking it at the end of the step
    keeps the model, the history and the checkpoint in agreement. Python only lets the main thread
    handle signals, and we leave any handler but Python's own alone (sweep's workers ignore Ctrl-C).
    """

    def __init__(self):
        self.requested, self.previous = False, None

    def listen(self) -> None:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)             # the next Ctrl-C interrupts at once

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _elsewhere() -> str:
    """Under DDP a process whose loss was not finite makes every process's averaged gradients NaN."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        return "; DDP averages every process's gradients, so another process's loss may be the cause"
    return ""


def _diverged_message(what: str, step: int, cfg: TrainConfig, temperature: float, dtype: torch.dtype) -> str:
    return (f"{what} at step {step + 1} of {cfg.steps} (τ = {temperature:.4g}, lr = {_lr_at(step, cfg):.3g}, "
            f"{str(dtype).removeprefix('torch.')}). The model keeps its state from step {step}, BatchNorm "
            f"statistics included, and the optimiser took no step. Likely causes: a learning rate too high "
            f"(try a lower lr or a longer warm-up); τ near its floor of 0.01, where logits reach 100 (try a "
            f"larger τ, or precision='float32' if you train in bfloat16); NaN or infinite values coming out "
            f"of a custom layer or in the data.")


def _find(model: nn.Module, name: str) -> Any:
    """model.<name>, or that of the model inside: DDP keeps it in .module, GatherFeatures in .model (lesson 10)."""
    while getattr(model, name, None) is None:
        wrapped = [getattr(model, a) for a in ("module", "model") if isinstance(getattr(model, a, None), nn.Module)]
        if not wrapped:
            return None
        model = wrapped[0]
    return getattr(model, name)


def _check_loss(loss: str, model: nn.Module) -> None:
    """TrainConfig.loss names a loss this model can be trained with: SigLIP needs the model's bias."""
    if loss not in ("clip", "siglip"):
        raise ValueError(f"loss must be 'clip' or 'siglip', got {loss!r}")
    bias = _find(model, "logit_bias")
    if loss == "siglip" and bias is None:
        raise ValueError("loss='siglip' adds a learnable bias to every logit, and this model has none: build it "
                         "with build_model(tokenizer, temperature=0.1, logit_bias=-10.0) (lesson 09)")
    if loss == "clip" and bias is not None:
        raise ValueError("this model has a logit_bias, which only the sigmoid loss uses (the softmax ignores a "
                         "bias added to every logit): train it with TrainConfig(loss='siglip')")


def _ddp_modules(model: nn.Module) -> list[nn.Module]:
    """The DistributedDataParallel wrappers in `model` (lesson 10): none when it trains in one process."""
    from torch.nn.parallel import DistributedDataParallel

    return [m for m in model.modules() if isinstance(m, DistributedDataParallel)]


def _check_ddp_device(model: nn.Module, device: torch.device, requested: str | torch.device) -> None:
    """Refuse a DistributedDataParallel model that lives on another device than the run (lesson 10).

    DDP ties its gradient buckets to the parameters it was built on; moved afterwards, it averages
    nothing and training goes on with wrong gradients, silently. So move first, then wrap.
    """
    for module in _ddp_modules(model):
        on = next(module.parameters()).device
        if on.type != device.type or (device.index is not None and on.index != device.index):
            raise ValueError(f"the model is wrapped in DistributedDataParallel on {on}, but the run's device "
                             f"(TrainConfig.device={str(requested)!r}) is {device}: DDP cannot be moved once built. "
                             f"Move the model first, then wrap it (DistributedDataParallel(model.to(device))), "
                             f"or train on {on.type!r}")


def _agree_on_precision(model: nn.Module, dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """precision='auto' under DDP: bfloat16 only where every process picked it (lesson 10). Computers with and
    without native bfloat16 would otherwise gather features of two dtypes into one batch."""
    dist = torch.distributed
    if not _ddp_modules(model):                             # under DDP every process trains, so all join below
        return dtype
    flag = torch.tensor([int(dtype == torch.bfloat16)], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)             # 1 only if every process chose bfloat16
    return torch.bfloat16 if flag.item() else torch.float32


def train(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor,
          config: TrainConfig | None = None, *, callbacks: list[Callback] | None = None,
          evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
          progress: bool = True, resume: str | os.PathLike | None = None,
          hard_negative_tokens: torch.Tensor | None = None) -> tuple[nn.Module, History]:
    """Train a CLIP-style model on (images, tokens) pairs; return (model, history).

    images: uint8 (N, 3, H, W); tokens: long (N, L). `evaluate(model) -> {name: value}` runs every
    `config.eval_every` steps and at the end, in eval mode; callbacks see its result in
    `state.metrics`. `resume`: a checkpoint written by `checkpoint.Checkpoint` for this model, data
    and config; training continues from its step exactly as the first run would have.
    Raises TrainingDiverged, naming the step, if the loss or the gradients stop being finite, and
    TrainingInterrupted (a KeyboardInterrupt) at the end of the step during which Ctrl-C was pressed;
    both carry the history so far, and leave the model as it was after the last completed step, which
    callbacks hear first (`on_diverge`, `on_interrupt`).
    `hard_negative_tokens` (N, L): one wrong caption per pair, added to its image's row of the loss
    (NegCLIP, `clip_loss_with_hard_negatives`, lesson 11).
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
    _check_loss(cfg.loss, model)
    if hard_negative_tokens is not None:
        if not isinstance(hard_negative_tokens, torch.Tensor) or hard_negative_tokens.shape != tokens.shape:
            raise ValueError(f"hard_negative_tokens must be a tensor shaped like tokens {tuple(tokens.shape)} (one "
                             f"wrong caption per pair), got {getattr(hard_negative_tokens, 'shape', type(hard_negative_tokens))}")
        if cfg.loss != "clip":
            raise ValueError(f"hard_negative_tokens work with loss='clip' only, got loss={cfg.loss!r}")

    device = resolve_device(cfg.device)
    _check_ddp_device(model, device, cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    if cfg.precision == "auto":
        dtype = _agree_on_precision(model, dtype, device)
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
    state = TrainState(model, optimizer, cfg, history=history,
                       batches=BatchOrder(len(images), cfg.batch_size, cfg.seed))
    clamp = getattr(_find(model, "temperature"), "clamp_", lambda: None)
    bias = _find(model, "logit_bias")                          # SigLIP's b (lesson 09)

    evaluated_at = -1
    # The model's own randomness (dropout, if it has any) draws from torch's global generator: seed
    # it for this run and give the caller's state back at the end, so a run depends on cfg.seed alone.
    caller_rng = torch.get_rng_state(), torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    interrupt = _StopAtStepEnd()

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
        interrupt.listen()
        torch.manual_seed(cfg.seed)
        if resume is not None:
            state.load_state_dict(load_checkpoint(resume))
            evaluated_at = history.evaluations[-1]["step"] if history.evaluations else -1
        for cb in callbacks:
            cb.on_train_start(state)
        if (resume is not None and cfg.eval_every and 0 < state.step < cfg.steps
                and state.step % cfg.eval_every == 0 and evaluated_at != state.step):
            run_evaluation()                  # the checkpoint was written just before this evaluation
        while state.step < cfg.steps and not state.stop:
            batch_order = state.batches.state_dict()               # put back if the step diverges
            idx = state.batches.indices(state.step)                 # (B,)
            x = to_float(images[idx].to(device))                    # (B, 3, H, W)
            t = tokens[idx].to(device)                              # (B, L)
            if hard_negative_tokens is not None:                    # one text pass for both: (2B, L)
                t = torch.cat([t, hard_negative_tokens[idx].to(device)])
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * _schedule(state.step, cfg)
            rng = torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None
            buffers = [b.clone() for b in model.buffers()]          # BatchNorm's running statistics, ...
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                image_features, text_features, temperature = model(x, t)  # ... which this updates
            if hard_negative_tokens is not None:                    # the captions, then their hard negatives
                text_features, negative_features = text_features[:len(idx)], text_features[len(idx):]
                loss = clip_loss_with_hard_negatives(image_features, text_features, negative_features, temperature)
            elif cfg.loss == "siglip":                              # logits in float32 either way
                loss = siglip_loss(image_features, text_features, temperature, bias)
            else:
                loss = clip_loss(image_features, text_features, temperature)
            optimizer.zero_grad(set_to_none=True)
            problem = None if torch.isfinite(loss) else f"the loss became {loss.item()}"
            loss.backward()          # even then: under DDP every process must join the gradients' all-reduce
            grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
            if problem is None and grads and not torch.isfinite(torch.stack(grads).sum()):   # one check, one sync
                problem = f"the gradients became NaN or infinite (the loss was {loss.item():.4g}{_elsewhere()})"
            if problem is not None:                                 # keep the last good state
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for b, saved in zip(model.buffers(), buffers):
                        b.copy_(saved)
                torch.set_rng_state(rng[0])                         # dropout's draws, a new epoch's shuffle
                if rng[1] is not None:
                    torch.cuda.set_rng_state(rng[1], device)
                state.batches.load_state_dict(batch_order)
                raise TrainingDiverged(_diverged_message(problem, state.step, cfg,
                                                         float(temperature.detach()), dtype), history)
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
            if interrupt.requested:
                raise TrainingInterrupted(f"Ctrl-C: training stopped after step {state.step} of {cfg.steps}; "
                                          "the model and the history are those of that step", history)
        if evaluated_at != state.step:
            run_evaluation()                                        # the final evaluation, once
        for cb in callbacks:
            cb.on_train_end(state)
        if interrupt.requested:          # Ctrl-C during the final evaluation: training is complete anyway
            raise KeyboardInterrupt
    except TrainingInterrupted:
        for cb in callbacks:
            cb.on_interrupt(state)                                  # e.g. Checkpoint saves this step
        raise
    except TrainingDiverged:
        for cb in callbacks:
            cb.on_diverge(state)                                    # the last good step: Checkpoint saves it
        raise
    finally:
        interrupt.restore()
        model.eval()
        if cfg.threads:
            torch.set_num_threads(old_threads)
        torch.set_rng_state(caller_rng[0])
        if caller_rng[1] is not None:
            torch.cuda.set_rng_state_all(caller_rng[1])
    return model, history
