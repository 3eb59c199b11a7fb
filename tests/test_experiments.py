"""The temperature sweep, run small: the rows it returns, their summary, and the helpers."""

import math

import pytest

from clipcourse import experiments
from clipcourse.temperature import INIT_TEMPERATURE

SMALL = dict(steps=3, n_train=192, n_heldout=48, batch_size=32, widths=(8, 16), device="cpu")


@pytest.fixture(scope="module")
def rows():
    return experiments.sweep([0.05, 0.5], seeds=[0, 1], **SMALL)


def test_one_row_per_run_with_every_metric(rows):
    assert [(r["tau"], r["learnable"], r["seed"]) for r in rows] == [
        (0.05, False, 0), (0.5, False, 0), (INIT_TEMPERATURE, True, 0),
        (0.05, False, 1), (0.5, False, 1), (INIT_TEMPERATURE, True, 1)]
    for r in rows:
        assert 0.0 <= r["heldout_acc"] <= 1.0 and 0.0 <= r["train_combo_acc"] <= 1.0
        assert 0.0 <= r["alignment"] <= 4.0                     # squared distances on the unit sphere
        assert -4.0 <= r["uniformity"] <= 0.0
        assert len(r["tau_trajectory"]) == SMALL["steps"]
        assert math.isfinite(r["final_loss"])
        if r["learnable"]:
            assert 0.01 <= r["final_tau"] <= 1.0 and r["final_tau"] != pytest.approx(INIT_TEMPERATURE, abs=0)
        else:
            assert r["final_tau"] == pytest.approx(r["tau"]) and set(r["tau_trajectory"]) == {r["final_tau"]}


def test_seeded(rows):
    again = experiments.sweep([0.05], seeds=[1], learnable=False, **SMALL)
    assert again[0]["heldout_acc"] == rows[3]["heldout_acc"]
    assert again[0]["final_loss"] == pytest.approx(rows[3]["final_loss"])


