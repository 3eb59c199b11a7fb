"""The course's benchmark: how fast and how well a tiny CLIP trains on this machine.

    python benchmarks/run.py                 # training + loss timings (+ slider if available)
    python benchmarks/run.py --only train    # one part

Prints a table and writes benchmarks/results.json. Timings are wall seconds on this machine;
speed comparisons (ours vs open_clip, slider vs redraw) are measured side by side in one run,
interleaved, and reported as medians, because timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def cpu_info() -> dict:
    """The CPU these numbers come from: model name, family and model numbers (one model name, "AMD EPYC",
    has covered both a Zen 4 and a Zen 5 here), vector extensions, native bfloat16 or not."""
    from clipcourse import train

    model, flags, ids = platform.processor() or platform.machine(), set(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            elif key.strip() in ("cpu family", "model"):
                ids.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    extensions = [name for flag, name in (("amx_tile", "AMX"), ("avx512_bf16", "AVX512-BF16"),
                                          ("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags]
    family = f"family {ids['cpu family']}, model {ids['model']}" if len(ids) == 2 else "unknown"
    return {"cpu": model, "cpu_family_model": family, "cpu_extensions": extensions,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bfloat16": train.native_bfloat16(torch.device("cpu"))}


def _precisions() -> list[str]:
    """'auto' (what a learner gets) and, where that is not already float32, 'float32' beside it."""
    from clipcourse import train

    native = train.resolve_precision("auto", torch.device("cpu"))
    return ["auto"] if native == torch.float32 else ["auto", "float32"]


def _train_once(seed: int, precision: str) -> dict:
    from clipcourse import data, evaluate, model, text, train

    tok = text.Tokenizer.for_shapesworld()
    t0 = time.perf_counter()
    ds = data.ShapesWorld.generate(20000, seed=seed)
    tokens = tok(ds.captions)
    data_s = time.perf_counter() - t0
    held = data.ShapesWorld.generate(2000, split="heldout", seed=seed + 1, two_object_prob=0.0)
    m = model.build_model(tok, seed=seed)
    cfg = train.TrainConfig(seed=seed, device="cpu", precision=precision)
    t0 = time.perf_counter()
    m, history = train.train(m, ds.images, tokens, cfg, progress=False)
    train_s = time.perf_counter() - t0
    classes = evaluate.zero_shot_classifier(m, tok, [data.combo_name(i) for i in range(data.NUM_COMBOS)])
    acc = evaluate.zero_shot_accuracy(evaluate.embed_images(m, held.images), classes, held.labels)
    return dict(heldout_acc=acc, train_s=train_s, data_s=data_s, final_tau=history.temperature[-1],
                final_loss=history.loss[-1])


def bench_train(threads: int = 2, seeds=(0, 1, 2)) -> dict:
    """Default training on `threads` CPU threads, once per seed and precision, the precisions
    interleaved seed by seed: held-out colour×shape zero-shot accuracy and seconds.
    Top-level keys are precision="auto"'s (`heldout_acc`, `train_s`: seed 0, lesson 06's run); the
    same keys for float32 go under "float32" (the same as the top level where float32 is native)."""
    from clipcourse import train

    torch.set_num_threads(threads)
    blocks = {p: {"heldout_acc_seeds": [], "train_s_seeds": []} for p in _precisions()}
    for seed in seeds:
        for precision, out in blocks.items():
            row = _train_once(seed, precision)
            out["heldout_acc_seeds"].append(row["heldout_acc"])
            out["train_s_seeds"].append(row["train_s"])
            if seed == seeds[0]:
                out.update(row)
    auto = blocks["auto"]
    auto["precision"] = str(train.resolve_precision("auto", torch.device("cpu")))
    f32 = blocks.get("float32", {k: v for k, v in auto.items() if k != "precision"})
    return {**auto, "train_s_float32": f32["train_s"], "float32": {"precision": "torch.float32", **f32}}


def bench_sweep(seeds=(0, 1, 2), n_taus: int = 7) -> dict:
    """The temperature experiment of lesson 07 at benchmark size: 7 log-spaced fixed τ in
    [0.01, 1] plus learnable τ, 3 seeds each, in worker processes of one thread (one per core);
    total wall seconds (process start-up included) and accuracy per τ, for precision "auto" and,
    right after it, float32."""
    from clipcourse import experiments

    blocks = {}
    for precision in _precisions():
        t0 = time.perf_counter()
        rows = experiments.sweep(experiments.log_spaced(0.01, 1.0, n_taus), seeds, device="cpu",
                                 precision=precision, progress=True)   # the count on standard error
        sweep_s = time.perf_counter() - t0
        summary = experiments.summarize(rows)
        learn = summary["learnable"]
        blocks[precision] = {
            "sweep_s": sweep_s, "sweep_runs": len(rows), "sweep_workers": experiments.default_workers("cpu"),
            "sweep": [{"tau": r["tau"], "acc_mean": r["acc_mean"], "acc_std": r["acc_std"]}
                      for r in summary["sweep"]],
            "learnable": {"final_tau": learn["final_tau_mean"], "acc_mean": learn["acc_mean"],
                          "acc_std": learn["acc_std"]}}
    return {**blocks["auto"], "float32": blocks.get("float32", blocks["auto"])}


def bench_data(n: int = 20000, repeats: int = 5) -> dict:
    """ShapesWorld rendering speed on one thread: images of 32×32 per second (median)."""
    from clipcourse import data

    torch.set_num_threads(1)
    rates = []
    for r in range(repeats):
        t0 = time.perf_counter()
        data.ShapesWorld.generate(n, seed=r)
        rates.append(n / (time.perf_counter() - t0))
    return {"data_images_per_s": statistics.median(rates)}


def bench_loss(repeats: int = 15, b: int = 1024, d: int = 512, threads: int = 2) -> dict:
    """clip_loss vs open_clip's ClipLoss, forward + backward at B=1024, D=512, interleaved medians."""
    from clipcourse.loss import clip_loss

    torch.set_num_threads(threads)
    try:
        from open_clip.loss import ClipLoss
    except ImportError:
        ClipLoss = None
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1)

    def ours():
        i, t = img.clone().requires_grad_(), txt.clone().requires_grad_()
        clip_loss(i, t, 0.07).backward()

    def theirs():
        i, t = img.clone().requires_grad_(), txt.clone().requires_grad_()
        ClipLoss()(i, t, torch.tensor(1 / 0.07)).backward()

    times = {"ours": [], "theirs": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("theirs", theirs)):
            if name == "theirs" and ClipLoss is None:
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    return {"loss_ms": statistics.median(times["ours"]),
            "open_clip_loss_ms": statistics.median(times["theirs"]) if times["theirs"] else math.nan}


