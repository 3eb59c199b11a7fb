"""Checkpoints: a resumed run continues exactly, files are written atomically, loading runs no code.

Runs are a few tiny CPU steps on one thread (as in test_train.py)."""

import os
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipcourse import checkpoint, train
from clipcourse.checkpoint import load_checkpoint, save_checkpoint
from clipcourse.model import build_model
from clipcourse.train import Callback, Checkpoint, TrainConfig


def quick(**overrides):
    cfg = dict(steps=6, batch_size=16, warmup_steps=2, seed=0, device="cpu", threads=1, precision="float32",
               eval_every=2)
    cfg.update(overrides)
    return TrainConfig(**cfg)


@pytest.fixture(scope="module")
def pairs(tok, tiny_world):
    return tiny_world.images, tok(tiny_world.captions)        # 64 pairs: 4 batches of 16 per epoch


class WithDropout(nn.Module):
    """A TinyCLIP with dropout on its image features: training then draws from torch's RNG."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.drop = inner, nn.Dropout(0.2)
        self.temperature = inner.temperature

    def forward(self, images, tokens):
        img, txt, tau = self.inner(images, tokens)
        return F.normalize(self.drop(img), dim=-1), txt, tau


def model(tok, seed=0):
    return WithDropout(build_model(tok, seed=seed))


def score(m):
    """A deterministic evaluation, so that histories hold evaluations too."""
    return {"w": float(m.inner.image_projection.weight.sum())}


class CrashAt(Callback):
    """Raises at the end of step `at`, as a crash or a killed process would end a run."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, state):
        if state.step == self.at:
            raise RuntimeError("crash")


class CtrlCAt(Callback):
    """Presses Ctrl-C (sends SIGINT to this process) during step `at`."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, state):
        if state.step == self.at:
            signal.raise_signal(signal.SIGINT)


def assert_same_run(a, b):
    (model_a, history_a), (model_b, history_b) = a, b
    assert history_a.as_dict() == history_b.as_dict()                   # every float, exactly
    sd_a, sd_b = model_a.state_dict(), model_b.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k                         # BatchNorm buffers included


@pytest.mark.parametrize("n", [2, 3])                    # at an evaluation step, and mid-epoch between them
@pytest.mark.parametrize("stop", ["crash", "ctrl-c"])
def test_n_steps_then_resume_n_equals_2n_straight(tok, pairs, tmp_path, n, stop, ctrl_c_raises):
    """2N steps straight == N steps, stopped, then resumed for N: parameters, buffers, history, exactly."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    cfg = quick(steps=2 * n)
    straight = train.train(model(tok), *pairs, cfg, evaluate=score, progress=False)

    path = tmp_path / "run.pt"
    first = model(tok)
    if stop == "crash":                                  # the checkpoint is the last periodic one, at step N
        with pytest.raises(RuntimeError, match="crash"):
            train.train(first, *pairs, cfg, callbacks=[Checkpoint(path, every=n), CrashAt(n + 1)],
                        evaluate=score, progress=False)
    else:                                                # Ctrl-C: the step ends, then the checkpoint is saved
        with pytest.raises(train.TrainingInterrupted) as info:
            train.train(first, *pairs, cfg, callbacks=[Checkpoint(path, every=100), CtrlCAt(n)],
                        evaluate=score, progress=False)
        assert info.value.history.step == list(range(1, n + 1))
    assert load_checkpoint(path)["step"] == n

    fresh = model(tok, seed=1)                           # other weights: all must come from the checkpoint
    resumed = train.train(fresh, *pairs, cfg, evaluate=score, progress=False, resume=path)
    assert resumed[0] is fresh
    assert_same_run(straight, resumed)


def test_checkpoint_contents(tok, pairs, tmp_path):
    path = tmp_path / "sub" / "run.pt"
    m, history = train.train(model(tok), *pairs, quick(steps=4), callbacks=[Checkpoint(path, every=3)],
                             evaluate=score, progress=False)
    ckpt = load_checkpoint(path)                          # rewritten at the end (step 4), with the final evaluation
    assert ckpt["format"] == checkpoint.FORMAT
    assert ckpt["step"] == 4 and ckpt["temperature"] == history.temperature[-1]
    assert ckpt["history"] == history.as_dict()
    assert ckpt["config"]["steps"] == 4
    assert set(ckpt) >= {"model", "optimizer", "batches", "torch_rng"}
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in ckpt["model"].items())
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary files left behind


def test_resuming_a_finished_run_changes_nothing(tok, pairs, tmp_path):
    path = tmp_path / "run.pt"
    done = train.train(model(tok), *pairs, quick(steps=3), callbacks=[Checkpoint(path)], evaluate=score,
                       progress=False)
    again = train.train(model(tok, seed=1), *pairs, quick(steps=3), evaluate=score, progress=False, resume=path)
    assert_same_run(done, again)


