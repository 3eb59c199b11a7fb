"""The temperature sweep, run small: the rows it returns, their summary, and the helpers."""

import math
import os

import pytest

from clipcourse import claims, experiments, train
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
        for key in ("tolerance", "other_class_similarity", "train_combo_tolerance", "train_combo_other_class_similarity"):
            assert -1.0 <= r[key] <= 1.0, key                    # mean cosines
        assert len(r["tau_trajectory"]) == len(r["loss_trajectory"]) == SMALL["steps"]
        assert math.isfinite(r["final_loss"]) and r["loss_trajectory"][-1] == r["final_loss"]
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
    for key in ("final_tau", "alignment", "uniformity", "train_combo_acc", "train_combo_uniformity", "tolerance",
                "other_class_similarity", "train_combo_tolerance", "train_combo_other_class_similarity"):
        assert f"{key}_mean" in first and f"{key}_std" in s["learnable"]
    # uniformity of the held-out pictures and of new pictures of the training combinations: two measurements
    assert all(-8.0 <= r["train_combo_uniformity"] <= 0.0 for r in rows)   # t = 2: e^(-2·4) at the least
    assert any(r["train_combo_uniformity"] != r["uniformity"] for r in rows)
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
    # sweep refuses resolution 8 up front (tests/test_bad_input.py); past that check, every run fails in its worker
    setup = experiments._Setup(SMALL["steps"], SMALL["n_train"], 8, SMALL["widths"], 1, SMALL["batch_size"], 2e-3,
                               SMALL["n_heldout"], 0, "cpu", 1)
    jobs = [dict(tau=0.1, learnable=False, seed=seed) for seed in (0, 1)]
    with pytest.raises(experiments.SweepFailed, match="resolution must be at least 16") as info:
        experiments._run_all(setup, jobs, None, workers=2)
    assert isinstance(info.value.__cause__, ValueError)              # the run's own error, with its traceback
    assert "in the worker process training" in str(info.value.__cause__.__cause__)
    assert info.value.rows == []


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
    assert claims.clearly_below(0.3, 0.02, 0.5, 0.02)
    assert not claims.clearly_below(0.47, 0.0, 0.5, 0.0)    # within the margin
    assert not claims.clearly_below(0.3, 0.1, 0.5, 0.15)    # within the seeds' spread
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


# --- stopping, crashing, and memory ------------------------------------------------------------------

def test_ctrl_c_during_a_sweep_leaves_no_worker_process():
    """A KeyboardInterrupt in the caller (here raised by a watching callback, as Ctrl-C would be)
    stops every worker and waits for it before it reaches the caller."""
    import multiprocessing

    seen = {}

    class CtrlC:
        def __getattr__(self, name):
            if not name.startswith("on_"):
                raise AttributeError(name)

            def handler(state):
                if name == "on_step_end":
                    seen["workers"] = [p.pid for p in multiprocessing.active_children()]
                    raise KeyboardInterrupt
            return handler

    with pytest.raises(KeyboardInterrupt):
        experiments.sweep([0.05, 0.5], seeds=[0, 1], workers=2, callbacks=lambda run: [CtrlC()],
                          **{**SMALL, "steps": 50})
    assert len(seen["workers"]) == 2
    assert multiprocessing.active_children() == []
    for pid in seen["workers"]:
        with pytest.raises(ProcessLookupError):          # ended and reaped: no zombie either
            os.kill(pid, 0)


# Ctrl-C or a failed run must not lose the runs that finished: the exception carries their rows.

class StopInSecondRun(train.Callback):
    """Raises `error` at step 2 of the second run it watches (Ctrl-C, or a crash, in the middle of a run)."""

    runs = 0

    def __init__(self, error):
        self.error = error

    def on_train_start(self, state):
        StopInSecondRun.runs += 1

    def on_step_end(self, state):
        if StopInSecondRun.runs == 2 and state.step == 2:
            raise self.error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), train.TrainingInterrupted("Ctrl-C", train.History())])
def test_ctrl_c_in_a_sweep_keeps_the_finished_runs(rows, error, monkeypatch):
    """workers=1: the runs train here; Ctrl-C reaches them as TrainingInterrupted (at the end of a step) or
    as a bare KeyboardInterrupt. Either way the finished runs' rows travel with the exception, which is
    both a KeyboardInterrupt and a TrainingInterrupted."""
    monkeypatch.setattr(StopInSecondRun, "runs", 0)
    with pytest.raises(experiments.SweepInterrupted, match="1 of 2 runs") as info:
        experiments.sweep([0.05, 0.5], seeds=[0], learnable=False, workers=1,
                          callbacks=lambda run: [StopInSecondRun(error)], **SMALL)
    assert isinstance(info.value, KeyboardInterrupt) and isinstance(info.value, train.TrainingInterrupted)
    assert info.value.rows == [rows[0]]
    assert info.value.__cause__ is error
    assert info.value.history is getattr(error, "history", None)


