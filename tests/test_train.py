"""The training loop: a real learning signal, determinism, callbacks, History, weight-decay groups,
the temperature clamp, divergence and Ctrl-C handling, bfloat16 at both ends of τ's range and
argument checks (checkpoints and resuming: test_checkpoint.py).

Runs use threads=1: on a busy 2-core machine one thread is both deterministic and far faster."""

import copy
import math
import signal

import pytest
import torch
from torch import nn

from clipcourse import data, evaluate, train
from clipcourse.model import build_model
from clipcourse.train import Callback, History, TrainConfig, TrainingDiverged


def quick(**overrides):
    """A few small CPU steps: enough to exercise the loop, not to learn."""
    cfg = dict(steps=4, batch_size=16, warmup_steps=2, seed=0, device="cpu", threads=1)
    cfg.update(overrides)
    return TrainConfig(**cfg)


@pytest.fixture(scope="module")
def pairs(tok, tiny_world):
    return tiny_world.images, tok(tiny_world.captions)


class Recorder(Callback):
    """Logs every call with the step and the state object it saw."""

    def __init__(self):
        self.calls, self.states = [], []

    def _log(self, name, state):
        self.calls.append((name, state.step))
        self.states.append(state)

    def on_train_start(self, state): self._log("start", state)
    def on_step_end(self, state): self._log("step", state)
    def on_evaluate(self, state): self._log("evaluate", state)
    def on_train_end(self, state): self._log("end", state)
    def on_interrupt(self, state): self._log("interrupt", state)


# --- a real learning signal ------------------------------------------------------------------------

@pytest.mark.slow
def test_training_learns_composition(tok):
    """3000 pairs, 200 steps of 48 (about 8 CPU seconds): the loss falls and held-out colour x shape
    zero-shot accuracy over all 48 prompts is far above chance (1/48 = 0.021). Measured on CPU, seed
    0: loss 4.04 -> 0.75, in-batch accuracy 0.69, held-out accuracy 0.25; seeds 1 and 2 gave held-out
    0.20 and 0.64 and loss ratios 0.25 and 0.11, hence the thresholds below."""
    ds = data.ShapesWorld.generate(3000, seed=0)
    held = data.ShapesWorld.generate(500, split="heldout", seed=1, two_object_prob=0.0)
    model = build_model(tok, seed=0)
    cfg = TrainConfig(steps=200, batch_size=48, warmup_steps=10, seed=0, threads=1)
    model, history = train.train(model, ds.images, tok(ds.captions), cfg, progress=False)
    first, last = sum(history.loss[:5]) / 5, sum(history.loss[-20:]) / 20
    assert last < 0.4 * first, (first, last)
    assert sum(history.accuracy[-20:]) / 20 > 0.4  # in-batch: chance is 1/48
    classes = evaluate.zero_shot_classifier(model, tok, [data.combo_name(i) for i in range(data.NUM_COMBOS)])
    accuracy = evaluate.zero_shot_accuracy(evaluate.embed_images(model, held.images), classes, held.labels)
    assert accuracy > 0.12, accuracy  # more than 5x chance on combinations never seen in training
    assert 0.01 <= history.temperature[-1] <= 1.0


# --- determinism -------------------------------------------------------------------------------------

def test_same_seed_same_run(tok, pairs):
    images, tokens = pairs
    runs = []
    for _ in range(2):
        model, history = train.train(build_model(tok, seed=0), images, tokens, quick(), progress=False)
        runs.append((model.state_dict(), history))
    (sd_a, h_a), (sd_b, h_b) = runs
    assert h_a.loss == h_b.loss and h_a.temperature == h_b.temperature and h_a.accuracy == h_b.accuracy
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    _, h_c = train.train(build_model(tok, seed=0), images, tokens, quick(seed=1), progress=False)
    assert h_c.loss != h_a.loss  # the seed orders the batches


