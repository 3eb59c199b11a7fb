"""A live training dashboard: loss, τ and accuracy redrawn while training runs (lessons 06 and 07).

`TrainingDashboard` is a training callback. It builds one figure when training starts and, every
`every` steps, moves the new numbers into the *same* line artists (`line.set_data`), rescales the
axes and asks the canvas to redraw. Nothing is rebuilt, so an update costs a few milliseconds.

How the picture reaches you depends on the matplotlib backend:

- inline (the default in Jupyter): the figure is displayed once with a display handle and the
  handle is updated in place every `every` steps; at the end (or when Ctrl-C or a divergence stops
  training: then at its last step) ONE static figure stays in the cell, which is what readers of the
  notebook (and nbval) see.
- ipympl (`%matplotlib widget`): the canvas widget is displayed once and redrawn in place.
- outside a notebook (scripts, tests): nothing is displayed; `dashboard.figure` is there to save.

matplotlib and IPython are imported inside the methods, so importing this module stays light.
"""

from __future__ import annotations

import math

from .train import Callback, TrainState

_PANELS = ("loss", "temperature", "accuracy")
_TITLES = {"loss": "loss", "temperature": "τ (temperature)", "accuracy": "accuracy"}


def _backend_mode() -> str:
    """'widget' under ipympl, 'inline' in any other Jupyter kernel, 'none' outside one."""
    import matplotlib

    backend = matplotlib.get_backend().lower()
    if "ipympl" in backend or "widget" in backend:
        return "widget"
    try:
        from IPython import get_ipython
    except ImportError:
        return "none"
    shell = get_ipython()
    return "inline" if shell is not None and getattr(shell, "kernel", None) is not None else "none"