def bench_slider() -> dict:
    """The temperature explorer: in-kernel update vs redraw from scratch (benchmarks/slider.py)."""
    try:
        import slider
    except ImportError as e:  # the widget benchmark is not there yet
        return {"slider_error": str(e)}
    return slider.measure()


PARTS = {"data": bench_data, "train": bench_train, "sweep": bench_sweep, "loss": bench_loss,
         "slider": bench_slider}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(PARTS), action="append", help="run only these parts")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args(argv)
    results = {"date": datetime.date.today().isoformat(),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
               **cpu_info()}
    out = Path(args.out)
    if out.exists():  # keep the figures of parts not run this time
        results = {**json.loads(out.read_text()), **results}
    for name in args.only or list(PARTS):
        t0 = time.perf_counter()
        part = PARTS[name]()
        if "float32" in part:
            results["float32"] = {**results.get("float32", {}), **part.pop("float32")}
        results.update(part)
        print(f"[{name}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nclipcourse benchmark, {results['date']}, {results['machine']}")
    print(f"  CPU: {results['cpu']}, {results['cpu_family_model']} ({', '.join(results['cpu_extensions'])}); "
          f"native bfloat16: {results['native_bfloat16']}")
    _print_block(results)
    if "float32" in results:
        print("  --- float32 ---")
        _print_block(results["float32"])
    return results


def _print_block(results: dict) -> None:
    for key, value in results.items():
        if key in ("date", "machine", "cpu", "cpu_family_model", "cpu_extensions", "native_bfloat16", "float32"):
            continue
        if key == "sweep":
            for r in value:
                print(f"  sweep τ={r['tau']:<8.3g}   acc {r['acc_mean']:.3f} ± {r['acc_std']:.3f}")
        elif key == "learnable":
            print(f"  learnable τ→{value['final_tau']:.3g}   acc {value['acc_mean']:.3f} ± {value['acc_std']:.3f}")
        elif isinstance(value, list):
            print(f"  {key:22s} " + ", ".join(f"{v:.4g}" for v in value))
        else:
            print(f"  {key:22s} {value:.4g}" if isinstance(value, float) else f"  {key:22s} {value}")


if __name__ == "__main__":
    main()
