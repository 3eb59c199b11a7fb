"""The temperature experiment: a fixed-τ sweep against a learnable τ, over seeds (lesson 07).

`sweep` trains one small CLIP per (τ, seed), plus one with a learnable τ per seed, all on the same
data, and measures each on held-out colour x shape combinations: zero-shot accuracy, and the
alignment, uniformity and tolerance of the held-out features. `summarize` turns its rows into means and
standard deviations over seeds, one entry per τ.

To keep two dozen runs to minutes on a 2-core laptop CPU (README: benchmarks), each run is shorter
than lesson 06's: 8,000 pairs instead of 20,000 and 200 steps instead of 600, trained two at a time
(one per core) in worker processes of one thread each. Accuracies are therefore lower than a full training
reaches; what the sweep compares is the *shape* of accuracy against τ.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import pickle
import queue as queue_module
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from . import data, evaluate, train
from .claims import _check_taus
from .encoders import ImageEncoderConfig
from .model import build_model
from .loss import _check_whole
from .temperature import INIT_TEMPERATURE, _positive
from .text import Tokenizer


def log_spaced(low: float = 0.01, high: float = 1.0, n: int = 5) -> list[float]:
    """n temperatures evenly spaced on a log scale from low to high, both included."""
    if n < 2 or not 0 < low < high < math.inf:
        raise ValueError(f"need n >= 2 and 0 < low < high < infinity, got n={n}, low={low}, high={high}")
    return [low * (high / low) ** (i / (n - 1)) for i in range(n)]


@dataclass(frozen=True)
class _Setup:
    """Everything a sweep run needs besides its (τ, learnable, seed): small and picklable."""

    steps: int
    n_train: int
    resolution: int
    widths: tuple[int, ...]
    convs_per_stage: int
    batch_size: int
    lr: float
    n_heldout: int
    data_seed: int
    device: str
    threads: int | None
    precision: str = "auto"
    temperature_lr: float | None = None
    keep_features: bool = False        # rows also hold the held-out features, before and after training


@functools.lru_cache(maxsize=2)
def _data(n_train: int, n_heldout: int, resolution: int, data_seed: int):
    """The sweep's data, made once per process (seeded, so every worker makes the same)."""
    tok = Tokenizer.for_shapesworld()
    world = data.ShapesWorld.generate(n_train, seed=data_seed, resolution=resolution)
    held = data.ShapesWorld.generate(n_heldout, split="heldout", seed=data_seed + 1,
                                     resolution=resolution, two_object_prob=0.0)
    seen = data.ShapesWorld.generate(n_heldout, split="train", seed=data_seed + 2,
                                     resolution=resolution, two_object_prob=0.0)
    return tok, world, tok(world.captions), held, tok(held.captions), seen