class Dropout(nn.Module):
    """Wraps a model with dropout on its image features: its training draws from torch's RNG."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.drop = inner, nn.Dropout(0.3)
        self.temperature = inner.temperature

    def forward(self, images, tokens):
        img, txt, tau = self.inner(images, tokens)
        return nn.functional.normalize(self.drop(img), dim=-1), txt, tau


def test_same_seed_same_run_even_with_dropout_whatever_the_global_rng(tok, pairs):
    """The run seeds torch's RNG itself (and gives the caller's back): cfg.seed alone decides it."""
    histories = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        expected = torch.rand(1)
        torch.manual_seed(global_seed)
        histories.append(train.train(Dropout(build_model(tok, seed=0)), *pairs, quick(), progress=False)[1])
        assert torch.equal(torch.rand(1), expected)          # the caller's RNG is untouched
    assert histories[0].as_dict() == histories[1].as_dict()
    other = train.train(Dropout(build_model(tok, seed=0)), *pairs, quick(seed=1), progress=False)[1]
    assert other.loss != histories[0].loss


def test_training_does_not_touch_the_global_rng(tok, pairs):
    torch.manual_seed(0)
    expected = torch.rand(3)
    model = build_model(tok, seed=0)
    torch.manual_seed(0)
    train.train(model, *pairs, quick(steps=2), progress=False)
    assert torch.equal(torch.rand(3), expected)


# --- callbacks, stop, History --------------------------------------------------------------------

def test_callbacks_are_called_in_order_with_the_state(tok, pairs):
    model = build_model(tok, seed=0)
    recorder = Recorder()
    seen = []

    def evaluate_fn(m):
        seen.append((m.training, torch.is_grad_enabled()))
        return {"score": float(len(seen))}

    cfg = quick(steps=5, eval_every=2)
    returned, history = train.train(model, *pairs, cfg, callbacks=[recorder], evaluate=evaluate_fn,
                                    progress=False)
    assert recorder.calls == [("start", 0), ("step", 1), ("step", 2), ("evaluate", 2), ("step", 3),
                              ("step", 4), ("evaluate", 4), ("step", 5), ("evaluate", 5), ("end", 5)]
    state = recorder.states[0]
    assert all(s is state for s in recorder.states)  # one TrainState, updated in place
    assert state.model is model is returned
    assert isinstance(state.optimizer, torch.optim.AdamW)
    assert state.config is cfg
    assert state.metrics == {"score": 3.0}
    assert seen == [(False, False)] * 3  # evaluate runs in eval mode without gradients
    assert history.evaluations == [{"step": 2, "score": 1.0}, {"step": 4, "score": 2.0},
                                   {"step": 5, "score": 3.0}]
    assert not returned.training


def test_callbacks_see_fresh_numbers_every_step(tok, pairs):
    model = build_model(tok, seed=0)
    snapshots = []

    class Snap(Callback):
        def on_step_end(self, state):
            snapshots.append((state.step, state.loss, state.temperature, state.accuracy))

    _, history = train.train(model, *pairs, quick(), callbacks=[Snap()], progress=False)
    assert snapshots == list(zip(history.step, history.loss, history.temperature, history.accuracy))


def test_final_evaluation_is_not_repeated_when_steps_is_a_multiple_of_eval_every(tok, pairs):
    _, history = train.train(build_model(tok, seed=0), *pairs, quick(steps=4, eval_every=2),
                             evaluate=lambda m: {"x": 1.0}, progress=False)
    assert [e["step"] for e in history.evaluations] == [2, 4]


def test_stop_ends_training_early(tok, pairs):
    class StopAt3(Callback):
        def on_step_end(self, state):
            if state.step == 3:
                state.stop = True

    recorder = Recorder()
    _, history = train.train(build_model(tok, seed=0), *pairs, quick(steps=50), callbacks=[StopAt3(), recorder],
                             evaluate=lambda m: {"x": 1.0}, progress=False)
    assert history.step == [1, 2, 3]
    assert recorder.calls[-2:] == [("evaluate", 3), ("end", 3)]


def test_stop_at_an_evaluation_step_evaluates_once(tok, pairs):
    class StopAt2(Callback):
        def on_step_end(self, state):
            state.stop = state.step == 2

    _, history = train.train(build_model(tok, seed=0), *pairs, quick(steps=50, eval_every=2),
                             callbacks=[StopAt2()], evaluate=lambda m: {"x": 1.0}, progress=False)
    assert [e["step"] for e in history.evaluations] == [2]


def test_history_contents(tok, pairs):
    _, history = train.train(build_model(tok, seed=0), *pairs, quick(steps=6), progress=False)
    assert history.step == [1, 2, 3, 4, 5, 6]
    for values in (history.loss, history.temperature, history.accuracy):
        assert len(values) == 6 and all(isinstance(v, float) for v in values)
    assert all(0.0 <= a <= 1.0 for a in history.accuracy)
    assert history.temperature[0] == pytest.approx(0.07)  # the τ the first step used
    assert history.evaluations == []
    d = history.as_dict()
    assert set(d) == {"step", "loss", "temperature", "accuracy", "evaluations"}
    assert d["loss"] == history.loss


def test_learning_rate_warms_up_then_decays(tok, pairs):
    lrs = []

    class LR(Callback):
        def on_step_end(self, state):
            lrs.append(state.optimizer.param_groups[0]["lr"])

    cfg = quick(steps=12, warmup_steps=4, lr=1e-3)
    train.train(build_model(tok, seed=0), *pairs, cfg, callbacks=[LR()], progress=False)
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert max(lrs) == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[-1] < 0.05e-3


def test_progress_bar_runs_and_closes(tok, pairs, capsys):
    bar = train.ProgressBar(every=1, disable=False)
    train.train(build_model(tok, seed=0), *pairs, quick(steps=3), callbacks=[bar], progress=False)
    assert bar.bar.n == 3
    assert "3/3" in capsys.readouterr().err


def test_threads_are_set_for_the_run_and_restored(tok, pairs):
    before = torch.get_num_threads()
    inside = []

    class Threads(Callback):
        def on_step_end(self, state):
            inside.append(torch.get_num_threads())

    train.train(build_model(tok, seed=0), *pairs, quick(steps=2, threads=1), callbacks=[Threads()], progress=False)
    assert inside == [1, 1]
    assert torch.get_num_threads() == before


# --- weight decay groups and the temperature ---------------------------------------------------

@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_parameter_groups_keep_tau_biases_and_norms_out_of_weight_decay(tok, kind):
    from clipcourse.encoders import ImageEncoderConfig

    model = build_model(tok, seed=0, image=ImageEncoderConfig(kind=kind))
    decay_group, no_decay_group = train.parameter_groups(model, 0.1)
    assert decay_group["weight_decay"] == 0.1 and no_decay_group["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in decay_group["params"]}
    no_decay = {names[id(p)] for p in no_decay_group["params"]}
    assert decay.isdisjoint(no_decay) and decay | no_decay == set(names.values())
    assert "temperature.logit_scale" in no_decay
    for n in names.values():
        if n.endswith("bias") or "norm" in n or "ln_final" in n or ".ln." in n:
            assert n in no_decay, n
    # weight matrices of the projections, attention, MLPs and convolutions are decayed
    assert {"image_projection.weight", "text_projection.weight",
            "text.transformer.layers.0.self_attn.in_proj_weight",
            "text.transformer.layers.0.linear1.weight"} <= decay
    if kind == "cnn":
        assert "visual.net.0.weight" in decay             # a conv kernel
        assert "visual.net.1.weight" in no_decay          # its BatchNorm scale
    else:
        assert "visual.patchify.weight" in decay


def test_the_vit_class_token_is_not_decayed_as_in_open_clip(tok):
    """open_clip's class_embedding is 1-D, so its `ndim < 2` rule keeps it out of weight decay; ours is
    (1, 1, W), so it is kept out by name, under DDP's `module.` prefix too. Positional embeddings (2-D in
    open_clip) are decayed in both."""
    from clipcourse.encoders import ImageEncoderConfig

    model = build_model(tok, seed=0, image=ImageEncoderConfig(kind="vit"))
    for wrapped in (model, nn.ModuleDict({"module": model})):          # DDP names it module.visual.cls
        decay, no_decay = ({id(p) for p in g["params"]} for g in train.parameter_groups(wrapped, 0.1))
        assert id(model.visual.cls) in no_decay and id(model.visual.cls) not in decay
        assert id(model.visual.pos) in decay and id(model.text.positional_embedding) in decay


def test_frozen_parameters_are_left_out_of_the_groups(tok):
    model = build_model(tok, seed=0)
    model.image_projection.weight.requires_grad_(False)
    groups = train.parameter_groups(model, 0.1)
    assert all(p is not model.image_projection.weight for g in groups for p in g["params"])


def test_the_optimizer_uses_those_groups(tok, pairs):
    recorder = Recorder()
    model = build_model(tok, seed=0)
    train.train(model, *pairs, quick(steps=1, weight_decay=0.2), callbacks=[recorder], progress=False)
    groups = recorder.states[0].optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0]
    assert any(p is model.logit_scale for p in groups[1]["params"])


def test_the_temperature_is_clamped_after_every_step(tok, pairs):
    # a ridiculous learning rate throws logit_scale far out of range at every step
    taus = []

    class Tau(Callback):
        def on_step_end(self, state):
            taus.append(state.model.temperature.temperature.item())

    train.train(build_model(tok, seed=0), *pairs, quick(steps=4, lr=100.0, warmup_steps=1),
                callbacks=[Tau()], progress=False)
    assert len(taus) == 4
    assert all(0.01 - 1e-6 <= t <= 1.0 + 1e-6 for t in taus), taus
    assert any(t in (pytest.approx(0.01), pytest.approx(1.0)) for t in taus), taus  # the clamp bit


def test_fixed_temperature_stays_fixed(tok, pairs):
    model = build_model(tok, seed=0, learnable_temperature=False, temperature=0.2)
    _, history = train.train(model, *pairs, quick(steps=3), progress=False)
    assert history.temperature == pytest.approx([0.2] * 3)


# --- divergence ------------------------------------------------------------------------------------

class PoisonAt(nn.Module):
    """Wraps a model; its forward returns NaN image features on call number `at`."""

    def __init__(self, inner, at):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0
        self.temperature = inner.temperature

    def forward(self, images, tokens):
        self.calls += 1
        img, txt, tau = self.inner(images, tokens)
        if self.calls == self.at:
            img = img * float("nan")
        return img, txt, tau


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad:UserWarning")  # tracked below
def test_non_finite_loss_raises_naming_the_step_and_keeps_the_weights(tok, pairs):
    model = PoisonAt(build_model(tok, seed=0), at=3)
    snapshots = {}

    class Snapshot(Callback):
        def on_step_end(self, state):
            snapshots[state.step] = copy.deepcopy(state.model.state_dict())

    threads = torch.get_num_threads()
    with pytest.raises(TrainingDiverged, match=r"step 3 of 5") as info:
        train.train(model, *pairs, quick(steps=5), callbacks=[Snapshot()], progress=False)
    assert "nan" in str(info.value)
    assert isinstance(info.value, FloatingPointError)
    assert sorted(snapshots) == [1, 2]
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    # the whole state is that of step 2: parameters, and BatchNorm's running statistics, which the
    # diverging forward pass had already updated
    assert after.keys() == snapshots[2].keys()
    for name, value in after.items():
        assert torch.equal(value, snapshots[2][name]), name
    assert torch.get_num_threads() == threads
    assert not model.training
    assert info.value.history.step == [1, 2]
    for words in ("τ = 0.07", "lr = ", "Likely causes", "learning rate", "BatchNorm statistics included"):
        assert words in str(info.value)


class NanGradAt(nn.Module):
    """Wraps a model; on call number `at` the loss stays finite but its gradients become NaN."""

    class _Poison(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    def __init__(self, inner, at):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0
        self.temperature = inner.temperature

    def forward(self, images, tokens):
        self.calls += 1
        img, txt, tau = self.inner(images, tokens)
        return (self._Poison.apply(img) if self.calls == self.at else img), txt, tau


def test_non_finite_gradients_stop_before_the_optimiser_step(tok, pairs):
    """A finite loss with NaN gradients would put NaN into every weight through AdamW: stop first."""
    model = NanGradAt(build_model(tok, seed=0), at=2)
    kept = {}

    class Snapshot(Callback):
        def on_step_end(self, state):
            kept["model"] = copy.deepcopy(state.model.state_dict())
            kept["optimizer"] = copy.deepcopy(state.optimizer.state_dict())

    with pytest.raises(TrainingDiverged, match=r"the gradients became NaN or infinite .*step 2 of 4") as info:
        train.train(model, *pairs, quick(), callbacks=[Snapshot()], progress=False)
    for name, value in model.state_dict().items():
        assert torch.equal(value, kept["model"][name]), name
    assert info.value.history.step == [1]


# --- Ctrl-C ------------------------------------------------------------------------------------------

class CtrlCInForward(nn.Module):
    """Wraps a model; presses Ctrl-C `times` times (SIGINT to this process) inside forward call `at`."""

    def __init__(self, inner, at, times=1):
        super().__init__()
        self.inner, self.at, self.times, self.calls = inner, at, times, 0
        self.temperature = inner.temperature

    def forward(self, images, tokens):
        self.calls += 1
        if self.calls == self.at:
            for _ in range(self.times):
                signal.raise_signal(signal.SIGINT)
        return self.inner(images, tokens)


def test_ctrl_c_mid_step_finishes_the_step_then_stops(tok, pairs, ctrl_c_raises):
    """Ctrl-C in the middle of step 3 (here in the forward pass, after BatchNorm saw the batch): the
    step completes, callbacks see it, then TrainingInterrupted (a KeyboardInterrupt) carries a history
    that matches the model exactly."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    straight, _ = train.train(build_model(tok, seed=0), *pairs, quick(steps=3), progress=False)
    model = CtrlCInForward(build_model(tok, seed=0), at=3)
    own = History()
    recorder = Recorder()
    with pytest.raises(KeyboardInterrupt) as info:
        train.train(model, *pairs, quick(steps=10), callbacks=[own, recorder], progress=False)
    assert isinstance(info.value, train.TrainingInterrupted)
    assert "after step 3 of 10" in str(info.value)
    assert info.value.history.step == own.step == [1, 2, 3]
    assert recorder.calls[-1] == ("interrupt", 3)
    for name, value in model.inner.state_dict().items():
        assert torch.equal(value, straight.state_dict()[name]), name
    assert not model.training
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # Python's handler is back