def test_a_failed_write_keeps_the_previous_checkpoint(tok, pairs, tmp_path, monkeypatch):
    """The write goes to a temporary file, is fsynced, then renamed: a crash mid-write harms nothing."""
    path = tmp_path / "run.pt"
    train.train(model(tok), *pairs, quick(steps=2), callbacks=[Checkpoint(path)], progress=False)
    before = path.read_bytes()

    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    train.train(model(tok), *pairs, quick(steps=3), callbacks=[Checkpoint(path, every=100)], progress=False)
    assert calls[:2] == ["fsync", "replace"]              # the data reach the disk before the name moves
    before = path.read_bytes()

    def torn_write(obj, f, *args, **kwargs):              # half a file, then the disk is full
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", torn_write)
    with pytest.raises(OSError, match="No space left"):
        train.train(model(tok), *pairs, quick(steps=1), callbacks=[Checkpoint(path, every=1)], progress=False)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # the torn temporary file is gone


class Payload:
    """Unpickling this calls open(marker, "w"): it creates a file. Any function could run instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_malicious_checkpoint_is_refused_without_running_its_code(tok, pairs, tmp_path):
    good = tmp_path / "good.pt"
    train.train(model(tok), *pairs, quick(steps=1), callbacks=[Checkpoint(good)], progress=False)
    evil, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save({**torch.load(good, weights_only=True), "extra": Payload(marker)}, evil)

    with pytest.raises(ValueError, match="refused to load .*evil.pt.* could run arbitrary code"):
        load_checkpoint(evil)
    with pytest.raises(ValueError, match="refused to load"):
        train.train(model(tok), *pairs, quick(steps=2), progress=False, resume=evil)
    assert not marker.exists()
    torch.load(evil, weights_only=False)                  # the payload is real: a plain unpickle runs it
    assert marker.exists()


def test_other_files_are_refused_clearly(tok, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(build_model(tok).state_dict(), path)
    with pytest.raises(ValueError, match="not a clipcourse checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("change,match", [
    (dict(lr=1e-2), r"TrainConfig differs .*lr: 0.002 -> 0.01"),
    (dict(seed=1), r"seed: 0 -> 1"),
])
def test_resume_refuses_another_config(tok, pairs, tmp_path, change, match):
    path = tmp_path / "run.pt"
    train.train(model(tok), *pairs, quick(steps=2), callbacks=[Checkpoint(path)], progress=False)
    with pytest.raises(ValueError, match=match):
        train.train(model(tok), *pairs, quick(steps=2, **change), progress=False, resume=path)
    train.train(model(tok), *pairs, quick(steps=2, eval_every=0, threads=2), progress=False, resume=path)  # allowed


def test_resume_refuses_another_model_or_data(tok, pairs, tmp_path):
    path = tmp_path / "run.pt"
    train.train(model(tok), *pairs, quick(steps=2), callbacks=[Checkpoint(path)], progress=False)
    with pytest.raises(ValueError, match="another model"):
        train.train(build_model(tok), *pairs, quick(steps=2), progress=False, resume=path)
    images, tokens = pairs
    with pytest.raises(ValueError, match="trained on 64 pairs, these are 32"):
        train.train(model(tok), images[:32], tokens[:32], quick(steps=2), progress=False, resume=path)


def test_checkpoint_every_must_be_positive(tmp_path):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="every must be a positive number of steps"):
            Checkpoint(tmp_path / "run.pt", every=bad)


def test_save_checkpoint_returns_the_path(tok, pairs, tmp_path):
    states = []

    class Keep(Callback):
        def on_train_end(self, state):
            states.append(state)

    train.train(model(tok), *pairs, quick(steps=1), callbacks=[Keep()], progress=False)
    assert save_checkpoint(tmp_path / "a.pt", states[0].state_dict()) == tmp_path / "a.pt"
    assert load_checkpoint(tmp_path / "a.pt")["step"] == 1


@pytest.mark.parametrize("older", [False, True], ids=["now", "older checkpoint"])
def test_resume_at_an_epoch_boundary(tok, pairs, tmp_path, older):
    """Stopped after step 4, the last of epoch 0 (4 batches of 16): the resumed run draws epoch 1's shuffle, also
    from a checkpoint written before BatchOrder stored its epoch."""
    cfg = quick(steps=8)
    straight = train.train(model(tok), *pairs, cfg, evaluate=score, progress=False)
    path = tmp_path / "run.pt"
    with pytest.raises(RuntimeError, match="crash"):
        train.train(model(tok), *pairs, cfg, callbacks=[Checkpoint(path, every=4), CrashAt(5)],
                    evaluate=score, progress=False)
    saved = load_checkpoint(path)
    assert saved["step"] == 4 and saved["batches"]["epoch"] == 0
    if older:
        del saved["batches"]["epoch"]
        save_checkpoint(path, saved)
    resumed = train.train(model(tok, seed=1), *pairs, cfg, evaluate=score, progress=False, resume=path)
    assert_same_run(straight, resumed)


def test_a_damaged_batch_order_is_refused(tok, pairs, tmp_path):
    order = train.BatchOrder(64, 16, seed=0)
    with pytest.raises(ValueError, match="no perm"):
        order.load_state_dict({"generator": order.generator.get_state()})
    with pytest.raises(ValueError, match="not a shuffle"):
        order.load_state_dict({"generator": order.generator.get_state(), "perm": torch.zeros(64, dtype=torch.long)})