def test_summarize_means_and_stds(rows):
    s = experiments.summarize(rows)
    assert [e["tau"] for e in s["sweep"]] == [0.05, 0.5]
    first = s["sweep"][0]
    accs = [rows[0]["heldout_acc"], rows[3]["heldout_acc"]]
    assert first["n_seeds"] == 2
    assert first["acc_mean"] == pytest.approx(sum(accs) / 2)
    assert first["acc_std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))
    assert s["learnable"]["tau"] == INIT_TEMPERATURE and s["learnable"]["n_seeds"] == 2
    for key in ("final_tau", "alignment", "uniformity", "train_combo_acc"):
        assert f"{key}_mean" in first and f"{key}_std" in s["learnable"]
    assert experiments.summarize(rows[:2])["learnable"] is None
    assert experiments.summarize(rows[:1])["sweep"][0]["acc_std"] == 0.0


def test_callbacks_reach_the_runs_they_are_meant_for():
    from clipcourse import train

    seen = []

    class Spy(train.Callback):
        def __init__(self, run):
            self.run = run

        def on_train_end(self, state):
            seen.append((self.run["tau"], self.run["learnable"], state.step))

    experiments.sweep([0.1], seeds=[0], callbacks=lambda run: [Spy(run)] if run["learnable"] else [], **SMALL)
    assert seen == [(INIT_TEMPERATURE, True, SMALL["steps"])]


def test_workers_do_not_change_the_rows(rows):
    """Each run is seeded on its own and trains on one thread: 2 worker processes or none, same rows."""
    sequential = experiments.sweep([0.05, 0.5], seeds=[0, 1], workers=1, **SMALL)
    parallel = experiments.sweep([0.05, 0.5], seeds=[0, 1], workers=2, **SMALL)
    for a, b, c in zip(sequential, parallel, rows):
        assert a == b == c


class Recorder:
    def __init__(self):
        self.events = []

    def __getattr__(self, name):
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda state: self.events.append((name, state.step, state.temperature, state.loss))


@pytest.mark.parametrize("workers", [1, 2])
def test_callbacks_see_every_step_in_order_from_worker_processes_too(workers):
    recorders = {}

    def watch(run):
        recorders[run["seed"]] = Recorder()
        return [recorders[run["seed"]]]

    rows = experiments.sweep([], seeds=[0, 1], workers=workers, callbacks=watch, **SMALL)
    for row in rows:
        events = recorders[row["seed"]].events
        assert [(e[0], e[1]) for e in events] == ([("on_train_start", 0)]
                                                  + [("on_step_end", k) for k in range(1, SMALL["steps"] + 1)]
                                                  + [("on_train_end", SMALL["steps"])])
        assert [e[2] for e in events[1:-1]] == row["tau_trajectory"]
        assert events[-1][3] == row["final_loss"]


def test_an_error_in_a_worker_reaches_the_caller():
    with pytest.raises(ValueError, match="resolution must be at least 16"):
        experiments.sweep([0.1], seeds=[0, 1], workers=2, **{**SMALL, "resolution": 8})


@pytest.mark.parametrize("change,match", [
    (dict(taus=[0.1, 0.0]), "every τ must be positive"),
    (dict(seeds=[]), "seeds is empty"),
    (dict(steps=0), "steps must be at least 1"),
    (dict(batch_size=1000), r"batch_size must be in \[2, n_train = 192\], got 1000"),
    (dict(workers=0), "workers must be at least 1"),
    (dict(precision="half"), "precision must be 'auto', 'float32' or 'bfloat16', got 'half'"),
])
def test_bad_arguments_raise_before_any_worker_starts(change, match):
    kwargs = dict(taus=[0.1], seeds=[0], **SMALL)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        experiments.sweep(**kwargs)


def test_default_workers():
    assert experiments.default_workers("cpu", threads=1) >= 1
    assert experiments.default_workers("cpu", threads=1) >= experiments.default_workers("cpu", threads=2)


def test_log_spaced_and_clearly_below():
    taus = experiments.log_spaced(0.01, 1.0, 5)
    assert taus[0] == pytest.approx(0.01) and taus[-1] == pytest.approx(1.0)
    assert taus[2] == pytest.approx(0.1)
    ratios = [b / a for a, b in zip(taus, taus[1:])]
    assert ratios == pytest.approx([ratios[0]] * 4)
    with pytest.raises(ValueError):
        experiments.log_spaced(0.1, 0.01, 3)
    assert experiments.clearly_below(0.3, 0.02, 0.5, 0.02)
    assert not experiments.clearly_below(0.47, 0.0, 0.5, 0.0)    # within the margin
    assert not experiments.clearly_below(0.3, 0.1, 0.5, 0.15)    # within the seeds' spread
    with pytest.raises(ValueError, match="nothing to run"):
        experiments.sweep([], seeds=[0], learnable=False, **SMALL)


def test_precision_reaches_the_runs(rows):
    """The sweep's precision reaches its runs: float32 and bfloat16 runs of one (τ, seed) differ a little."""
    f32 = experiments.sweep([0.05], seeds=[0], learnable=False, precision="float32", **SMALL)
    bf16 = experiments.sweep([0.05], seeds=[0], learnable=False, precision="bfloat16", **SMALL)
    assert f32[0]["final_loss"] != bf16[0]["final_loss"]
    assert math.isclose(f32[0]["final_loss"], bf16[0]["final_loss"], rel_tol=0.05)


def test_learnable_runs_from_several_starts_with_a_temperature_lr():
    rows = experiments.sweep([], seeds=[0], learnable_starts=[0.01, 0.5], temperature_lr=0.5, **SMALL)
    assert [(r["tau"], r["learnable"]) for r in rows] == [(0.01, True), (0.5, True)]
    slow = experiments.sweep([], seeds=[0], learnable_starts=[0.5], **SMALL)
    # with its own, larger learning rate τ leaves its start further in the same 3 steps
    assert abs(math.log(rows[1]["final_tau"] / 0.5)) > 10 * abs(math.log(slow[0]["final_tau"] / 0.5))
    summary = experiments.summarize(rows)
    assert [r["tau"] for r in summary["learnable_starts"]] == [0.01, 0.5]
    assert summary["learnable"]["tau"] == 0.01          # no 0.07 run: the first start


@pytest.mark.parametrize("change,match", [
    (dict(learnable_starts=[0.005]), r"learnable start must be in \[0.01, 1\]"),
    (dict(learnable_starts=[]), r"learnable start must be in \[0.01, 1\]"),
    (dict(temperature_lr=-1.0), "temperature_lr must be positive"),
])
def test_bad_learnable_settings_raise_before_any_run(change, match):
    with pytest.raises(ValueError, match=match):
        experiments.sweep([0.1], seeds=[0], **{**SMALL, **change})