def test_a_second_ctrl_c_interrupts_at_once(tok, pairs, ctrl_c_raises):
    model = CtrlCInForward(build_model(tok, seed=0), at=2, times=2)
    recorder = Recorder()
    with pytest.raises(KeyboardInterrupt) as info:
        train.train(model, *pairs, quick(steps=10), callbacks=[recorder], progress=False)
    assert not isinstance(info.value, train.TrainingInterrupted)
    assert ("interrupt", 1) not in recorder.calls        # no half-done step is handed to callbacks
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_divergence_message_emits_no_warning(tok, pairs):
    import warnings

    model = PoisonAt(build_model(tok, seed=0), at=1)
    warn_always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch shows this warning once per process: show it every time
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(TrainingDiverged, match="step 1 of"):
                train.train(model, *pairs, quick(steps=2), progress=False)
    finally:
        torch.set_warn_always(warn_always)


# --- what callbacks hear when training stops early ------------------------------------------------

class Heard(Callback):
    """Logs the steps, and the two ways training can stop early."""

    def __init__(self):
        self.calls = []

    def on_step_end(self, state): self.calls.append(("step", state.step))
    def on_interrupt(self, state): self.calls.append(("interrupt", state.step))
    def on_diverge(self, state): self.calls.append(("diverge", state.step))