def _run(setup: _Setup, run: dict, callbacks: list) -> dict:
    """Train and measure one model of the sweep; return its row."""
    tok, world, tokens, held, held_tokens, seen = _data(setup.n_train, setup.n_heldout, setup.resolution,
                                                        setup.data_seed)
    image = ImageEncoderConfig(resolution=setup.resolution, widths=setup.widths,
                               convs_per_stage=setup.convs_per_stage)
    # a run may carry its own loss, bias start, batch size and steps (lesson 09's runs, clipcourse.siglip)
    bias = {"logit_bias": run["logit_bias"]} if run.get("logit_bias") is not None else {}
    model = build_model(tok, seed=run["seed"], image=image, learnable_temperature=run["learnable"],
                        temperature=run["tau"], **bias)
    if setup.keep_features:                  # the untrained model's features: the gap at initialisation
        init_img, init_txt = evaluate.embed_images(model, held.images), evaluate.embed_texts(model, held_tokens)
    cfg = train.TrainConfig(steps=run.get("steps", setup.steps), batch_size=run.get("batch_size", setup.batch_size),
                            lr=setup.lr, seed=run["seed"], device=setup.device, threads=setup.threads,
                            precision=setup.precision, temperature_lr=setup.temperature_lr,
                            loss=run.get("loss", "clip"))
    model, history = train.train(model, world.images, tokens, cfg, progress=False, callbacks=callbacks)
    classes = evaluate.zero_shot_classifier(model, tok, [data.combo_name(i) for i in range(data.NUM_COMBOS)])
    held_img = evaluate.embed_images(model, held.images)
    held_txt = evaluate.embed_texts(model, held_tokens)
    seen_img = evaluate.embed_images(model, seen.images)
    return dict(
        run,
        heldout_acc=evaluate.zero_shot_accuracy(held_img, classes, held.labels),
        train_combo_acc=evaluate.zero_shot_accuracy(seen_img, classes, seen.labels),
        final_tau=history.temperature[-1],
        final_loss=history.loss[-1],
        alignment=evaluate.alignment(held_img.cpu(), held_txt.cpu()),
        uniformity=evaluate.uniformity(held_img.cpu()),
        train_combo_uniformity=evaluate.uniformity(seen_img.cpu()),   # new pictures of the training combinations
        # the evaluation pictures hold one object each (_data), so a label is all there is in a picture
        tolerance=evaluate.tolerance(held_img, held.labels),
        other_class_similarity=evaluate.other_class_similarity(held_img, held.labels),
        train_combo_tolerance=evaluate.tolerance(seen_img, seen.labels),
        train_combo_other_class_similarity=evaluate.other_class_similarity(seen_img, seen.labels),
        tau_trajectory=list(history.temperature),
        loss_trajectory=list(history.loss),                            # lesson 07: spikes at a low τ?
        **({"final_bias": model.logit_bias.item()} if bias else {}),
        # as numpy arrays: a tensor would travel back from a worker process as a handle to shared memory,
        # which is gone once the worker has exited
        **({"features": dict(image=held_img.cpu().numpy(), text=held_txt.cpu().numpy(), classes=classes.cpu().numpy(),
                             labels=held.labels.numpy(), captions=list(held.captions),
                             image_init=init_img.cpu().numpy(), text_init=init_txt.cpu().numpy())}
           if setup.keep_features else {}),
    )


class SweepInterrupted(train.TrainingInterrupted):
    """Ctrl-C stopped a sweep: `rows` holds the rows of the runs that had finished, in the order of the runs.

    A KeyboardInterrupt and a TrainingInterrupted, as the caller expects of Ctrl-C; `history` is the
    interrupted run's when it trained in this process (workers=1), else None. Worker processes are
    stopped, and waited for, before it is raised.
    """

    def __init__(self, message: str, rows: list[dict], history: train.History | None = None):
        super().__init__(message, history)
        self.rows = rows


