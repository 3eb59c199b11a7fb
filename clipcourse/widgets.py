"""Explorers that make the temperature τ visible (lesson 05; reused after training in 06 and 07).

What is here draws and reacts: the widgets `TemperatureExplorer` and `LossTemperatureExplorer`, and
the static figures `temperature_snapshots` / `loss_vs_temperature` for readers without a kernel. The
maths they show (probabilities at τ, entropy, effective negatives, gradient weights, the loss against
τ, the optimal τ) are pure functions in `clipcourse.temperature_maths`.

matplotlib and ipywidgets are imported inside the functions that draw, so `from clipcourse import
widgets` stays as light as torch.

Speed: a slider move must feel instant. The widgets build their figure once, outside pyplot (so it is
never shown twice), on an ipympl canvas placed in a VBox with the controls. On every change they only
update the artists that depend on τ in place (`set_verts`, `set_data`, `set_segments`) and redraw just
those over a saved background (blitting); the numbers go to an HTML widget, so the browser, not the
kernel, draws the text. `benchmarks/slider.py` measures this against re-drawing the figure from
scratch; `tests/test_browser.py` measures key press to new picture in JupyterLab.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# the maths the explorers show lives in temperature_maths; the widgets only draw and react
from .temperature_maths import (TAU_RANGE, RowStats, descend_log_temperature, entropy, gradient_weights,  # noqa: F401
                                hardest_shares, loss_at, loss_curve, mean_effective_negatives, mean_entropy,
                                optimal_temperature, probabilities, row_stats, similarities)

HIST_FLOOR = -8.0               # the probability histograms start at 10^-8 (smaller values go there)


# --- shared helpers for the figures --------------------------------------------------------------

def _as_sets(embeddings) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Accept (img, txt) or {name: (img, txt)}; check shapes; return a dict of detached tensors."""
    if isinstance(embeddings, Mapping):
        sets = dict(embeddings)
    else:
        sets = {"embeddings": tuple(embeddings)}
    if not sets:
        raise ValueError("need at least one set of embeddings")
    out, batch = {}, None
    for name, pair in sets.items():
        if len(pair) != 2:
            raise ValueError(f"embeddings[{name!r}] must be a pair (image_features, text_features)")
        img, txt = (x.detach().float().cpu() for x in pair)
        if img.ndim != 2 or img.shape != txt.shape:
            raise ValueError(f"embeddings[{name!r}]: image and text features must both be (B, D), got "
                             f"{tuple(img.shape)} and {tuple(txt.shape)}")
        if batch is not None and len(img) != batch:
            raise ValueError(f"every set must have the same batch size; {name!r} has {len(img)}, not {batch}")
        if len(img) < 2:
            raise ValueError("a batch needs at least 2 pairs (one positive and one negative per row)")
        batch = len(img)
        out[str(name)] = (img, txt)
    return out


@contextmanager
def _one_thread():
    """Run torch on one thread: a widget's maths is a few tiny ops, and on a busy machine each
    op that wakes a thread pool can wait milliseconds for a core, far longer than the op itself."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _new_figure(figsize, dpi, canvas: str):
    """A figure outside pyplot, on an ipympl canvas (a widget) or a plain Agg canvas."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    if canvas == "ipympl":
        import matplotlib

        backend = matplotlib.get_backend()
        from ipympl.backend_nbagg import Canvas, FigureManager

        if matplotlib.get_backend() != backend:
            # the first `import ipympl` switches pyplot to ipympl; we draw outside pyplot, and the
            # lesson's static figures must stay inline
            matplotlib.use(backend)

        with warnings.catch_warnings():
            # ipympl's Toolbar passes its canvas on to traitlets, which warns; not our code to fix
            warnings.filterwarnings("ignore", message=r"Passing unrecognized arguments to super\(Toolbar\)",
                                    category=DeprecationWarning)
            c = Canvas(fig)
            FigureManager(c, 0)
        c.header_visible = False
        c.footer_visible = False
        c.toolbar_visible = False
        c.resizable = False
    elif canvas == "agg":
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    else:
        raise ValueError(f"canvas must be 'ipympl' or 'agg', got {canvas!r}")
    return fig


