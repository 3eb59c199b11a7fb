"""The live training dashboard: fed fake TrainStates, it moves exactly those numbers into the same
artists it built at the start (no figure is rebuilt), and under "inline" it updates one display."""

import math
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

from clipcourse import train  # noqa: E402
from clipcourse.dashboard import TrainingDashboard  # noqa: E402


def fake_run(dashboard, steps=30, eval_at=(10, 20, 30)):
    """Drive the dashboard through a fake run; return what was fed."""
    state = train.TrainState(model=None, optimizer=None, config=train.TrainConfig(steps=steps))
    fed = {"step": [], "loss": [], "temperature": [], "accuracy": [], "heldout_acc": ([], [])}
    dashboard.on_train_start(state)
    for step in range(1, steps + 1):
        state.step, state.loss = step, 4.0 / step
        state.temperature, state.accuracy = 0.07 * math.exp(-step / 50), step / steps
        for key in ("loss", "temperature", "accuracy"):
            fed[key].append(getattr(state, key))
        fed["step"].append(step)
        dashboard.on_step_end(state)
        if step in eval_at:
            state.metrics = {"heldout_acc": step / 40, "not_a_number": "x", "nan": math.nan}
            fed["heldout_acc"][0].append(step)
            fed["heldout_acc"][1].append(step / 40)
            dashboard.on_evaluate(state)
    dashboard.on_train_end(state)
    return fed


def test_artists_hold_what_was_fed_and_are_never_rebuilt():
    dash = TrainingDashboard(every=5, mode="none")
    state = train.TrainState(model=None, optimizer=None, config=train.TrainConfig(steps=30))
    dash.on_train_start(state)
    figure, lines = dash.figure, dict(dash.lines)
    all_lines = {id(l) for ax in figure.axes for l in ax.lines}
    dash.on_train_end(state)   # an empty run is fine too

    dash2 = TrainingDashboard(every=5, mode="none")
    fed = fake_run(dash2)
    assert dash2.draws > 0
    for key in ("loss", "temperature", "accuracy"):
        x, y = dash2.lines[key].get_data()
        assert list(x) == fed["step"] and list(y) == pytest.approx(fed[key])
    x, y = dash2.eval_lines["heldout_acc"].get_data()
    assert list(x) == fed["heldout_acc"][0] and list(y) == pytest.approx(fed["heldout_acc"][1])
    assert set(dash2.eval_lines) == {"heldout_acc"}          # strings and NaN are not plotted

    # reuse the first dashboard for a fresh run: the same figure and the same Line2D objects
    fake_run(dash)
    assert dash.figure is figure
    for key, line in lines.items():
        assert dash.lines[key] is line
        assert line in line.axes.lines
    assert all_lines <= {id(l) for ax in figure.axes for l in ax.lines}
    assert len(figure.axes) == 3


def test_updates_every_n_steps_and_rescales():
    dash = TrainingDashboard(every=10, mode="none")
    fake_run(dash, steps=30, eval_at=())
    assert dash.draws == 3 + 1                                # steps 10, 20, 30, then the end
    lo, hi = dash.axes["loss"].get_ylim()
    assert lo <= 4.0 / 30 and hi >= 4.0                       # autoscaled to the data
    assert dash.axes["loss"].get_xlim() == (0, 30)            # the x-axis spans the whole run


def test_inline_mode_displays_once_and_updates_the_handle(monkeypatch):
    pytest.importorskip("IPython")
    import IPython.display

    class Handle:
        def __init__(self):
            self.updates = []

        def update(self, obj):
            self.updates.append(obj)

    shown = []

    def fake_display(obj, display_id=False):
        shown.append(obj)
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)
    dash = TrainingDashboard(every=10, mode="inline")
    fake_run(dash, steps=30, eval_at=(15,))
    assert shown == [dash.figure]                             # displayed exactly once
    assert len(dash.handle.updates) == dash.draws == 3 + 1 + 1  # 3 steps, 1 evaluation, the end
    assert all(u is dash.figure for u in dash.handle.updates)


@pytest.mark.parametrize("event", ["on_interrupt", "on_diverge"])
def test_a_run_stopped_early_redraws_its_last_step(event):
    """Ctrl-C (or a divergence) after step 13 of a dashboard drawn every 10 steps: the last frame left in
    the cell shows step 13, not the stale step 10."""
    dash = TrainingDashboard(every=10, mode="none")
    state = train.TrainState(model=None, optimizer=None, config=train.TrainConfig(steps=30))
    dash.on_train_start(state)
    for step in range(1, 14):
        state.step, state.loss, state.temperature, state.accuracy = step, 4.0 / step, 0.07, step / 30
        dash.on_step_end(state)
    draws = dash.draws
    getattr(dash, event)(state)
    assert dash.draws == draws + 1
    assert list(dash.lines["loss"].get_data()[0]) == list(range(1, 14))
    assert "step 13/30" in dash.figure.get_suptitle()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        TrainingDashboard(every=0)
    with pytest.raises(ValueError, match="mode"):
        TrainingDashboard(mode="qt")


def test_with_the_real_training_loop(tok, tiny_world):
    from clipcourse import model

    dash = TrainingDashboard(every=2, mode="none")
    m = model.build_model(tok, seed=0, embed_dim=16)
    _, history = train.train(m, tiny_world.images, tok(tiny_world.captions),
                             train.TrainConfig(steps=4, batch_size=16, device="cpu"),
                             callbacks=[dash], progress=False, evaluate=lambda _: {"score": 0.5})
    x, y = dash.lines["loss"].get_data()
    assert list(x) == history.step and list(y) == pytest.approx(history.loss)
    assert list(dash.lines["temperature"].get_data()[1]) == pytest.approx(history.temperature)
    assert list(dash.eval_lines["score"].get_data()[1]) == [0.5]


def test_import_is_light():
    code = ("import sys, clipcourse.dashboard; "
            "print(any(m.startswith(('matplotlib', 'IPython')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_empty_figure_renders():
    """Displayed before the first step, the figure has no data yet (a log axis must not choke)."""
    import io

    dash = TrainingDashboard(mode="none")
    dash.on_train_start(train.TrainState(model=None, optimizer=None, config=train.TrainConfig(steps=10)))
    dash.figure.savefig(io.BytesIO(), format="png")
    assert dash.axes["temperature"].get_ylim() == pytest.approx((0.01, 1.0))


def test_a_resumed_run_draws_the_steps_its_checkpoint_holds():
    """train(..., resume=...) loads the checkpoint's History before on_train_start: the dashboard starts from it."""
    history = train.History()
    history.load_state_dict({"step": [1, 2, 3], "loss": [3.0, 2.5, 2.0], "temperature": [0.07, 0.068, 0.066],
                             "accuracy": [0.1, 0.2, 0.3], "evaluations": [{"step": 3, "heldout_acc": 0.4,
                                                                            "note": "x"}]})
    state = train.TrainState(model=None, optimizer=None, config=train.TrainConfig(steps=6), history=history)
    dash = TrainingDashboard(every=1, mode="none")
    dash.on_train_start(state)
    state.step, state.loss, state.temperature, state.accuracy = 4, 1.5, 0.064, 0.4
    dash.on_step_end(state)
    x, y = dash.lines["loss"].get_data()
    assert list(x) == [1, 2, 3, 4] and list(y) == pytest.approx([3.0, 2.5, 2.0, 1.5])
    assert dash.evaluations == {"heldout_acc": ([3], [0.4])}
    assert history.step == [1, 2, 3]                         # the run's own History is not touched