class SweepFailed(RuntimeError):
    """A run of a sweep raised (its error is this one's __cause__): `rows` holds the runs that had finished."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message)
        self.rows = rows


class RunProgress:
    """One line under the cell that counts a sweep's finished runs and estimates the time left (lesson 07).

    In a notebook it is one output, updated in place, that ends as "runs done: N of N" (the same on every
    computer, so a stored lesson keeps it); elsewhere each update is a line on standard error. The
    estimate assumes the runs left take as long as the ones done, `workers` at a time. (Not a tqdm bar:
    a notebook would store a tqdm widget's text as its first frame, "0%", and nbval would compare that.)
    """

    def __init__(self, total: int, workers: int = 1):
        self.total, self.workers, self.done, self.start = total, workers, 0, time.perf_counter()
        self.handle = None
        try:
            from IPython import get_ipython
            if getattr(get_ipython(), "kernel", None) is not None:      # a Jupyter kernel, not a terminal
                from IPython.display import display
                self.handle = display({"text/plain": self.text()}, raw=True, display_id=True)
        except ImportError:
            pass
        if self.handle is None:
            print(self.text(), file=sys.stderr, flush=True)

    def text(self) -> str:
        line = f"runs done: {self.done} of {self.total}"
        if 0 < self.done < self.total:
            per_round = (time.perf_counter() - self.start) / math.ceil(self.done / self.workers)
            left = per_round * math.ceil((self.total - self.done) / self.workers)   # runs finish `workers` at a time
            line += f", about {left:.0f} s left"
        return line

    def run_done(self) -> None:
        self.done += 1
        if self.handle is not None:
            self.handle.update({"text/plain": self.text()}, raw=True)
        else:
            print(self.text(), file=sys.stderr, flush=True)


# --- Runs in worker processes -----------------------------------------------------------------
# Each worker is a fresh Python process ("spawn") with one CPU thread, taking runs from a queue until
# it gets None. A run's callbacks stay in the calling process (a live dashboard must draw there); the
# worker relays what they would have seen, step by step, and the caller replays it to them. The caller
# alone handles Ctrl-C: it stops every worker, and waits for them to end, before raising it (as
# SweepInterrupted, with the rows that came back: `_run_all`).

_results = None                            # the queue back to the caller, in a worker process


class _Relay(train.Callback):
    """In a worker: send each event's numbers to the calling process."""

    def __init__(self, key: int):
        self.key = key

    def _send(self, event: str, state: train.TrainState) -> None:
        _results.put(("event", self.key, (event, dict(step=state.step, loss=state.loss,
                                                      temperature=state.temperature, accuracy=state.accuracy,
                                                      metrics=dict(state.metrics)))))

    def on_train_start(self, state): self._send("on_train_start", state)
    def on_step_end(self, state): self._send("on_step_end", state)
    def on_evaluate(self, state): self._send("on_evaluate", state)
    def on_train_end(self, state): self._send("on_train_end", state)
    def on_diverge(self, state): self._send("on_diverge", state)   # then the run's TrainingDiverged


def _worker(tasks, results, threads: int | None) -> None:
    """A worker process: train the runs it takes from `tasks`, send back their rows (or errors)."""
    global _results
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the caller, which stops us
    _results = results
    if threads:
        torch.set_num_threads(threads)
    while (task := tasks.get()) is not None:
        key, setup, run, relay = task
        results.put(("started", key, os.getpid()))
        try:
            results.put(("row", key, _run(setup, run, [_Relay(key)] if relay else [])))
        except Exception as error:
            where = f"in the worker process training {run}:\n{traceback.format_exc()}"
            try:
                pickle.dumps(error)
            except Exception:                    # it could not travel: send its text
                error = RuntimeError(f"{type(error).__name__}: {error}")
            results.put(("error", key, (error, where)))


def default_workers(device: str = "auto", threads: int | None = 1) -> int:
    """How many runs to train at once: one per `threads` CPU cores on a CPU, one on a GPU."""
    if train.resolve_device(device).type != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // (threads or torch.get_num_threads()))


def _dead_worker_message(process, running: dict[int, int], jobs: list[dict]) -> str:
    started = process.pid in running
    doing = (f"while training {jobs[running[process.pid]]}" if started
             else "while starting, before it trained anything")
    if process.exitcode == -9:           # SIGKILL: what Linux's out-of-memory killer sends
        hint = ("it was killed, most likely because the system ran out of memory: try fewer workers, or a "
                "smaller n_train, batch_size or resolution")
    elif not started:                    # it died while importing the calling script
        hint = ('if a script calls experiments.sweep, it must do so under `if __name__ == "__main__":`, since '
                "each worker process imports that script again and would call sweep again (Python's own "
                "message about this is printed above)")
    else:
        hint = "its error is printed above"
    return f"a worker process exited with code {process.exitcode} {doing}: {hint}"


def _run_parallel(setup: _Setup, jobs: list[dict], callbacks, workers: int, progress: RunProgress | None,
                  order: list[int], rows: dict[int, dict]) -> None:
    """Train `jobs` in `workers` processes, handed out in `order`; put each run's row in `rows` as it comes back."""
    ctx = multiprocessing.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    tasks.cancel_join_thread()           # never wait at exit to hand runs to workers that are gone
    watchers = {k: list(callbacks(run)) if callbacks else [] for k, run in enumerate(jobs)}
    states = {k: train.TrainState(model=None, optimizer=None,
                                  config=train.TrainConfig(steps=setup.steps, batch_size=setup.batch_size,
                                                           lr=setup.lr, seed=run["seed"], device=setup.device))
              for k, run in enumerate(jobs) if watchers[k]}
    # the watched runs first, so that the dashboard moves from the start
    for k in sorted(order, key=lambda k: not watchers[k]):
        tasks.put((k, setup, jobs[k], bool(watchers[k])))
    for _ in range(workers):
        tasks.put(None)                  # one "no more runs" for each worker
    processes = [ctx.Process(target=_worker, args=(tasks, results, setup.threads), daemon=True)
                 for _ in range(workers)]
    running = {}                         # worker pid -> the run it took last
    try:
        for process in processes:
            process.start()
        while len(rows) < len(jobs):
            try:
                kind, key, payload = results.get(timeout=0.1)
            except queue_module.Empty:   # nothing new: is every worker still alive?
                for process in processes:
                    if process.exitcode not in (None, 0):
                        raise RuntimeError(_dead_worker_message(process, running, jobs)) from None
                continue
            if kind == "started":
                running[payload] = key
            elif kind == "row":
                rows[key] = payload
                if progress is not None:
                    progress.run_done()
            elif kind == "error":
                error, where = payload   # a run's error, raised here in the caller
                raise error from RuntimeError(where)
            else:
                event, numbers = payload
                state = states[key]
                for name, value in numbers.items():
                    setattr(state, name, value)
                for cb in watchers[key]:
                    getattr(cb, event)(state)
    finally:                             # also on errors and Ctrl-C: no worker outlives the sweep
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            if process.pid is not None:  # started
                process.join()
        results.close()
        tasks.close()


def _run_all(setup: _Setup, jobs: list[dict], callbacks, workers: int, progress: RunProgress | None = None,
             order: Sequence[int] | None = None) -> list[dict]:
    """Train every run of `jobs`, `workers` at a time, started in `order`; return their rows in jobs' order.

    Never loses finished runs: Ctrl-C raises SweepInterrupted, and a failing run SweepFailed, each
    holding the rows of the runs that had finished.
    """
    order = list(range(len(jobs))) if order is None else list(order)
    rows: dict[int, dict] = {}

    def finished() -> list[dict]:
        return [rows[k] for k in sorted(rows)]

    try:
        if workers > 1:
            _run_parallel(setup, jobs, callbacks, workers, progress, order, rows)
        else:
            for k in order:
                rows[k] = _run(setup, jobs[k], callbacks(jobs[k]) if callbacks else None)
                if progress is not None:
                    progress.run_done()
    except KeyboardInterrupt as stop:
        raise SweepInterrupted(f"Ctrl-C: the sweep stopped with {len(rows)} of {len(jobs)} runs finished; their "
                               "rows are in this exception's .rows", finished(),
                               getattr(stop, "history", None)) from stop
    except Exception as error:
        raise SweepFailed(f"a run failed ({type(error).__name__}: {error}); the {len(rows)} of {len(jobs)} runs "
                          "that had finished are in this exception's .rows", finished()) from error
    return [rows[k] for k in range(len(jobs))]


# --- Memory: refuse what cannot fit before starting anything ------------------------------------------

PROCESS_BYTES = 300 * 2**20      # a Python process that has imported torch (measured: about 280 MiB private)
RUN_OVERHEAD_BYTES = 100 * 2**20  # allocator caches, oneDNN's kernels and scratch, the model and optimiser


def run_bytes(n_train: int, n_heldout: int, resolution: int, widths: Sequence[int], convs_per_stage: int,
              batch_size: int) -> int:
    """About how many bytes one sweep run needs besides its Python process: data and activations."""
    pixels = 3 * resolution ** 2
    data_bytes = (n_train + 2 * n_heldout) * pixels + (n_train + n_heldout) * 16 * 8  # uint8 images, tokens
    side, per_image = resolution, pixels                       # floats per image in one forward pass
    for width in widths:
        side = (side + 1) // 2
        per_image += 2 * convs_per_stage * width * side ** 2   # each conv's output and its BatchNorm's
    train_bytes = 2 * 4 * batch_size * per_image               # float32, kept for backward, plus their grads
    eval_bytes = 4 * min(1024, n_heldout) * per_image          # evaluate's batches, without grads
    return int(1.5 * data_bytes) + max(train_bytes, eval_bytes) + RUN_OVERHEAD_BYTES


def available_memory() -> int | None:
    """Bytes of memory still available: free RAM, or a container's limit if lower; None if unknown."""
    found = []
    try:
        import psutil
        found.append(psutil.virtual_memory().available)
    except ImportError:
        try:
            with open("/proc/meminfo") as f:
                found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
        except (OSError, ValueError):
            pass
    try:                                 # cgroup v2 (Docker, Kubernetes, systemd)
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as used:
            cap = limit.read().strip()
            if cap != "max":
                found.append(int(cap) - int(used.read()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _fit_in_memory(setup: _Setup, workers: int, chosen: bool) -> int:
    """`workers`, or fewer if they would not fit and the caller did not choose the number; else raise."""
    per_run = run_bytes(setup.n_train, setup.n_heldout, setup.resolution, setup.widths, setup.convs_per_stage,
                        setup.batch_size)
    free = available_memory()
    if free is None:
        return workers

    def need(w):                         # one run here in this process, or one per worker process
        return per_run if w == 1 else w * (PROCESS_BYTES + per_run)

    if not chosen:
        while workers > 1 and need(workers) > free:
            workers -= 1
    if need(workers) > free:
        mib, gib = 2**20, 2**30
        how = (f"{workers} worker processes x ({PROCESS_BYTES / mib:.0f} MiB for Python and torch + "
               f"{per_run / mib:.0f} MiB for one run's data and activations)" if workers > 1
               else f"{per_run / mib:.0f} MiB for one run's data and activations")
        fewer = f"fewer workers (workers=1 needs about {need(1) / gib:.2f} GiB), or " if workers > 1 else ""
        raise ValueError(f"this sweep needs about {need(workers) / gib:.2f} GiB of memory ({how}), but only "
                         f"{free / gib:.2f} GiB is available: use {fewer}a smaller n_train, n_heldout, "
                         f"batch_size or resolution")
    return workers


MIN_HELDOUT = data.NUM_COMBOS - len(data.heldout_combos()) + 1


def _check_setup(setup: _Setup, workers: int | None) -> None:
    """Refuse here, before any worker starts, what would fail in every run (or, as lr = 0, silently learn nothing)."""
    _positive(setup.lr, "lr")
    if setup.temperature_lr is not None and not setup.temperature_lr > 0:
        raise ValueError(f"temperature_lr must be positive (or None), got {setup.temperature_lr}")
    # each evaluation set needs two pictures of one colour x shape (tolerance compares them): with one more
    # picture than the 40 training combinations, some combination must come twice (pigeonhole)
    if isinstance(setup.n_heldout, bool) or not isinstance(setup.n_heldout, int) or setup.n_heldout < MIN_HELDOUT:
        raise ValueError(f"n_heldout must be at least {MIN_HELDOUT}, got {setup.n_heldout}: tolerance compares two "
                         "pictures of one colour x shape, and only that many pictures make sure one comes twice")
    _check_whole("resolution", setup.resolution, 16)                # data.render draws nothing smaller
    _check_whole("convs_per_stage", setup.convs_per_stage, 1)
    if not setup.widths:
        raise ValueError(f"widths must be one or more whole numbers >= 1 (channels per stage), got {setup.widths!r}")
    for w in setup.widths:
        _check_whole("widths", w, 1)                                  # channels per stage
    if setup.threads is not None:
        _check_whole("threads", setup.threads, 1)                     # or None: torch's setting
    if workers is not None and not (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1):
        raise ValueError(f"workers must be at least 1 (or None for one per core), got {workers}")
    try:
        device = train.resolve_device(setup.device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or another torch device, got {setup.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={setup.device!r}, but torch finds no CUDA GPU here: use device='auto' or 'cpu'")
    train.resolve_precision(setup.precision, device)


def sweep(taus: Sequence[float], seeds: Sequence[int], steps: int = 200, n_train: int = 8000, *,
          learnable: bool = True, resolution: int = 32, widths: tuple[int, ...] = (32, 64, 128),
          convs_per_stage: int = 1, batch_size: int = 128, lr: float = 2e-3, n_heldout: int = 1000,
          data_seed: int = 0, device: str = "auto", threads: int | None = 1, workers: int | None = None,
          precision: str = "auto", learnable_starts: Sequence[float] = (INIT_TEMPERATURE,),
          temperature_lr: float | None = None, callbacks: Callable[[dict], list] | None = None,
          keep_features: bool = False, progress: bool = False) -> list[dict]:
    """Train one model per (τ, seed) (and per seed with a learnable τ); return one row per run.

    Each row: tau (the fixed τ, or the starting τ of a learnable run), learnable, seed,
    heldout_acc and train_combo_acc (zero-shot over all 48 prompts, on held-out and on training
    colour x shape combinations), final_tau, final_loss, alignment and uniformity of the held-out
    image-caption features, tolerance and other_class_similarity of the held-out pictures (train_combo_*:
    the same of new pictures of the training combinations; every evaluation picture holds one object), and
    tau_trajectory (the τ each step used, in its forward pass: before that step's update and clamp).
    `precision` is TrainConfig's ("auto": bfloat16 where the hardware has it natively).
    With `learnable`, one learnable run per seed starts from each τ in `learnable_starts` (CLIP's 0.07
    by default); `temperature_lr` gives their logit_scale a learning rate of its own (lesson 07).
    `callbacks(run) -> list of Callbacks` may attach e.g. a dashboard to some runs; `run` is a
    dict with tau, learnable and seed. Runs train `workers` at a time in separate processes of
    `threads` CPU threads each (None: `default_workers`, one per core here): many small runs finish
    soonest as one single-threaded run per core (benchmarks/NOTES.md). Rows are the same whatever `workers`
    is: each run is seeded on its own. With workers > 1, callbacks watch (they get each step's
    numbers; `state.model` is None and `state.stop` is ignored).
    With `progress`, a line counts the finished runs and estimates the time left (`RunProgress`).
    Ctrl-C raises SweepInterrupted (a KeyboardInterrupt), and a run that fails SweepFailed (a
    RuntimeError, from the run's error); both keep the finished runs' rows in `.rows`.
    With `keep_features`, each row also holds "features": the held-out images' and captions' features
    after training (image, text) and before it (image_init, text_init), the 48 class prompts' features
    (classes), the held-out labels (numpy arrays; torch.as_tensor turns them back) and captions (lesson 12
    measures the modality gap).
    """
    if not taus and not learnable:
        raise ValueError("nothing to run: give at least one τ or learnable=True")
    _check_taus(taus, "taus")
    if learnable:
        _check_taus(learnable_starts, "learnable_starts")
    if learnable and (not learnable_starts or any(not 0.01 <= t <= 1 for t in learnable_starts)):
        raise ValueError(f"every learnable start must be in [0.01, 1] (the clamp's range), got {list(learnable_starts)}")
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"seeds must be distinct (a repeated seed repeats its runs), got {list(seeds)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 2 <= batch_size <= n_train:
        raise ValueError(f"batch_size must be in [2, n_train = {n_train}], got {batch_size}")
    setup = _Setup(steps, n_train, resolution, tuple(widths), convs_per_stage, batch_size, lr, n_heldout,
                   data_seed, device, threads, precision, temperature_lr, keep_features)
    _check_setup(setup, workers)                    # a bad value fails here, not in a worker
    runs = [dict(tau=float(t), learnable=False) for t in taus]
    if learnable:
        runs += [dict(tau=float(t), learnable=True) for t in learnable_starts]
    jobs = [dict(run, seed=int(seed)) for seed in seeds for run in runs]
    chosen = workers is not None
    workers = _fit_in_memory(setup, min(len(jobs), workers or default_workers(device, threads)), chosen)
    return _run_all(setup, jobs, callbacks, workers, RunProgress(len(jobs), workers) if progress else None)


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


_METRICS = ("heldout_acc", "train_combo_acc", "final_tau", "alignment", "uniformity", "train_combo_uniformity",
            "tolerance", "other_class_similarity", "train_combo_tolerance", "train_combo_other_class_similarity")


def summarize(rows: Sequence[dict]) -> dict:
    """Means and standard deviations over seeds.

    Returns {"sweep": [one dict per fixed τ, ascending], "learnable": dict or None,
    "learnable_starts": [one dict per learnable start, ascending]}; "learnable" is the run from
    CLIP's 0.07 if there is one, else the first start. Each dict holds tau (the fixed τ or the start),
    n_seeds and <metric>_mean / <metric>_std for heldout_acc, train_combo_acc, final_tau, alignment,
    uniformity, tolerance and other_class_similarity (held-out pictures), and train_combo_uniformity,
    train_combo_tolerance and train_combo_other_class_similarity (new pictures of the training
    combinations), plus acc_mean / acc_std (= held-out accuracy).
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
    learn = [stats(tau, members) for (is_learnable, tau), members in sorted(groups.items()) if is_learnable]
    clip_start = [row for row in learn if math.isclose(row["tau"], INIT_TEMPERATURE)]
    return {"sweep": fixed, "learnable": (clip_start or learn or [None])[0], "learnable_starts": learn}