def test_a_failed_run_keeps_the_finished_runs(rows, monkeypatch):
    monkeypatch.setattr(StopInSecondRun, "runs", 0)
    with pytest.raises(experiments.SweepFailed, match="boom") as info:
        experiments.sweep([0.05, 0.5], seeds=[0], learnable=False, workers=1,
                          callbacks=lambda run: [StopInSecondRun(ValueError("boom"))], **SMALL)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value.__cause__, ValueError)
    assert info.value.rows == [rows[0]]


def test_ctrl_c_in_a_parallel_sweep_keeps_the_finished_runs_and_no_worker(rows):
    """Two workers, three runs: the third starts once a run has finished; Ctrl-C then (raised by a watching
    callback in this process, as Ctrl-C would be) keeps that run's row and leaves no worker behind."""
    import multiprocessing

    starts = []

    class CtrlCAtThirdStart(train.Callback):
        def on_train_start(self, state):
            starts.append(state.step)
            if len(starts) == 3:
                raise KeyboardInterrupt

    with pytest.raises(experiments.SweepInterrupted) as info:
        experiments.sweep([0.05, 0.5], seeds=[0], workers=2, callbacks=lambda run: [CtrlCAtThirdStart()], **SMALL)
    assert isinstance(info.value, KeyboardInterrupt)
    assert 1 <= len(info.value.rows) <= 2
    assert all(row in rows[:3] for row in info.value.rows)
    assert multiprocessing.active_children() == []


