"""Negatives from every process: features gathered across processes, gradients included (lesson 10).

With data parallelism each of W processes encodes its own B pairs. Alone, each image would meet only
the B - 1 negatives of its own process. Gathering every process's features before the loss gives it
all W·B - 1 negatives of the global batch, exactly as one process holding the big batch would. This
is what open_clip does (`ClipLoss(gather_with_grad=True)`, with or without `local_loss=True`):

- `all_gather_with_grad(x)`: (B, D) in each process -> (W·B, D) in every process. Its backward sends
  every process's gradient for each row back to the process that made that row, summed.
- `local_clip_loss(...)`: this process's images against *every* caption, and its captions against
  every image (open_clip's `local_loss=True`); averaged over the processes it is the big batch's
  `clip_loss`. `gathered_clip_loss` gathers and calls it.
- `GatherFeatures(model)`: wraps a DistributedDataParallel (DDP) model so that its forward returns
  the gathered features. `train.train` then runs unchanged: its `clip_loss` sees the global batch
  (open_clip's default `local_loss=False`), and DDP's averaging of the parameters' gradients over
  the processes makes them the gradients of the big batch's loss.
- `launch(fn, world_size)`: run `fn(rank, world_size, *args)` in W fresh CPU processes joined by
  the gloo backend on this computer, return what each returned; the processes never outlive it.
- `python -m clipcourse.distributed`: train TinyCLIP with DDP under `torchrun` (see `main`).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import multiprocessing
import os
import pickle
import queue as queue_module
import shutil
import socket
import sys
import tempfile
import time
import traceback
from numbers import Integral
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .loss import _check_features, _check_scalar, _logits, clip_loss
from .train import _find


# --- The gather and the loss over the gathered batch -------------------------------------------

def is_distributed() -> bool:
    """Is this process one of several joined by torch.distributed?"""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)   # feature dtypes, numbered for the check


def _check_same_everywhere(x: torch.Tensor, world_size: int) -> None:
    """A ValueError in every process, not a crash or a hang, when the processes' (B, D) or dtypes differ:
    all_gather fills same-sized slots (gloo aborts on a mismatch, NCCL may wait forever)."""
    code = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else -1
    mine = torch.tensor([*x.shape, code], device=x.device)  # x is (B, D)
    every = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(every, mine)                           # 3 numbers from each process: B, D, dtype
    if any(not torch.equal(e, every[0]) for e in every):
        seen = ", ".join(f"rank {r}: {tuple(e[:2].tolist())} {_DTYPES[e[2]] if e[2] >= 0 else 'another dtype'}"
                         for r, e in enumerate(every))
        raise ValueError(f"all_gather_with_grad needs the same (B, D) and dtype in every process, got {seen}: give "
                         "every process the same batch size (drop a smaller last batch) and the same precision")


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns to each process the summed gradient of the rows it made."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world_size = dist.get_rank(), dist.get_world_size()
        _check_same_everywhere(x, ctx.world_size)
        parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
        dist.all_gather(parts, x.contiguous())             # parts[r] = process r's (B, D)
        return torch.cat(parts)                            # (W·B, D), the same in every process

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # grad: (W·B, D), how *this* process's loss depends on every gathered row. Every process's
        # loss used my rows, so my rows' gradient is the sum over processes: all_reduce it, keep mine.
        # (A reduce-scatter would move less data; all_reduce is the simplest collective every backend has.)
        # A copy: all_reduce works in place, and autograd may share `grad` with a hook or another input.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)                              # (W·B, D) summed over the processes
        return grad.chunk(ctx.world_size)[ctx.rank]        # (B, D), the rows this process made


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's (B, D) tensor, in rank order, into (W·B, D), keeping gradients.

    Every process must pass the same shape. In a single process it returns x itself.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"x must be (B, D), one row of features per pair, got shape {tuple(x.shape)}")
    if not is_distributed():
        return x
    return _AllGatherWithGrad.apply(x)


def local_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                    all_image_features: torch.Tensor, all_text_features: torch.Tensor,
                    temperature, rank: int) -> torch.Tensor:
    """This process's share of the big batch's CLIP loss (open_clip's `local_loss=True`).

    image_features, text_features: this process's (B, D); all_*: the gathered (W·B, D), in which
    this process's pairs are rows rank·B ... rank·B + B - 1. Each local image picks its caption among
    all W·B captions, and each local caption its image among all W·B images. The mean of this over
    the W processes equals `clip_loss` of the whole gathered batch.
    """
    _check_features(image_features, text_features)
    _check_features(all_image_features, all_text_features, ("all_image_features", "all_text_features"))
    _check_scalar("temperature", temperature, positive=True)
    if isinstance(rank, bool) or not isinstance(rank, Integral):
        raise TypeError(f"rank must be an int, got {type(rank).__name__}")
    if all_image_features.shape[1] != image_features.shape[1]:
        raise ValueError(f"all_image_features and image_features need the same feature size, got "
                         f"{tuple(all_image_features.shape)} and {tuple(image_features.shape)}")
    b, total = len(image_features), len(all_image_features)
    if total % b:
        raise ValueError(f"all_image_features ({total} rows) must be a multiple of the local batch ({b}): "
                         "W processes of B pairs each")
    if not 0 <= rank < total // b:
        raise ValueError(f"rank must be in [0, {total // b}) for {total // b} processes of {b} pairs, got {rank}")
    logits_per_image = _logits(image_features, all_text_features, temperature)  # (B, W·B)
    logits_per_text = _logits(text_features, all_image_features, temperature)   # (B, W·B)
    labels = rank * b + torch.arange(b, device=logits_per_image.device)        # where my pairs sit
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def gathered_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, temperature) -> torch.Tensor:
    """CLIP's loss with every process's pairs as negatives: gather, then `local_clip_loss`.

    A drop-in for `loss.clip_loss` (same arguments); in a single process it is `clip_loss`.
    """
    if not is_distributed():
        return clip_loss(image_features, text_features, temperature)
    _check_features(image_features, text_features)
    all_image_features = all_gather_with_grad(image_features)   # (W·B, D)
    all_text_features = all_gather_with_grad(text_features)     # (W·B, D)
    return local_clip_loss(image_features, text_features, all_image_features, all_text_features,
                           temperature, dist.get_rank())


class GatherFeatures(nn.Module):
    """Wrap a (DDP) CLIP model: its forward returns every process's features, (W·B, D) each, and τ.

    `train.train(GatherFeatures(DistributedDataParallel(model)), ...)` then computes `clip_loss`
    over the global batch in every process. Every process's loss is the same number, so they agree
    on the logged loss and on stopping if it diverges. `temperature` and `logit_bias` are the wrapped
    model's, so train's clamp and `TrainConfig(loss="siglip")` find them. Not for `hard_negative_tokens`,
    whose extra captions would be gathered in between the pairs.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def temperature(self) -> nn.Module:
        return _find(self.model, "temperature")          # the wrapped model's, inside DDP's .module

    @property
    def logit_bias(self) -> nn.Parameter | None:
        """SigLIP's bias b of the wrapped model (None for CLIP): its sigmoid loss works on the global batch too."""
        return _find(self.model, "logit_bias")

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        image_features, text_features, temperature = self.model(images, tokens)    # (B, D), (B, D), ()
        return all_gather_with_grad(image_features), all_gather_with_grad(text_features), temperature

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """This process's image features, not gathered: `train`'s `evaluate=` callback sees the wrapper, and
        evaluation runs on each process's own data (`evaluate.embed_images(wrapped, ...)` works as on the model)."""
        return self._inner("encode_image")(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """This process's text features, not gathered (as `encode_image`)."""
        return self._inner("encode_text")(tokens)

    def _inner(self, name: str) -> Callable:
        """The wrapped model's encoder `name`; a TypeError naming the model when it has none."""
        encode = _find(self.model, name)
        if encode is None:
            raise TypeError(f"GatherFeatures wraps a {type(self.model).__name__} that has no {name} (nor does a model "
                            "inside it): wrap a CLIP model")
        return encode


# --- Local processes for the lesson and the tests ----------------------------------------------

def _loopback_interface() -> str | None:
    """The name of this computer's loopback network interface ('lo' on Linux, 'lo0' on macOS; None elsewhere)."""
    if not sys.platform.startswith(("linux", "darwin")):
        return None                                        # gloo picks its own interface there
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (AttributeError, OSError):
        return None
    return next((n for n in names if n.lower().startswith("lo")), None)


def _entry(fn, rank: int, world_size: int, store_path: str, args: tuple, results, timeout: float) -> None:
    """A launched process: join the group, run fn, send back its result (or the error's text)."""
    try:
        torch.set_num_threads(1)                           # W processes share this computer's cores
        store = dist.FileStore(store_path, world_size)     # the meeting point: a file, no port to pick
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
        try:
            # as bytes: a tensor put on the queue as it is would be shared through a file descriptor
            # that disappears when this process ends, possibly before the caller reads it
            results.put(("result", rank, pickle.dumps(fn(rank, world_size, *args))))
        finally:
            dist.destroy_process_group()
    except Exception:
        results.put(("error", rank, traceback.format_exc()))


def launch(fn: Callable[..., Any], world_size: int = 2, args: tuple = (), timeout: float = 120.0) -> list:
    """Run `fn(rank, world_size, *args)` in `world_size` new CPU processes joined by gloo; return their results.

    The processes start fresh ("spawn"), so `fn` must be a function importable from a module (not one
    defined in a notebook), and `args` and the results must pickle. They talk over this computer's
    loopback interface only. Raises RuntimeError with the traceback if a process fails, TimeoutError
    after `timeout` seconds; either way, and on Ctrl-C, every process is stopped before it returns.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    folder = tempfile.mkdtemp(prefix="clipcourse-dist-")
    interface = _loopback_interface()
    saved = os.environ.get("GLOO_SOCKET_IFNAME")
    if interface and saved is None:
        os.environ["GLOO_SOCKET_IFNAME"] = interface       # the children inherit it: gloo on loopback
    processes = [ctx.Process(target=_entry, daemon=True, name=f"clipcourse-rank{rank}",
                             args=(fn, rank, world_size, os.path.join(folder, "store"), tuple(args),
                                   results, timeout))
                 for rank in range(world_size)]
    try:
        for p in processes:
            p.start()
        out, deadline = {}, time.monotonic() + timeout
        while len(out) < world_size:
            try:
                kind, rank, value = results.get(timeout=0.2)
            except queue_module.Empty:
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"process {dead[0].name} died (exit code {dead[0].exitcode}) before "
                                       "sending its result") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world_size} processes did not finish within {timeout} s") from None
                continue
            if kind == "error":
                raise RuntimeError(f"process {rank} of {world_size} failed:\n{value}")
            out[rank] = pickle.loads(value)
        for p in processes:
            p.join(timeout=max(1.0, deadline - time.monotonic()))
        return [out[rank] for rank in range(world_size)]
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            if p.pid is not None:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join()
        results.close()
        results.join_thread()
        if interface and saved is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)
        shutil.rmtree(folder, ignore_errors=True)


# --- The lesson's two-process step --------------------------------------------------------------

def demo_model_and_batch(n_pairs: int, seed: int = 0):
    """A TinyCLIP with the tiny ViT (LayerNorm only, no BatchNorm) and n_pairs seeded ShapesWorld pairs."""
    from . import data
    from .encoders import ImageEncoderConfig
    from .model import build_model
    from .text import Tokenizer

    tok = Tokenizer.for_shapesworld()
    pairs = data.ShapesWorld.generate(n_pairs, seed=seed)
    model = build_model(tok, seed=seed, image=ImageEncoderConfig(kind="vit", vit_width=48, vit_layers=1))
    return model.train(), data.to_float(pairs.images), tok(pairs.captions)


def average_gradients(model: nn.Module) -> None:
    """What DDP does after backward, by hand: each parameter's gradient averaged over the processes.

    (DDP does the same in buckets, overlapped with the backward pass, and checks that every process
    holds the same model; `main` uses it.)
    """
    world_size = dist.get_world_size() if is_distributed() else 1
    for p in model.parameters():
        if p.grad is not None and world_size > 1:
            dist.all_reduce(p.grad)                                      # summed over the processes
            p.grad /= world_size


def demo_step(rank: int, world_size: int, per_process: int, seed: int = 0) -> dict:
    """One forward and backward of the lesson's model on this process's share of the batch, three ways.

    "no gather": `clip_loss` on this process's own pairs (B - 1 negatives each); "local loss":
    `gathered_clip_loss` (open_clip's local_loss=True); "GatherFeatures": the wrapped model and
    `clip_loss`, as `train.train` runs it. For each: this process's loss, and the parameters'
    gradients averaged over the processes (as DDP would average them).
    """
    model, images, tokens = demo_model_and_batch(world_size * per_process, seed)
    mine = slice(rank * per_process, (rank + 1) * per_process)          # this process's pairs
    out = {}
    for how in ("no gather", "local loss", "GatherFeatures"):
        model.zero_grad(set_to_none=True)
        if how == "GatherFeatures":
            loss = clip_loss(*GatherFeatures(model)(images[mine], tokens[mine]))   # over (W·B, W·B)
        else:
            image_features, text_features, temperature = model(images[mine], tokens[mine])  # (B, D), (B, D), ()
            fn = clip_loss if how == "no gather" else gathered_clip_loss
            loss = fn(image_features, text_features, temperature)
        loss.backward()
        average_gradients(model)
        out[how] = {"loss": loss.item(), "grads": {n: p.grad.clone() for n, p in model.named_parameters()}}
    return out


# --- Training with torchrun ----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Train TinyCLIP with DistributedDataParallel: one process per core or GPU, started by torchrun.

        torchrun --standalone --nproc_per_node=2 -m clipcourse.distributed --steps 600

    Each process trains on its own shard of the data with `train.train` (unchanged), its model wrapped
    in DDP and `GatherFeatures`, so the loss is over the batch gathered from every process.
    `--batch-size` is per process; the global batch is W times it. gloo on CPUs, NCCL on GPUs (one
    process per GPU: with fewer GPUs than processes on a node, `--device auto` trains on the CPU).
    """
    from torch.nn.parallel import DistributedDataParallel

    from . import data, evaluate, train
    from .encoders import ImageEncoderConfig
    from .model import build_model
    from .text import Tokenizer

    parser = argparse.ArgumentParser(prog="torchrun --nproc_per_node=N -m clipcourse.distributed",
                                     description=main.__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=train.TrainConfig.steps,
                        help=f"optimiser steps (default {train.TrainConfig.steps}, as train.TrainConfig)")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per process and step (default 64)")
    parser.add_argument("--n-train", type=int, default=20000, help="training pairs, shared out (default 20000)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--image-encoder", choices=("cnn", "vit"), default="cnn",
                        help="cnn: BatchNorm statistics are per process; vit: LayerNorm only, as CLIP")
    parser.add_argument("--no-gather", action="store_true", help="each process's own pairs as negatives only")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process (default 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto (default): a GPU per process where this node has one for each, else the CPU")
    parser.add_argument("--save", help="rank 0 writes the trained model's state_dict here")
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error("start it with torchrun, which sets RANK, WORLD_SIZE and MASTER_ADDR for each process "
                     "(the README shows the commands)")

    local_rank, local_size = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.device == "cuda" and gpus < local_size:
        parser.error(f"--device cuda needs a GPU for each of the {local_size} processes on this node, and it has "
                     f"{gpus}: start at most {gpus} per node (--nproc_per_node) or train on --device cpu")
    cuda = args.device == "cuda" or (args.device == "auto" and 0 < local_size <= gpus)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    # device_id binds NCCL to this process's GPU (its barrier would otherwise guess, and warn)
    dist.init_process_group("nccl" if cuda else "gloo", **({"device_id": device} if cuda else {}))
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        tok = Tokenizer.for_shapesworld()
        world = data.ShapesWorld.generate(args.n_train, seed=0)              # the same in every process
        shard = slice(rank, None, world_size)                                # this process's pairs
        images, tokens = world.images[shard], tok(world.captions[shard])
        model = build_model(tok, seed=0, image=ImageEncoderConfig(kind=args.image_encoder)).to(device)
        ddp = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
        cfg = train.TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, device=str(device),
                                threads=None if cuda else args.threads)
        if rank == 0:
            print(f"{world_size} processes x {args.batch_size} pairs: a global batch of {world_size * args.batch_size}"
                  f"{'' if args.no_gather else ', every pair a negative for every other'} ({dist.get_backend()}, "
                  f"{device.type})",
                  flush=True)
        history = train.train(ddp if args.no_gather else GatherFeatures(ddp), images, tokens, cfg,
                              progress=rank == 0)[1]          # only the history: no name left holding ddp (finally)
        if rank == 0:
            held = data.ShapesWorld.generate(2000, split="heldout", seed=1, two_object_prob=0.0)
            classes = evaluate.zero_shot_classifier(model, tok, [data.combo_name(c) for c in range(data.NUM_COMBOS)])
            acc = evaluate.zero_shot_accuracy(evaluate.embed_images(model, held.images), classes, held.labels)
            what = "rank 0's own batch" if args.no_gather else "the global batch"
            print(f"after {history.step[-1]} steps: loss {history.loss[-1]:.3f} (over {what}), "
                  f"τ {history.temperature[-1]:.4f}, held-out zero-shot accuracy {acc:.1%}", flush=True)
            if args.save:
                torch.save(model.state_dict(), args.save)
        # Tear down together: a process that destroyed its group and exited while rank 0 still evaluated
        # was seen to abort in gloo ("terminate called without an active exception", SIGABRT) in CI.
        dist.barrier()
    finally:
        # DDP keeps the process group (and gloo's threads) alive; freed during the interpreter's shutdown
        # they could abort the same way, so free it here, before the group goes.
        ddp = None
        gc.collect()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