class _Blitter:
    """Redraw only what moves: the figure's static parts are drawn once and kept as a background.

    Artists listed as animated are left out of full draws (matplotlib skips them); after every full
    draw we copy the background and draw them on top. A slider move then restores the background
    and redraws just those artists (matplotlib's blitting recipe), which is several times cheaper
    than drawing axes, ticks and labels again. On the ipympl canvas, `blit` sends the changed
    pixels to the browser at once.
    """

    def __init__(self, fig, artists):
        self.fig, self.artists, self.background = fig, list(artists), None
        for a in self.artists:
            a.set_animated(True)
        fig.canvas.mpl_connect("draw_event", self._on_draw)

    def _on_draw(self, event) -> None:
        if event.canvas.is_saving():               # savefig: draw everything into its renderer
            for a in self.artists:
                a.draw(event.renderer)
            return
        self.background = event.canvas.copy_from_bbox(self.fig.bbox)
        self._draw_artists()

    def _draw_artists(self) -> None:
        for a in self.artists:
            self.fig.draw_artist(a)

    def update(self, send: bool = True) -> bool:
        """Put the current state of the animated artists on the canvas; False if a full draw is
        needed first (nothing drawn yet). send=False: only render (ipympl: send nothing)."""
        if self.background is None:
            return False
        canvas = self.fig.canvas
        canvas.restore_region(self.background)
        self._draw_artists()
        if send:
            canvas.blit(self.fig.bbox)
        return True


class _ReadoutBox:
    """The numbers next to a figure, as an HTML widget: the browser draws the text, so a slider move
    costs the kernel no text rendering (matplotlib would spend milliseconds per line of glyphs)."""

    def __init__(self):
        import ipywidgets as W

        self.widget = W.HTML()
        self.lines: list[list[tuple[str, str]]] = []

    def show(self, lines: list[list[tuple[str, str]]]) -> None:
        """lines: rows of (label, value) pairs."""
        import html

        self.lines = lines
        rows = ["   ".join(f"{html.escape(k)} = <b>{html.escape(v)}</b>" for k, v in line) for line in lines]
        self.widget.value = ('<div style="font-family: monospace; font-size: 13px; white-space: pre; '
                             'line-height: 1.45">' + "<br>".join(rows) + "</div>")

    def text(self) -> str:
        """The same numbers as plain text, one line per row."""
        return "\n".join("   ".join(f"{k} = {v}" for k, v in line) for line in self.lines)


class _CanvasView:
    """The part of a layout that shows the figure: the ipympl canvas itself, or (Agg) a PNG image."""

    def __init__(self, fig, canvas: str, animated):
        self.fig, self.kind = fig, canvas
        self.blitter = _Blitter(fig, animated)
        if canvas == "ipympl":
            self.widget = fig.canvas
        else:
            import ipywidgets as W

            self.widget = W.Image(format="png")

    def refresh(self, full: bool = False) -> None:
        """Show the new state: full=True when static parts changed (axes limits, titles)."""
        canvas = self.fig.canvas
        # ipympl before a browser is attached (nbconvert, tests): render, but send no image
        # messages; keep the widget's stored picture (`_data_url`) current instead
        offline = self.kind == "ipympl" and canvas.syncing_data_url
        if full or not self.blitter.update(send=not offline):
            if offline:
                from matplotlib.backends.backend_agg import FigureCanvasAgg

                FigureCanvasAgg.draw(canvas)       # render only; the browser asks for it on arrival
                canvas._png_is_old = True
            else:
                canvas.draw()                      # ipympl: also sends the picture to the browser
        if offline or self.kind == "agg":
            png = self._png()
            if self.kind == "agg":
                self.widget.value = png
            else:
                import base64

                # (ipympl's own offline path stores the PNG without the "data:" prefix, which a
                # browser then cannot show; this is the form its _repr_mimebundle_ uses)
                canvas._data_url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")

    def _png(self) -> bytes:
        import io

        import numpy as np
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.asarray(self.fig.canvas.buffer_rgba())).save(buf, format="png")
        return buf.getvalue()


def _log_tau_slider(tau: float, tau_range, description: str = "τ", step: float = 0.02):
    """A log-scale slider over about tau_range whose grid of steps passes exactly through τ.

    The browser snaps a slider's value to its grid (min + k·step) and sends the snapped value back;
    anchoring the grid at τ keeps the starting value (CLIP's 0.07) as given.
    """
    import ipywidgets as W

    lo, hi = (math.log10(t) for t in tau_range)
    start = min(max(math.log10(tau), lo), hi)
    low = start - math.floor((start - lo) / step + 1e-9) * step
    high = low + math.ceil((hi - low) / step - 1e-9) * step
    return W.FloatLogSlider(value=10 ** start, base=10, min=low, max=high, step=step,
                            description=description, readout_format=".3g", continuous_update=True,
                            layout=W.Layout(width="60%"))


def _set_selector(names: Sequence[str]):
    import ipywidgets as W

    return W.ToggleButtons(options=list(names), description="embeddings")


