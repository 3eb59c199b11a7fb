"""The temperature explorer's speed: one slider update vs re-drawing the figure from scratch.

    python benchmarks/slider.py              # prints the medians and the ratio
    python benchmarks/run.py --only slider   # the same, into benchmarks/results.json

Measured side by side in one run, interleaved, medians over `repeats` (timings on a shared machine are
noisy), on a batch of 32 pairs of 64-d embeddings:

- slider_ms: what the widget does when τ moves: `explorer.value = tau` -> the maths (row statistics,
  the B×B probabilities, histograms, the loss via clip_loss) -> artists updated in place -> the
  canvas redrawn: the static background restored and the changed artists rendered for real (Agg),
  and on the ipympl canvas the changed pixels PNG-encoded for the browser, as with a browser attached;
- slider_full_draw_ms: the same in-place update followed by a full `fig.canvas.draw()` (what a plain
  `draw_idle` would cost without blitting);
- slider_naive_ms: the obvious alternative: a new figure, every artist created again, one full
  `canvas.draw()` on a plain Agg canvas (no widget, no PNG: the cheapest possible rebuild).

Targets (issue 4): slider_ms <= 30 ms median and at least 4x faster than slider_naive_ms.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time

import torch
import torch.nn.functional as F

TARGET_MS, TARGET_SPEEDUP = 30.0, 4.0


def _embeddings(b: int = 32, d: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    txt = F.normalize(img + 0.5 * torch.randn(b, d, generator=g), dim=-1)
    return img, txt


def measure(repeats: int = 30, threads: int = 2, canvas: str | None = None) -> dict:
    """Median milliseconds of a slider update, of an update with a full draw, and of a redraw from
    scratch, interleaved; plus their ratio."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from clipcourse import temperature_maths, widgets

    torch.set_num_threads(threads)
    if canvas is None:
        canvas = "ipympl" if importlib.util.find_spec("ipympl") else "agg"
    img, txt = _embeddings()
    explorer = widgets.TemperatureExplorer((img, txt), canvas=canvas, tau=0.07)
    if canvas == "ipympl":
        explorer.fig.canvas.syncing_data_url = False     # as when a browser is attached
    figsize, dpi = explorer.fig.get_size_inches(), explorer.fig.dpi
    sims, b = explorer.sims[explorer.name], explorer.batch_size

    def slider(tau):
        explorer.value = tau

    def full_draw(tau):
        with widgets._one_thread():
            explorer.panels.update(sims, tau, 0, temperature_maths.loss_at(img, txt, tau))
        explorer.fig.canvas.draw()

    def naive(tau):
        fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(fig)
        panels = widgets._TemperaturePanels(fig, b)
        with widgets._one_thread():
            panels.set_row(0, sims[0].numpy())
            panels.update(sims, tau, 0, temperature_maths.loss_at(img, txt, tau))
        fig.canvas.draw()

    # τ values a learner passes while dragging: every call changes the picture
    taus = [10 ** (-2.5 + 2.0 * ((k * 0.381966) % 1.0)) for k in range(repeats + 3)]
    wall = {"slider": [], "full_draw": [], "naive": []}
    cpu = {"slider": [], "full_draw": [], "naive": []}
    for k, tau in enumerate(taus):
        for name, fn in (("slider", slider), ("naive", naive), ("full_draw", full_draw)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn(tau * (1.01 if name == "full_draw" else 1.0))
            if k >= 3:                                      # three warm-up rounds
                wall[name].append((time.perf_counter() - t0) * 1000)
                cpu[name].append((time.process_time() - c0) * 1000)
    med = {name: statistics.median(v) for name, v in wall.items()}
    med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    return {"slider_ms": med["slider"], "slider_naive_ms": med["naive"],
            "slider_speedup": med["naive"] / med["slider"], "slider_full_draw_ms": med["full_draw"],
            # CPU time of this process: what the same work costs on an idle machine (the work is
            # single-threaded), a fairer figure when other jobs share the cores
            "slider_cpu_ms": med_cpu["slider"], "slider_naive_cpu_ms": med_cpu["naive"],
            "slider_full_draw_cpu_ms": med_cpu["full_draw"],
            "slider_canvas": canvas, "slider_repeats": repeats, "slider_load_1min": _load()}


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def main() -> dict:
    r = measure()
    ok_ms, ok_ratio = r["slider_ms"] <= TARGET_MS, r["slider_speedup"] >= TARGET_SPEEDUP
    print(f"temperature explorer, {r['slider_canvas']} canvas, median of {r['slider_repeats']} interleaved runs "
          f"(load average {r['slider_load_1min']:.1f} on {os.cpu_count()} cores):")
    print(f"{'':52s}{'wall':>9s}{'CPU':>9s}")
    print(f"  slider update (maths + in-place artists + blit)   {r['slider_ms']:7.1f}ms {r['slider_cpu_ms']:6.1f}ms   "
          f"target <= {TARGET_MS:.0f} ms (wall): {'met' if ok_ms else 'MISSED'}")
    print(f"  same update with a full fig.canvas.draw()          {r['slider_full_draw_ms']:7.1f}ms "
          f"{r['slider_full_draw_cpu_ms']:6.1f}ms")
    print(f"  redraw from scratch (new figure + artists + draw)  {r['slider_naive_ms']:7.1f}ms "
          f"{r['slider_naive_cpu_ms']:6.1f}ms")
    print(f"  speed-up of the slider over the redraw             {r['slider_speedup']:7.1f}x  "
          f"{r['slider_naive_cpu_ms'] / r['slider_cpu_ms']:6.1f}x   "
          f"target >= {TARGET_SPEEDUP:.0f}x: {'met' if ok_ratio else 'MISSED'}")
    return r


if __name__ == "__main__":
    main()