class InterruptOnly(Callback):
    """Handles Ctrl-C only, as Checkpoint, ProgressBar and the dashboard do."""

    def __init__(self):
        self.steps = []

    def on_interrupt(self, state): self.steps.append(state.step)


def test_divergence_is_heard_by_every_callback_at_the_last_good_step(tok, pairs):
    """A divergence ends training as Ctrl-C does: callbacks hear it (on_diverge, which by default is
    on_interrupt) with the state of the last completed step."""
    heard, interrupt_only = Heard(), InterruptOnly()
    with pytest.raises(TrainingDiverged, match="step 3 of 5"):
        train.train(PoisonAt(build_model(tok, seed=0), at=3), *pairs, quick(steps=5),
                    callbacks=[heard, interrupt_only], progress=False)
    assert heard.calls == [("step", 1), ("step", 2), ("diverge", 2)]
    assert interrupt_only.steps == [2]


def test_after_a_divergence_the_checkpoint_holds_the_last_good_step_and_resumes_exactly(tok, pairs, tmp_path):
    """64 pairs in batches of 16: step 5 starts a new epoch (a new shuffle) and draws dropout masks. It
    diverges; the checkpoint then holds step 4 exactly (model, history, batch order, random state), the
    progress bar is closed, and a run resumed from the checkpoint ends as one that never stopped."""
    from clipcourse.checkpoint import load_checkpoint

    def fresh(at):
        return PoisonAt(Dropout(build_model(tok, seed=0)), at=at)

    path, bar = tmp_path / "run.pt", train.ProgressBar(every=1)
    with pytest.raises(TrainingDiverged, match="step 5 of 8"):
        train.train(fresh(at=5), *pairs, quick(steps=8), callbacks=[train.Checkpoint(path, every=3), bar],
                    progress=False)
    saved = load_checkpoint(path)
    assert saved["step"] == 4 and saved["history"]["step"] == [1, 2, 3, 4]
    assert bar.bar.n == 4 and bar.bar.disable                  # tqdm disables a bar when it is closed
    resumed, resumed_history = train.train(fresh(at=0), *pairs, quick(steps=8), resume=path, progress=False)
    straight, straight_history = train.train(fresh(at=0), *pairs, quick(steps=8), progress=False)
    assert resumed_history.as_dict() == straight_history.as_dict()
    for name, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_ctrl_c_closes_the_progress_bar(tok, pairs, ctrl_c_raises):
    bar = train.ProgressBar(every=1)
    with pytest.raises(train.TrainingInterrupted):
        train.train(CtrlCInForward(build_model(tok, seed=0), at=2), *pairs, quick(steps=10), callbacks=[bar],
                    progress=False)
    assert bar.bar.n == 2 and bar.bar.disable