class TrainingDashboard(Callback):
    """Live loss, τ and in-batch accuracy (plus evaluation metrics) while `train` runs.

    every: redraw every this many steps (the numbers are recorded every step).
    mode: "auto" (pick from the backend), "inline", "widget" or "none" (never display).
    Evaluation metrics (`state.metrics`, e.g. held-out accuracy) join the accuracy panel as
    dotted lines with markers, one per metric, so they should be fractions in [0, 1].
    A run resumed from a checkpoint (`train(..., resume=...)`) is drawn from its first step.
    """

    def __init__(self, every: int = 25, *, mode: str = "auto", title: str = "",
                 figsize: tuple[float, float] = (11, 3)):
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        if mode not in ("auto", "inline", "widget", "none"):
            raise ValueError(f"mode must be 'auto', 'inline', 'widget' or 'none', got {mode!r}")
        self.every, self.mode, self.title, self.figsize = every, mode, title, figsize
        self.figure = None
        self.axes: dict[str, object] = {}             # panel name -> Axes
        self.lines: dict[str, object] = {}            # "loss", "temperature", "accuracy" -> Line2D
        self.eval_lines: dict[str, object] = {}       # metric name -> Line2D on the accuracy panel
        self.handle = None                            # the inline display handle
        self.draws = 0                                # how many times the figure was refreshed
        self._reset()

    def _reset(self) -> None:
        self.steps: list[int] = []
        self.values: dict[str, list[float]] = {name: [] for name in _PANELS}
        self.evaluations: dict[str, tuple[list[int], list[float]]] = {}  # name -> (steps, values)

    # --- building the figure once -------------------------------------------------------------

    def _build(self, total_steps: int) -> None:
        if self.mode == "auto":
            self.mode = _backend_mode()
        if self.mode == "widget":
            import matplotlib.pyplot as plt

            with plt.ioff():                      # shown once, by us, not again by pyplot
                fig = plt.figure(figsize=self.figsize, layout="constrained")
        else:
            # A figure pyplot does not know about: the inline backend will not show it a second
            # time when the cell ends; we show it ourselves through the display handle.
            from matplotlib.figure import Figure

            fig = Figure(figsize=self.figsize, layout="constrained")
        axes = fig.subplots(1, len(_PANELS))
        colors = {"loss": "tab:blue", "temperature": "tab:orange", "accuracy": "tab:green"}
        for ax, name in zip(axes, _PANELS):
            (line,) = ax.plot([], [], color=colors[name], lw=1.2,
                              label="in-batch" if name == "accuracy" else None)
            ax.set_title(_TITLES[name], fontsize=10)
            ax.set_xlabel("step")
            ax.set_xlim(0, max(1, total_steps))   # the x-axis spans the whole run; the lines grow
            ax.grid(alpha=0.3)
            self.axes[name], self.lines[name] = ax, line
        self.axes["temperature"].set_yscale("log")
        self.axes["temperature"].set_ylim(0.01, 1.0)  # the clamp's range, until there is data
        self.axes["accuracy"].set_ylim(0, 1.02)
        self.figure = fig

    def _show(self) -> None:
        if self.mode == "inline":
            from IPython.display import display

            self.handle = display(self.figure, display_id=True)
        elif self.mode == "widget":
            from IPython.display import display

            display(self.figure.canvas)

    # --- moving the numbers into the artists ----------------------------------------------------

    def _update_artists(self, state: TrainState | None = None) -> None:
        for name in _PANELS:
            self.lines[name].set_data(self.steps, self.values[name])
        acc_ax = self.axes["accuracy"]
        for name, (steps, values) in self.evaluations.items():
            if name not in self.eval_lines:     # a new metric: one new line, the figure stays
                (self.eval_lines[name],) = acc_ax.plot([], [], ":o", ms=3, lw=1, label=name)
                acc_ax.legend(fontsize=7, loc="lower right")
            self.eval_lines[name].set_data(steps, values)
        for name in ("loss", "temperature"):
            if self.steps:                      # an empty log axis cannot be autoscaled
                ax = self.axes[name]
                ax.relim()
                ax.autoscale_view(scalex=False, scaley=True)
        if state is not None:
            title = f"step {state.step}/{state.config.steps}"
            if self.steps:
                title += (f"   loss {self.values['loss'][-1]:.3f}   τ {self.values['temperature'][-1]:.4f}"
                          f"   in-batch acc {self.values['accuracy'][-1]:.2f}")
            for name, (_, values) in self.evaluations.items():
                title += f"   {name} {values[-1]:.3f}"
            self.figure.suptitle(f"{self.title}   {title}".strip(), fontsize=10)

    def _refresh(self) -> None:
        canvas = self.figure.canvas
        if self.mode == "widget":
            # draw() rather than draw_idle(): ipympl's draw_idle asks the browser to ask back for a
            # frame, a request the kernel only reads once the cell has finished; draw() pushes it now.
            canvas.draw()
        else:
            canvas.draw_idle()
        if self.mode == "inline" and self.handle is not None:
            self.handle.update(self.figure)
        self.draws += 1

    # --- the callback ---------------------------------------------------------------------------

    def on_train_start(self, state: TrainState) -> None:
        self._reset()
        if state.history is not None:           # a resumed run: draw the steps the checkpoint holds too
            self._replay(state.history)
        if self.figure is None:
            self._build(state.config.steps)
        else:                                   # reused for another run: same artists, new data
            for ax in self.axes.values():
                ax.set_xlim(0, max(1, state.config.steps))
        self._update_artists(state)
        self._show()

    def _replay(self, history) -> None:
        self.steps = list(history.step)
        for name in _PANELS:
            self.values[name] = list(getattr(history, name))
        for record in history.evaluations:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    steps, values = self.evaluations.setdefault(name, ([], []))
                    steps.append(record["step"])
                    values.append(float(value))

    def on_step_end(self, state: TrainState) -> None:
        self.steps.append(state.step)
        self.values["loss"].append(state.loss)
        self.values["temperature"].append(state.temperature)
        self.values["accuracy"].append(state.accuracy)
        if state.step % self.every == 0:
            self._update_artists(state)
            self._refresh()

    def on_evaluate(self, state: TrainState) -> None:
        for name, value in state.metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                steps, values = self.evaluations.setdefault(name, ([], []))
                steps.append(state.step)
                values.append(float(value))
        self._update_artists(state)
        if state.step < state.config.steps:     # the final evaluation is drawn by on_train_end
            self._refresh()

    def on_train_end(self, state: TrainState) -> None:
        self._update_artists(state)
        self._refresh()                         # the last frame is the static figure left behind

    def on_interrupt(self, state: TrainState) -> None:
        self.on_train_end(state)                # Ctrl-C or a divergence: the last frame shows the last step