class _Displayable:
    """What both explorers share: shown as `self.widget` when the object ends a notebook cell, and
    driven from Python through the τ slider and the embeddings selector."""

    widget = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def value(self) -> float:
        """τ, as the slider shows it."""
        return float(self.slider.value)

    @value.setter
    def value(self, tau: float) -> None:
        self.slider.value = tau            # the slider's observer redraws

    def set_temperature(self, tau: float) -> dict:
        """Move the slider to τ (clipped to its range); return the readouts."""
        self.value = tau
        return self.readouts

    def set_embeddings(self, name: str) -> dict:
        """Switch to the embeddings called `name`; return the readouts."""
        if name not in self.sets:
            raise KeyError(f"no embeddings named {name!r}; have {list(self.sets)}")
        self.name = name
        if self.set_selector is not None and self.set_selector.value != name:
            self.set_selector.value = name              # its observer calls back here
            return self.readouts
        self._embeddings_changed()
        return self.readouts


# --- the temperature explorer --------------------------------------------------------------------

WEIGHT_RANGE = (1e-4, 3e3)      # the gradient-weight panel's fixed log axis (1/τ is at most 1000)


class _TemperaturePanels:
    """The four panels and the readout lines of the temperature explorer, drawn into a figure.

    Built once. `set_row` changes what depends on the selected row (a full redraw follows);
    `update` changes only what depends on τ: the artists listed in `animated`. Used by the widget
    and by the benchmark's "redraw from scratch" baseline, so both draw exactly the same picture.
    """

    def __init__(self, fig, batch_size: int, hist_floor: float = HIST_FLOOR):
        import numpy as np
        from matplotlib.collections import PolyCollection
        from matplotlib.patches import Rectangle

        self.fig, self.b = fig, batch_size
        b = batch_size
        gs = fig.add_gridspec(2, 2, left=0.07, right=0.98, top=0.91, bottom=0.09, hspace=0.42, wspace=0.2)
        self.ax_row = fig.add_subplot(gs[0, 0])
        self.ax_mat = fig.add_subplot(gs[0, 1])
        self.ax_hist = fig.add_subplot(gs[1, 0])
        self.ax_grad = fig.add_subplot(gs[1, 1])
        for ax in (self.ax_row, self.ax_mat, self.ax_hist, self.ax_grad):
            ax.tick_params(labelsize=8)

        # 1. one row's distribution, the positive in orange: B bars as one collection (one draw call)
        x = np.arange(b, dtype=float)
        self._bar_x = np.stack([x - 0.4, x - 0.4, x + 0.4, x + 0.4], axis=1)    # (B, 4) corners' x
        self.heights = np.zeros(b)
        self.bars = PolyCollection(self._bar_verts(), facecolors="tab:gray", edgecolors="none")
        self.ax_row.add_collection(self.bars)
        self.ax_row.set(ylim=(0, 1.02), xlim=(-0.7, b - 0.3))
        self.ax_row.set_xlabel("caption j", fontsize=8)
        self.ax_row.set_ylabel("P(caption j | image i)", fontsize=8)
        self.row_title = self.ax_row.set_title("", fontsize=9)
        self._positive = None

        # 2. the whole probability matrix, the selected row outlined
        self.im = self.ax_mat.imshow(np.zeros((b, b)), vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
        self.ax_mat.set_title("P for every image (rows) and caption (columns)", fontsize=9)
        self.ax_mat.set_xlabel("caption j", fontsize=8)
        self.ax_mat.set_ylabel("image i (click to pick a row)", fontsize=8)
        self.row_box = self.ax_mat.add_patch(Rectangle((-0.5, -0.5), b, 1, fill=False, edgecolor="tab:red",
                                                       lw=1.5, zorder=3))

        # 3. histograms of log10 P for positives and negatives, over fixed bins
        self.edges = np.linspace(hist_floor, 0.0, 33)
        zeros = np.zeros(len(self.edges) - 1)
        self.hist_neg = self.ax_hist.stairs(zeros, self.edges, fill=True, alpha=0.55, color="tab:blue",
                                            label=f"negatives (i ≠ j): {b * (b - 1)}")
        self.hist_pos = self.ax_hist.stairs(zeros, self.edges, fill=True, alpha=0.55, color="tab:orange",
                                            label=f"positives (i = j): {b}")
        self.ax_hist.set(xlim=(hist_floor, 0), ylim=(0, 1.02))
        self.ax_hist.set_xlabel(f"log10 P (below 1e{hist_floor:.0f} counted at the left edge)", fontsize=8)
        self.ax_hist.set_ylabel("fraction of pairs", fontsize=8)
        self.ax_hist.set_title("where the probability goes, all rows", fontsize=9)
        self.ax_hist.legend(fontsize=7, loc="upper left")

        # 4. the push on each negative of the selected row against its similarity, on a log axis:
        #    log(P_ij/τ) = s_ij/τ - const, so the points lie on a line whose slope is 1/τ
        lo = WEIGHT_RANGE[0]
        self.stems = self.ax_grad.vlines(np.zeros(b - 1), lo, np.full(b - 1, lo), color="tab:blue", lw=1.2)
        (self.tops,) = self.ax_grad.plot(np.zeros(b - 1), np.full(b - 1, lo), "o", ms=3.5, color="tab:blue")
        (self.hardest_dot,) = self.ax_grad.plot([0], [lo], "o", ms=6, color="tab:red", label="hardest negative")
        self.positive_line = self.ax_grad.axvline(0, color="tab:orange", ls="--", lw=1.2, label="the positive's s_ii")
        self.ax_grad.set_yscale("log")
        self.ax_grad.set_ylim(*WEIGHT_RANGE)
        self.ax_grad.set_xlabel("similarity s_ij of negative caption j to image i", fontsize=8)
        self.ax_grad.set_ylabel("gradient weight P_ij / τ", fontsize=8)
        self.ax_grad.set_title("push on each negative of the row: P_ij / τ", fontsize=9)
        self.ax_grad.legend(fontsize=7, loc="upper left")
        self.animated = [self.bars, self.im, self.hist_neg, self.hist_pos, self.stems, self.tops,
                         self.hardest_dot]
        self.values: dict = {}

    def _bar_verts(self):
        import numpy as np

        h = self.heights[:, None]
        y = np.concatenate([np.zeros_like(h), h, h, np.zeros_like(h)], axis=1)  # (B, 4)
        return np.stack([self._bar_x, y], axis=2)                              # (B, 4, 2)

    def set_row(self, row: int, sims_row, caption: str | None = None) -> None:
        """Row-dependent but τ-independent parts: the highlighted bar, the box, the stems' x."""
        import numpy as np

        colors = ["tab:gray"] * self.b
        colors[row] = "tab:orange"
        self.bars.set_facecolor(colors)
        self._positive = row
        self.row_box.set_y(row - 0.5)
        s = np.asarray(sims_row, dtype=float)
        self.neg_index = np.array([j for j in range(self.b) if j != row])
        self.neg_x = s[self.neg_index]
        self.positive_line.set_xdata([s[row], s[row]])
        lo, hi = s.min(), s.max()
        pad = 0.05 * (hi - lo) + 1e-3
        self.ax_grad.set_xlim(lo - pad, hi + pad)
        label = f"row {row}" + (f": “{caption}”" if caption else "")
        self.row_title.set_text(f"{label}\nP(caption j | image {row}), the positive in orange")

    def update(self, sims, tau: float, row: int, loss: float) -> dict:
        """Change every artist that depends on τ; return the numbers shown."""
        import numpy as np

        st = row_stats(sims, tau, row)
        p_all = probabilities(sims, tau).numpy()                       # (B, B)
        self.heights = st.probs.numpy()
        self.bars.set_verts(self._bar_verts())
        self.im.set_data(p_all)

        logp = np.log10(np.clip(p_all, 10 ** self.edges[0], 1.0))
        eye = np.eye(self.b, dtype=bool)
        pos, _ = np.histogram(logp[eye], self.edges)
        neg, _ = np.histogram(logp[~eye], self.edges)
        self.hist_pos.set_data(pos / eye.sum())
        self.hist_neg.set_data(neg / (~eye).sum())

        lo = WEIGHT_RANGE[0]
        w = st.weights.numpy()[self.neg_index]
        shown = np.clip(w, lo, None)
        self.stems.set_segments([[(x, lo), (x, y)] for x, y in zip(self.neg_x, shown)])
        self.tops.set_data(self.neg_x, shown)
        k = int(np.nonzero(self.neg_index == st.hardest)[0][0])
        self.hardest_dot.set_data([self.neg_x[k]], [shown[k]])
        mean_h = float(entropy(torch.from_numpy(p_all)).mean())
        self.values = {"tau": float(tau), "row": row, "loss": float(loss), "entropy": st.entropy,
                       "effective_negatives": st.effective_negatives, "mean_entropy": mean_h,
                       "mean_effective_negatives": mean_effective_negatives(sims, tau),   # the mean of e^H
                       "pull": st.pull, "hardest": st.hardest, "hardest_share": st.hardest_share,
                       "positive_probability": float(st.probs[row]),
                       "mean_positive_probability": float(np.diag(p_all).mean())}
        return self.values

    def readout_lines(self) -> list[list[tuple[str, str]]]:
        """The numbers to show next to the figure, as rows of (label, value)."""
        v, b = self.values, self.b
        return [[("τ", f"{v['tau']:<7.3g}"), ("loss", f"{v['loss']:<7.3f}"),
                 (f"row {v['row']}: entropy", f"{v['entropy']:.2f} nats"),
                 ("effective negatives e^H", f"{v['effective_negatives']:.1f} of {b}")],
                [("all rows: mean entropy", f"{v['mean_entropy']:.2f} nats"),
                 ("mean e^H", f"{v['mean_effective_negatives']:.1f}"),
                 ("mean P(positive)", f"{v['mean_positive_probability']:.3f}")],
                [(f"push on row {v['row']}'s negatives: total (1 − P_ii)/τ", f"{v['pull']:.3g}"),
                 ("the hardest negative's share", f"{100 * v['hardest_share']:.1f}%")]]


class TemperatureExplorer(_Displayable):
    """A log-scale τ slider over a real batch of embeddings, and everything τ changes.

    embeddings: (image_features, text_features), L2-normalised, (B, D) each; or a dict of such
    pairs, e.g. {"untrained": (...), "trained": (...)}, to switch between them. captions: the B
    captions, shown in the row selector. canvas: "ipympl" (interactive, the default) or "agg" (a
    PNG per update, for front ends without ipympl, and for tests).

    Drive it from Python: `explorer.value = 0.01` (or `set_temperature`), `set_row`, `set_embeddings`;
    read `explorer.readouts` and `explorer.drawn()`.
    """

    def __init__(self, embeddings, *, captions: Sequence[str] | None = None, tau: float = 0.07,
                 row: int = 0, tau_range: tuple[float, float] = TAU_RANGE, canvas: str = "ipympl",
                 figsize=(10.0, 5.8), dpi: int = 80):
        import ipywidgets as W

        self.sets = _as_sets(embeddings)
        self.sims = {name: similarities(img, txt) for name, (img, txt) in self.sets.items()}
        self.batch_size = b = len(next(iter(self.sims.values())))
        if captions is not None and len(captions) != b:
            raise ValueError(f"got {len(captions)} captions for a batch of {b}")
        self.captions = list(captions) if captions is not None else None
        if not 0 <= row < b:
            raise IndexError(f"row must be in [0, {b - 1}], got {row}")
        self.name = next(iter(self.sets))
        self.row = int(row)

        self.fig = _new_figure(figsize, dpi, canvas)
        self.panels = _TemperaturePanels(self.fig, b)
        self.view = _CanvasView(self.fig, canvas, self.panels.animated)

        self.slider = _log_tau_slider(tau, tau_range)
        if self.captions is not None:
            self.row_selector = W.Dropdown(options=[(f"{i}: {c}", i) for i, c in enumerate(self.captions)],
                                           value=self.row, description="row (image)",
                                           layout=W.Layout(width="60%"))
        else:
            self.row_selector = W.IntSlider(value=self.row, min=0, max=b - 1, description="row (image)")
        controls = [self.slider, self.row_selector]
        self.set_selector = None
        if len(self.sets) > 1:
            self.set_selector = _set_selector(list(self.sets))
            controls.insert(0, self.set_selector)
            self.set_selector.observe(lambda ch: self.set_embeddings(ch["new"]), names="value")
        self.slider.observe(lambda ch: self._redraw(), names="value")
        self.row_selector.observe(lambda ch: self.set_row(ch["new"]), names="value")
        self.fig.canvas.mpl_connect("button_press_event", self._on_click)
        self.readout = _ReadoutBox()
        self.widget = W.VBox(controls + [self.readout.widget, self.view.widget])

        self._select_row()
        self._redraw(full=True)

    # -- driving it from Python (value, set_temperature, set_embeddings: see _Displayable) --
    def set_row(self, row: int) -> dict:
        """Show row `row` (image `row` against every caption)."""
        if not 0 <= row < self.batch_size:
            raise IndexError(f"row must be in [0, {self.batch_size - 1}], got {row}")
        self.row = int(row)
        if self.row_selector.value != self.row:
            self.row_selector.value = self.row          # its observer calls back here
            return self.readouts
        self._select_row()
        self._redraw(full=True)
        return self.readouts

    def _embeddings_changed(self) -> None:
        self._select_row()
        self._redraw(full=True)

    @property
    def readouts(self) -> dict:
        """The numbers on display: tau, loss, entropy, effective_negatives, mean_entropy, pull, ..."""
        return dict(self.panels.values, embeddings=self.name)

    def stats(self) -> RowStats:
        """The selected row's statistics at the current τ."""
        return row_stats(self.sims[self.name], self.value, self.row)

    def drawn(self) -> dict:
        """What the artists show right now (for tests): bar heights, matrix, histograms, weights, text."""
        import numpy as np

        p = self.panels
        return {"row_probs": np.array([path.vertices[1, 1] for path in p.bars.get_paths()]),
                "positive_bar": p._positive,
                "matrix": np.asarray(p.im.get_array()),
                "hist_positive": np.asarray(p.hist_pos.get_data().values),
                "hist_negative": np.asarray(p.hist_neg.get_data().values),
                "weights_x": np.asarray(p.tops.get_xdata()),
                "weights": np.asarray(p.tops.get_ydata()),
                "readout": self.readout.text()}

    def pixels(self):
        """The canvas's current picture as an (H, W, 4) uint8 array (a copy)."""
        import numpy as np

        return np.array(self.fig.canvas.buffer_rgba())

    # -- internals --
    def _select_row(self) -> None:
        caption = self.captions[self.row] if self.captions else None
        self.panels.set_row(self.row, self.sims[self.name][self.row].numpy(), caption)

    def _redraw(self, full: bool = False) -> None:
        img, txt = self.sets[self.name]
        tau = self.value
        with _one_thread():
            self.panels.update(self.sims[self.name], tau, self.row, loss_at(img, txt, tau))
        self.readout.show(self.panels.readout_lines())
        self.view.refresh(full)

    def _on_click(self, event) -> None:
        if event.inaxes is self.panels.ax_mat and event.ydata is not None:
            self.set_row(min(max(int(round(event.ydata)), 0), self.batch_size - 1))


# --- the loss as a function of τ -----------------------------------------------------------------

class _LossPanels:
    """Loss against τ with the descent path (left) and τ against the step (right)."""

    def __init__(self, fig, tau_range=TAU_RANGE, top: float = 0.9):
        self.fig = fig
        gs = fig.add_gridspec(1, 2, left=0.08, right=0.98, top=top, bottom=0.15, wspace=0.25,
                              width_ratios=(1.4, 1))
        self.ax_loss = fig.add_subplot(gs[0, 0])
        self.ax_step = fig.add_subplot(gs[0, 1])
        for ax in (self.ax_loss, self.ax_step):
            ax.tick_params(labelsize=8)
        ax = self.ax_loss
        (self.curve,) = ax.plot([], [], color="tab:blue", lw=1.5, label="loss(τ), embeddings fixed")
        (self.path,) = ax.plot([], [], "o-", color="tab:red", ms=3, lw=0.8, label="gradient descent on log τ")
        (self.now,) = ax.plot([], [], "o", color="tab:red", ms=8)
        self.start_line = ax.axvline(1.0, color="gray", ls="--", lw=1, label="start τ (the slider)")
        (self.best,) = ax.plot([], [], "*", color="gold", mec="black", ms=14, label="optimum τ*")
        ax.set_xscale("log")
        ax.set_xlim(*tau_range)
        ax.set_xlabel("τ (log scale)", fontsize=8)
        ax.set_ylabel("CLIP loss", fontsize=8)
        ax.set_title("the loss of fixed embeddings against τ", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax = self.ax_step
        (self.tau_path,) = ax.plot([], [], "o-", color="tab:red", ms=3, lw=0.8)
        self.best_line = ax.axhline(1.0, color="goldenrod", ls="--", lw=1.2, label="τ*")
        ax.set_yscale("log")
        ax.set_ylim(*tau_range)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("τ", fontsize=8)
        ax.set_title("τ, step by step", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        self.animated = [self.path, self.now, self.start_line, self.tau_path]
        self.values: dict = {}

    def set_curve(self, taus, losses, best_tau: float, best_loss: float, max_steps: int) -> None:
        import numpy as np

        losses = np.asarray(losses, dtype=float)
        self.curve.set_data(np.asarray(taus, dtype=float), losses)
        self.best.set_data([best_tau], [best_loss])
        self.best_line.set_ydata([best_tau, best_tau])
        lo, hi = float(losses.min()), float(losses.max())
        self.ax_loss.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        self.ax_step.set_xlim(-0.5, max_steps + 0.5)
        self.best_tau, self.best_loss = best_tau, best_loss

    def update(self, path_taus, path_losses, steps: int) -> dict:
        t, l = path_taus[:steps + 1], path_losses[:steps + 1]
        self.path.set_data(t, l)
        self.now.set_data([t[-1]], [l[-1]])
        self.start_line.set_xdata([t[0], t[0]])
        self.tau_path.set_data(list(range(len(t))), t)
        self.values = {"start": t[0], "loss_start": l[0], "steps": steps, "tau": t[-1], "loss": l[-1],
                       "best_tau": self.best_tau, "best_loss": self.best_loss}
        return self.values

    def readout_lines(self) -> list[list[tuple[str, str]]]:
        v = self.values
        return [[("start τ", f"{v['start']:.3g}"), ("its loss", f"{v['loss_start']:.3f}")],
                [(f"after {v['steps']} steps: τ", f"{v['tau']:.3g}"), ("loss", f"{v['loss']:.3f}")],
                [("optimum in range: τ*", f"{v['best_tau']:.3g}"), ("loss", f"{v['best_loss']:.3f}")]]


class LossTemperatureExplorer(_Displayable):
    """For fixed embeddings: the loss as a function of τ, and the path gradient descent on log τ
    takes from the slider's τ towards the optimum, one step at a time ("step" button or slider).

    This is what a learnable temperature does during training, with the encoders frozen.
    """

    def __init__(self, embeddings, *, tau: float = 0.07, lr: float = 1.0, max_steps: int = 40,
                 tau_range: tuple[float, float] = TAU_RANGE, canvas: str = "ipympl",
                 figsize=(10.0, 3.4), dpi: int = 80, grid: int = 121):
        import ipywidgets as W

        self.sets = _as_sets(embeddings)
        self.name = next(iter(self.sets))
        self.tau_range, self.max_steps = tau_range, int(max_steps)
        self._grid = torch.logspace(math.log10(tau_range[0]), math.log10(tau_range[1]), grid,
                                    dtype=torch.float64)
        self._curves: dict = {}
        self.fig = _new_figure(figsize, dpi, canvas)
        self.panels = _LossPanels(self.fig, tau_range)
        self.view = _CanvasView(self.fig, canvas, self.panels.animated)

        self.slider = _log_tau_slider(tau, tau_range, description="start τ")
        self.lr_slider = W.FloatLogSlider(value=lr, base=10, min=-2, max=1, step=0.05, description="lr",
                                          readout_format=".3g", layout=W.Layout(width="40%"))
        self.steps_slider = W.IntSlider(value=0, min=0, max=self.max_steps, description="steps")
        self.step_button = W.Button(description="step ▶", layout=W.Layout(width="90px"))
        self.reset_button = W.Button(description="reset", layout=W.Layout(width="70px"))
        self.step_button.on_click(lambda _: self.step())
        self.reset_button.on_click(lambda _: setattr(self.steps_slider, "value", 0))
        rows = [self.slider, self.lr_slider,
                W.HBox([self.steps_slider, self.step_button, self.reset_button])]
        self.set_selector = None
        if len(self.sets) > 1:
            self.set_selector = _set_selector(list(self.sets))
            self.set_selector.observe(lambda ch: self.set_embeddings(ch["new"]), names="value")
            rows.insert(0, self.set_selector)
        self.slider.observe(lambda ch: self._new_path(), names="value")
        self.lr_slider.observe(lambda ch: self._new_path(), names="value")
        self.steps_slider.observe(lambda ch: self._redraw(), names="value")
        self.readout = _ReadoutBox()
        self.widget = W.VBox(rows + [self.readout.widget, self.view.widget])
        self._new_curve()

    # value and set_temperature (the start τ of the descent) and set_embeddings: see _Displayable
    def step(self, n: int = 1) -> dict:
        """Take n more steps of gradient descent (up to max_steps)."""
        self.steps_slider.value = min(self.steps_slider.value + n, self.max_steps)
        return self.readouts

    def _embeddings_changed(self) -> None:
        self._new_curve()

    @property
    def readouts(self) -> dict:
        """The numbers on display: start, steps, tau, loss, best_tau, best_loss."""
        return dict(self.panels.values, embeddings=self.name)

    @property
    def path(self) -> tuple[list[float], list[float]]:
        """(taus, losses) of the whole descent from the current start, max_steps long."""
        return self._path

    def drawn(self) -> dict:
        """What the artists show right now (for tests)."""
        import numpy as np

        p = self.panels
        return {"curve_tau": np.asarray(p.curve.get_xdata()), "curve_loss": np.asarray(p.curve.get_ydata()),
                "path_tau": np.asarray(p.path.get_xdata()), "path_loss": np.asarray(p.path.get_ydata()),
                "now": (float(p.now.get_xdata()[0]), float(p.now.get_ydata()[0])),
                "best": (float(p.best.get_xdata()[0]), float(p.best.get_ydata()[0])),
                "readout": self.readout.text()}

    def _new_curve(self) -> None:
        if self.name not in self._curves:
            img, txt = self.sets[self.name]
            with _one_thread():
                self._curves[self.name] = (loss_curve(img, txt, self._grid).numpy(),
                                           *optimal_temperature(img, txt, self.tau_range))
        losses, best_tau, best_loss = self._curves[self.name]
        self.panels.set_curve(self._grid.numpy(), losses, best_tau, best_loss, self.max_steps)
        self._new_path(full=True)

    def _new_path(self, full: bool = False) -> None:
        img, txt = self.sets[self.name]
        with _one_thread():
            self._path = descend_log_temperature(img, txt, self.value, self.max_steps, self.lr_slider.value,
                                                 self.tau_range)
        self._redraw(full)

    def _redraw(self, full: bool = False) -> None:
        self.panels.update(*self._path, self.steps_slider.value)
        self.readout.show(self.panels.readout_lines())
        self.view.refresh(full)


# --- static figures for readers without a kernel -------------------------------------------------

def temperature_snapshots(image_features: torch.Tensor, text_features: torch.Tensor,
                          taus: Sequence[float] = (1.0, 0.07, 0.01), row: int = 0,
                          captions: Sequence[str] | None = None, title: str | None = None):
    """Three τ side by side: one row's distribution, the probability matrix, the gradient weights."""
    import matplotlib.pyplot as plt
    import numpy as np

    sims = similarities(image_features, text_features)
    b = len(sims)
    fig, axes = plt.subplots(3, len(taus), figsize=(3.6 * len(taus), 8.4), layout="constrained", squeeze=False)
    neg = np.array([j for j in range(b) if j != row])
    for col, tau in enumerate(taus):
        st = row_stats(sims, tau, row)
        loss = loss_at(image_features, text_features, tau)
        ax = axes[0, col]
        colors = ["tab:gray"] * b
        colors[row] = "tab:orange"
        ax.bar(np.arange(b), st.probs.numpy(), color=colors)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"τ = {tau:g}: loss {loss:.3f}\nentropy {st.entropy:.2f} nats, e^H = "
                     f"{st.effective_negatives:.1f}", fontsize=9)
        ax.set_xlabel("caption j", fontsize=8)
        if col == 0:
            ax.set_ylabel(f"P(caption j | image {row})", fontsize=8)
        ax = axes[1, col]
        ax.imshow(probabilities(sims, tau).numpy(), vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
        ax.set_xlabel("caption j", fontsize=8)
        if col == 0:
            ax.set_ylabel("image i", fontsize=8)
        ax = axes[2, col]
        x, w = sims[row].numpy()[neg], st.weights.numpy()[neg]
        ax.vlines(x, 0, w, color="tab:blue")
        ax.plot(x, w, "o", ms=3, color="tab:blue")
        ax.axvline(float(sims[row, row]), color="tab:orange", ls="--", lw=1)
        ax.set_title(f"hardest negative's share {100 * st.hardest_share:.0f}%", fontsize=9)
        ax.set_xlabel("similarity s_ij", fontsize=8)
        if col == 0:
            ax.set_ylabel("gradient weight P_ij / τ", fontsize=8)
        for a in axes[:, col]:
            a.tick_params(labelsize=7)
    head = f"row {row}" + (f" (“{captions[row]}”)" if captions is not None else "")
    fig.suptitle(title or f"{head} at three temperatures; the positive in orange", fontsize=10)
    return fig


def loss_vs_temperature(image_features: torch.Tensor, text_features: torch.Tensor, *, start: float = 0.07,
                        lr: float = 1.0, steps: int = 40, tau_range: tuple[float, float] = TAU_RANGE,
                        title: str | None = None):
    """The loss against τ for fixed embeddings and the descent path from `start` (static)."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(10, 4.2))
    panels = _LossPanels(fig, tau_range, top=0.76)
    grid = torch.logspace(math.log10(tau_range[0]), math.log10(tau_range[1]), 121, dtype=torch.float64)
    panels.set_curve(grid.numpy(), loss_curve(image_features, text_features, grid).numpy(),
                     *optimal_temperature(image_features, text_features, tau_range), steps)
    v = panels.update(*descend_log_temperature(image_features, text_features, start, steps, lr, tau_range), steps)
    fig.suptitle(title or (f"gradient descent on log τ (lr {lr:g}) from τ = {v['start']:.3g} "
                           f"(loss {v['loss_start']:.3f}): after {steps} steps τ = {v['tau']:.3g} "
                           f"(loss {v['loss']:.3f})\n"
                           f"the optimum in [{tau_range[0]:g}, {tau_range[1]:g}]: τ* = {v['best_tau']:.3g} "
                           f"(loss {v['best_loss']:.3f})"), fontsize=9.5)
    return fig