# --- bad arguments ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change,match", [
    (dict(images=torch.zeros(64, 32, 32, dtype=torch.uint8)), "images"),
    (dict(images=[0] * 64), "images"),
    (dict(tokens=torch.zeros(63, 16, dtype=torch.long)), "tokens"),
    (dict(tokens=torch.zeros(64, dtype=torch.long)), "tokens"),
    (dict(config=quick(batch_size=1)), "batch_size"),
    (dict(config=quick(batch_size=65)), "batch_size"),
    (dict(config=quick(steps=0)), "steps"),
])
def test_bad_arguments_raise_value_error(tok, pairs, change, match):
    images, tokens = pairs
    kwargs = dict(images=images, tokens=tokens, config=quick())
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        train.train(build_model(tok, seed=0), kwargs["images"], kwargs["tokens"], kwargs["config"],
                    progress=False)


def test_resolve_device():
    assert train.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert train.resolve_device("auto").type == expected
    assert train.resolve_device().type == expected


def test_precision_choices(monkeypatch):
    monkeypatch.delenv("CLIPCOURSE_PRECISION", raising=False)
    cpu = torch.device("cpu")
    assert train.resolve_precision("float32", cpu) == torch.float32
    assert train.resolve_precision("bfloat16", cpu) == torch.bfloat16
    expected = torch.bfloat16 if train.native_bfloat16(cpu) else torch.float32
    assert train.resolve_precision("auto", cpu) == expected
    with pytest.raises(ValueError, match="precision must be 'auto', 'float32' or 'bfloat16', got 'fp8'"):
        train.resolve_precision("fp8", cpu)