def test_a_script_without_a_main_guard_fails_clearly_instead_of_respawning_forever(tmp_path):
    """Each spawned worker imports the calling script again; without `if __name__ == "__main__":` the
    script would call sweep again in every worker. Python refuses that in the worker; the sweep must
    then stop with a message that says what to do (the old Pool replaced dying workers forever)."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text("from clipcourse import experiments\n"
                      f"experiments.sweep([0.1], seeds=[0, 1], workers=2, **{SMALL!r})\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode != 0
    assert ("RuntimeError: a worker process exited with code 1 while starting, before it trained anything: "
            'if a script calls experiments.sweep, it must do so under `if __name__ == "__main__":`') in out.stderr


def test_a_worker_that_dies_is_reported_not_waited_for_forever():
    """A worker killed mid-run (as the out-of-memory killer does) ends the sweep with the run it had."""
    import signal as signals

    class KillWorker:
        def __getattr__(self, name):
            if not name.startswith("on_"):
                raise AttributeError(name)

            def handler(state):
                if name == "on_step_end" and state.step == 1:
                    import multiprocessing
                    for p in multiprocessing.active_children():
                        os.kill(p.pid, signals.SIGKILL)
            return handler

    with pytest.raises(RuntimeError, match=r"exited with code -9 while .*: it was killed, most likely because "
                                           r"the system ran out of memory"):
        experiments.sweep([0.05], seeds=[0, 1], learnable=False, workers=2, **{**SMALL, "steps": 50},
                          callbacks=lambda run: [KillWorker()] if run["seed"] == 0 else [])


def test_a_sweep_that_cannot_fit_in_memory_is_refused_before_any_worker_starts(monkeypatch):
    import multiprocessing

    def no_workers(*args, **kwargs):
        raise AssertionError("a worker process was started")

    monkeypatch.setattr(multiprocessing, "get_context", no_workers)
    monkeypatch.setattr(experiments, "_run", no_workers)
    monkeypatch.setattr(experiments, "available_memory", lambda: 200 * 2**20)
    per_run = experiments.run_bytes(192, 48, 32, (8, 16), 1, 32)
    assert 50 * 2**20 < per_run < 200 * 2**20                   # one run here fits; two workers do not
    with pytest.raises(ValueError, match=r"this sweep needs about 0\.\d\d GiB of memory \(2 worker processes x "
                                         r"\(300 MiB for Python and torch \+ \d+ MiB for one run's data and "
                                         r"activations\)\), but only 0\.20 GiB is available: use fewer workers "
                                         r"\(workers=1 needs about 0\.\d\d GiB\)"):
        experiments.sweep([0.1], seeds=[0], workers=2, **SMALL)
    monkeypatch.setattr(experiments, "available_memory", lambda: 20 * 2**20)
    with pytest.raises(ValueError, match=r"needs about 0\.\d\d GiB of memory \(\d+ MiB for one run's data "
                                         r"and activations\), but only 0\.02 GiB is available: use a smaller"):
        experiments.sweep([0.1], seeds=[0], workers=1, **SMALL)


def test_automatic_workers_shrink_to_what_fits(monkeypatch):
    calls = []
    monkeypatch.setattr(experiments, "available_memory", lambda: 200 * 2**20)
    monkeypatch.setattr(experiments, "default_workers", lambda device, threads: 4)
    def parallel(setup, jobs, callbacks, workers, progress, order, rows):
        calls.append(workers)
        rows.update({k: dict(jobs[k]) for k in order})

    monkeypatch.setattr(experiments, "_run_parallel", parallel)
    monkeypatch.setattr(experiments, "_run", lambda setup, run, callbacks: dict(run))
    rows = experiments.sweep([0.1, 0.2], seeds=[0, 1], **SMALL)      # 4 workers would need 1.6 GiB
    assert calls == [] and len(rows) == 6                           # so one run at a time, here
    monkeypatch.setattr(experiments, "available_memory", lambda: 64 * 2**30)
    experiments.sweep([0.1, 0.2], seeds=[0, 1], **SMALL)
    assert calls == [4]


def test_run_bytes_grows_with_the_data_and_the_batch():
    base = dict(n_train=8000, n_heldout=1000, resolution=32, widths=(32, 64, 128), convs_per_stage=1,
                batch_size=128)
    default = experiments.run_bytes(**base)
    # measured for the default sweep run: about 190 MiB besides the process; the estimate errs above
    assert 150 * 2**20 < default < 400 * 2**20
    assert experiments.run_bytes(**{**base, "n_train": 80000}) > default + 300 * 2**20
    assert experiments.run_bytes(**{**base, "batch_size": 2048}) > default
    assert experiments.run_bytes(**{**base, "resolution": 64}) > 3 * default - 2 * experiments.RUN_OVERHEAD_BYTES


def test_available_memory_is_a_positive_number_here():
    free = experiments.available_memory()
    assert free is None or free > 0


# --- the progress line ------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_progress_counts_the_finished_runs_on_standard_error_outside_a_notebook(workers, capsys):
    rows = experiments.sweep([0.05], seeds=[0, 1], learnable=False, workers=workers, progress=True, **SMALL)
    lines = capsys.readouterr().err.splitlines()
    assert len(rows) == 2
    assert lines[0] == "runs done: 0 of 2"
    assert lines[1].startswith("runs done: 1 of 2, about ") and lines[1].endswith(" s left")
    assert lines[2] == "runs done: 2 of 2"
    assert len(lines) == 3


def test_the_estimate_counts_runs_that_finish_side_by_side(monkeypatch):
    import types

    clock = iter([100.0, 110.0, 120.0])                             # the module's clock only, not time's
    monkeypatch.setattr(experiments, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    bar = experiments.RunProgress(24, workers=2)                   # starts at 100 s
    bar.done = 1
    assert bar.text() == "runs done: 1 of 24, about 120 s left"      # 12 more rounds of two, 10 s each
    bar.done = 4
    assert bar.text() == "runs done: 4 of 24, about 100 s left"      # 10 more rounds, 10 s each


def test_without_progress_a_sweep_prints_nothing(capsys):
    experiments.sweep([0.05], seeds=[0], learnable=False, workers=1, **SMALL)
    assert capsys.readouterr() == ("", "")


def test_in_a_notebook_the_progress_line_is_one_output_that_ends_the_same_everywhere(tmp_path):
    """In a Jupyter kernel the line is updated in place, so the stored notebook holds only its last
    state, which has no timing in it: strict nbval can compare it on any computer."""
    import nbformat
    from nbclient import NotebookClient

    code = ("from clipcourse import experiments\n"
            f"rows = experiments.sweep([0.05, 0.5], seeds=[0], learnable=False, workers=1, progress=True, **{SMALL!r})")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute(cwd=str(tmp_path))
    outputs = nb.cells[0].outputs
    assert [(o.output_type, o.get("data", {}).get("text/plain")) for o in outputs] == [
        ("display_data", "runs done: 2 of 2")]


def test_the_nbval_sanitize_rule_covers_every_state_of_the_progress_line():
    """nbval sees the line's first state and the stored lesson its last: the rule must make them equal."""
    import configparser
    import re
    from pathlib import Path

    rules = configparser.ConfigParser()
    rules.read(Path(__file__).with_name("nbval_sanitize.cfg"), encoding="utf-8")
    regex, replace = rules["progress"]["regex"], rules["progress"]["replace"]
    bar = experiments.RunProgress(24, workers=2)
    states = []
    for done in (0, 1, 23, 24):
        bar.done = done
        states.append(re.sub(regex, replace, bar.text()))
    assert states == ["runs done: PROGRESS of 24"] * 4                 # the total stays compared
    assert re.sub(regex, replace, "held-out 76.6%, 24 of 24") == "held-out 76.6%, 24 of 24"