def test_bad_precision_raises_before_any_step(tok, pairs):
    model = build_model(tok, seed=0)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="precision"):
        train.train(model, *pairs, quick(precision="half"), progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_both_precisions_train_and_keep_float32_weights(tok, pairs, precision):
    """bfloat16 is autocast (mixed precision): weights, optimiser state and the loss stay float32."""
    model, history = train.train(build_model(tok, seed=0), *pairs, quick(steps=6, precision=precision),
                                 progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(history.loss)))
    assert history.loss[-1] < history.loss[0]


@pytest.mark.parametrize("temperature", [0.01, 1.0])
@pytest.mark.parametrize("learnable", [False, True])
def test_bfloat16_stays_finite_at_both_ends_of_the_temperature_range(tok, pairs, temperature, learnable):
    """At τ = 0.01 the logits reach 100, where bfloat16 keeps only 2-3 significant digits; at τ = 1
    they stay within ±1. The logits and the loss are float32 under autocast, so both train finitely."""
    model = build_model(tok, seed=0, temperature=temperature, learnable_temperature=learnable)
    model, history = train.train(model, *pairs, quick(steps=16, precision="bfloat16", lr=5e-3), progress=False)
    assert all(math.isfinite(v) for v in history.loss + history.accuracy + history.temperature)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    # it learns: at τ = 0.01 the first steps overshoot (the loss jumps), then it comes down below its start
    assert sum(history.loss[-4:]) / 4 < history.loss[0]
    assert all(0.01 - 1e-6 <= t <= 1 + 1e-6 for t in history.temperature)


def test_bfloat16_follows_float32_closely(tok, pairs):
    """Mixed precision changes the numbers a little, not the run: same losses to ~1 %."""
    runs = [train.train(build_model(tok, seed=0), *pairs, quick(steps=6, precision=p), progress=False)[1].loss
            for p in ("float32", "bfloat16")]
    torch.testing.assert_close(torch.tensor(runs[1]), torch.tensor(runs[0]), rtol=0.02, atol=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_trains_on_cuda(tok, pairs):
    model, history = train.train(build_model(tok, seed=0), *pairs, quick(device="cuda"), progress=False)
    assert next(model.parameters()).is_cuda
    assert len(history.loss) == 4 and all(torch.isfinite(torch.tensor(history.loss)))


@pytest.mark.parametrize("forced", ["float32", "bfloat16", "FLOAT32 "])
def test_precision_environment_variable_steers_auto_only(monkeypatch, forced):
    """CLIPCOURSE_PRECISION decides what 'auto' means (the other-CPU test profile sets float32);
    an explicit precision is never overridden."""
    cpu = torch.device("cpu")
    monkeypatch.setenv("CLIPCOURSE_PRECISION", forced)
    assert train.resolve_precision("auto", cpu) == getattr(torch, forced.strip().lower())
    assert train.resolve_precision("float32", cpu) == torch.float32
    assert train.resolve_precision("bfloat16", cpu) == torch.bfloat16


def test_precision_environment_variable_auto_or_empty_means_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if train.native_bfloat16(cpu) else torch.float32
    for value in ("auto", ""):
        monkeypatch.setenv("CLIPCOURSE_PRECISION", value)
        assert train.resolve_precision("auto", cpu) == expected


def test_bad_precision_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("CLIPCOURSE_PRECISION", "fp16")
    with pytest.raises(ValueError, match="CLIPCOURSE_PRECISION must be 'auto', 'float32' or 'bfloat16', got 'fp16'"):
        train.resolve_precision("auto", torch.device("cpu"))


# --- a learning rate of its own for τ (lesson 07) -----------------------------------------------

def test_temperature_lr_puts_logit_scale_in_a_group_of_its_own(tok):
    model = build_model(tok, seed=0)
    groups = train.parameter_groups(model, 0.1, temperature_lr=0.05)
    assert len(groups) == 3
    assert groups[2]["params"] == [model.logit_scale] and groups[2]["lr"] == 0.05
    assert groups[2]["weight_decay"] == 0.0                 # still no weight decay on τ
    assert all(p is not model.logit_scale for g in groups[:2] for p in g["params"])
    with pytest.raises(ValueError, match="temperature_lr must be positive"):
        train.parameter_groups(model, 0.1, temperature_lr=0.0)


def test_temperature_lr_equal_to_lr_changes_nothing(tok, pairs):
    """A third group with the same learning rate is the same optimisation, bit for bit."""
    runs = [train.train(build_model(tok, seed=0, temperature=0.5), *pairs,
                        quick(steps=6, lr=3e-3, temperature_lr=t, precision="float32"), progress=False)[1]
            for t in (None, 3e-3)]
    assert runs[0].loss == runs[1].loss and runs[0].temperature == runs[1].temperature


def test_temperature_lr_moves_tau_by_about_that_much_per_step(tok, pairs):
    """Adam moves logit_scale by at most about its lr each step, whatever the gradient's size, so τ
    travels up to Σ lr in log space (`temperature_travel`; all of it only while the gradient keeps its
    sign: here, from τ = 1 on a 10-step run, measured 47 %); with the weights' small lr it barely moves."""
    cfg = quick(steps=10, lr=1e-3, warmup_steps=1, precision="float32")
    slow = train.train(build_model(tok, seed=0, temperature=1.0), *pairs, cfg, progress=False)[1]
    fast_cfg = quick(steps=10, lr=1e-3, warmup_steps=1, precision="float32", temperature_lr=0.1)
    fast = train.train(build_model(tok, seed=0, temperature=1.0), *pairs, fast_cfg, progress=False)[1]
    moved_slow, moved_fast = -math.log(slow.temperature[-1]), -math.log(fast.temperature[-1])
    assert moved_slow <= train.temperature_travel(cfg) * 1.05
    assert 0.3 * train.temperature_travel(fast_cfg) < moved_fast <= train.temperature_travel(fast_cfg) * 1.05
    assert moved_fast > 20 * moved_slow


def test_temperature_travel_sums_the_schedule():
    cfg = TrainConfig(steps=200, lr=2e-3, warmup_steps=20)
    assert train.temperature_travel(cfg) == pytest.approx(sum(train._lr_at(s, cfg) for s in range(200)))
    assert train.temperature_travel(TrainConfig(steps=200, lr=2e-3, warmup_steps=20, temperature_lr=0.02)) == \
        pytest.approx(10 * train.temperature_travel(cfg))
    # from a step on (lesson 07: did τ settle, or did the schedule freeze it?): the sum over the last steps only
    assert train.temperature_travel(cfg, from_step=150) == pytest.approx(sum(train._lr_at(s, cfg) for s in range(150, 200)))
    assert train.temperature_travel(cfg, from_step=200) == 0.0
    with pytest.raises(ValueError, match=r"from_step must be a step in \[0, 200\], got 201"):
        train.temperature_travel(cfg, from_step=201)


def test_reachable_temperatures_from_the_travel_inside_the_clamp():
    cfg = TrainConfig(steps=200, lr=2e-3, warmup_steps=20)
    low, high = train.reachable_temperatures(cfg)
    travel = train.temperature_travel(cfg)
    assert (low, high) == pytest.approx((0.07 * math.exp(-travel), 0.07 * math.exp(travel)))
    assert train.reachable_temperatures(cfg, start=0.9) == pytest.approx((0.9 * math.exp(-travel), 1.0))  # e^0.2 · 0.9 > 1
    assert train.reachable_temperatures(TrainConfig(steps=200, temperature_lr=0.3)) == (0.01, 1.0)
    with pytest.raises(ValueError, match=r"start .* got 2"):
        train.reachable_temperatures(cfg, start=2)
