"""SigLIP in the package (lesson 09): the learnable t and b, the sigmoid loss in train(), the comparison."""

import math

import pytest
import torch

from clipcourse import data, loss, model, siglip, temperature, text, train


@pytest.fixture(scope="module")
def tok():
    return text.Tokenizer.for_shapesworld()


@pytest.fixture(scope="module")
def pairs(tok):
    world = data.ShapesWorld.generate(64, seed=0, resolution=16)
    return world.images, tok(world.captions)


def _tiny(tok, **kw):
    from clipcourse.encoders import ImageEncoderConfig
    return model.build_model(tok, seed=0, image=ImageEncoderConfig(resolution=16, widths=(8, 16)), **kw)


def test_siglip_model_starts_at_log_10_and_minus_10(tok):
    m = _tiny(tok, temperature=temperature.SIGLIP_INIT_TEMPERATURE, logit_bias=temperature.SIGLIP_INIT_BIAS)
    assert m.logit_scale.item() == pytest.approx(math.log(10))          # t' = log t = log 10
    assert m.logit_bias.item() == -10.0 and m.logit_bias.requires_grad
    assert _tiny(tok).logit_bias is None                                  # CLIP: no bias, nothing changes
    assert "logit_bias" not in _tiny(tok).state_dict()


def test_default_model_is_unchanged_by_the_bias_option(tok):
    a, b = _tiny(tok), _tiny(tok, logit_bias=-10.0)
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sb) - set(sa) == {"logit_bias"}
    assert all(torch.equal(sa[k], sb[k]) for k in sa)                     # same seeded weights


@pytest.mark.parametrize("bad, error", [("-10", TypeError), (True, TypeError), (math.nan, ValueError),
                                         (math.inf, ValueError)])
def test_bad_logit_bias_is_refused(tok, bad, error):
    with pytest.raises(error, match="logit_bias"):
        _tiny(tok, logit_bias=bad)


def test_bias_and_logit_scale_are_not_decayed(tok):
    m = _tiny(tok, temperature=0.1, logit_bias=-10.0)
    groups = train.parameter_groups(m, weight_decay=0.05)
    assert any(p is m.logit_bias for p in groups[1]["params"])
    assert not any(p is m.logit_bias or p is m.logit_scale for p in groups[0]["params"])
    groups = train.parameter_groups(m, weight_decay=0.05, temperature_lr=0.3)
    assert {id(p) for p in groups[2]["params"]} == {id(m.logit_bias), id(m.logit_scale)}
    assert groups[2]["weight_decay"] == 0.0 and groups[2]["lr"] == 0.3


def test_under_ddp_the_bias_still_joins_the_temperature_group(tok):
    m = _tiny(tok, temperature=0.1, logit_bias=-10.0)
    wrapped = torch.nn.ModuleDict({"module": m})                # named as DDP names it: module.logit_bias
    groups = train.parameter_groups(wrapped, weight_decay=0.05, temperature_lr=0.3)
    assert {id(p) for p in groups[2]["params"]} == {id(m.logit_bias), id(m.logit_scale)}
    assert not any(p is m.logit_bias for g in groups[:2] for p in g["params"])


def test_bias_start_sets_who_dominates_the_initial_loss():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(32, 64, generator=g), dim=-1)   # unrelated: cos ≈ 0
    txt = torch.nn.functional.normalize(torch.randn(32, 64, generator=g), dim=-1)
    eye = torch.eye(32, dtype=torch.bool)
    for b, negatives_share in ((0.0, (0.9, 1.0)), (-10.0, (0.0, 0.01))):
        total = loss.siglip_loss(img, txt, 0.1, b)
        logits = 10 * img @ txt.T + b
        negatives = -torch.nn.functional.logsigmoid(-logits[~eye]).sum() / 32
        assert negatives_share[0] <= (negatives / total).item() <= negatives_share[1]
    assert loss.siglip_loss(img, txt, 0.1, 0.0) > 31 * math.log(2) * 0.8 > loss.siglip_loss(img, txt, 0.1, -10.0)


def test_a_siglip_step_equals_one_by_hand(tok, pairs):
    images, tokens = pairs
    cfg = train.TrainConfig(steps=1, batch_size=16, warmup_steps=1, seed=3, loss="siglip", precision="float32")
    trained, history = train.train(_tiny(tok, temperature=0.1, logit_bias=-10.0), images, tokens, cfg,
                                   progress=False)
    m = _tiny(tok, temperature=0.1, logit_bias=-10.0).train()
    idx = train.BatchOrder(len(images), 16, 3).indices(0)
    img, txt, tau = m(data.to_float(images[idx]), tokens[idx])
    t, b = 1 / tau, m.logit_bias
    logits = t * img @ txt.T + b                                           # (B, B)
    labels = 2 * torch.eye(16) - 1
    by_hand = -torch.nn.functional.logsigmoid(labels * logits).sum() / 16
    assert history.loss[0] == pytest.approx(by_hand.item(), rel=1e-5)
    opt = torch.optim.AdamW(train.parameter_groups(m, 0.05), lr=cfg.lr)
    by_hand.backward()
    opt.step()
    m.temperature.clamp_()
    assert trained.logit_bias.item() == pytest.approx(m.logit_bias.item(), abs=1e-6)
    assert trained.logit_scale.item() == pytest.approx(m.logit_scale.item(), abs=1e-6)
    assert trained.logit_bias.item() != -10.0                              # b learns


def test_loss_and_model_must_agree(tok, pairs):
    images, tokens = pairs
    with pytest.raises(ValueError, match="has none"):
        train.train(_tiny(tok), images, tokens, train.TrainConfig(steps=1, batch_size=8, loss="siglip"), progress=False)
    with pytest.raises(ValueError, match="loss='siglip'"):
        train.train(_tiny(tok, logit_bias=-10.0), images, tokens, train.TrainConfig(steps=1, batch_size=8),
                    progress=False)
    with pytest.raises(ValueError, match="'clip' or 'siglip'"):
        train.train(_tiny(tok), images, tokens, train.TrainConfig(steps=1, batch_size=8, loss="sigmoid"),
                    progress=False)


def test_a_wrapped_siglip_model_trains_with_its_bias(tok, pairs):
    """GatherFeatures keeps the model in .model (and DDP in .module, lesson 10): train finds the bias
    inside. In one process nothing is gathered, so the run is the unwrapped one, bit for bit."""
    from dataclasses import replace

    from clipcourse.distributed import GatherFeatures

    images, tokens = pairs
    cfg = train.TrainConfig(steps=2, batch_size=16, warmup_steps=1, loss="siglip", precision="float32",
                            device="cpu", threads=1)
    inner = _tiny(tok, temperature=0.1, logit_bias=-10.0)
    _, wrapped = train.train(GatherFeatures(inner), images, tokens, cfg, progress=False)
    plain_model, plain = train.train(_tiny(tok, temperature=0.1, logit_bias=-10.0), images, tokens, cfg,
                                     progress=False)
    assert wrapped.as_dict() == plain.as_dict()
    assert inner.logit_bias.item() == plain_model.logit_bias.item() != -10.0
    with pytest.raises(ValueError, match="has none"):             # no model inside has a bias
        train.train(GatherFeatures(_tiny(tok)), images, tokens, cfg, progress=False)
    with pytest.raises(ValueError, match="loss='siglip'"):        # the softmax would ignore the inner bias
        train.train(GatherFeatures(_tiny(tok, logit_bias=-10.0)), images, tokens, replace(cfg, loss="clip"),
                    progress=False)


def test_compare_rows_and_verdict():
    rows = siglip.compare((4, 8), seeds=[0], pairs=16, bias_starts=(0.0,), n_train=64, n_heldout=41,
                          widths=(8,), workers=1, precision="float32")
    assert [(r["loss"], r["batch_size"], r["steps"], r["logit_bias"]) for r in rows] == [
        ("clip", 4, 4, None), ("siglip", 4, 4, -10.0), ("clip", 8, 2, None), ("siglip", 8, 2, -10.0),
        ("siglip", 8, 2, 0.0)]
    assert all(len(r["tau_trajectory"]) == r["steps"] for r in rows)
    assert all(("final_bias" in r) == (r["loss"] == "siglip") for r in rows)
    summary = siglip.summarize(rows)
    assert siglip.pick(summary, "siglip", 8, 0.0)["final_bias_mean"] == rows[-1]["final_bias"]
    verdict = siglip.small_batch_verdict(summary)
    assert verdict.answer in (siglip.HOLDS, siglip.FAILS, siglip.UNCLEAR) and "batch 4" in verdict.evidence


TINY_COMPARE = dict(seeds=[0], pairs=16, n_train=64, n_heldout=41, widths=(8,), precision="float32")


def test_ctrl_c_during_compare_keeps_the_finished_runs(monkeypatch):
    """Ctrl-C during the fourth run (longest runs first: batch 4, then batch 8): the three finished rows
    travel with the exception, in the order compare returns rows (batch 8 first, as asked)."""
    from clipcourse import experiments

    real, calls = experiments._run, []

    def run_then_ctrl_c(setup, job, callbacks):
        calls.append(job)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(setup, job, callbacks)

    monkeypatch.setattr(experiments, "_run", run_then_ctrl_c)
    with pytest.raises(experiments.SweepInterrupted, match="3 of 4 runs") as info:
        siglip.compare((8, 4), workers=1, **TINY_COMPARE)
    assert isinstance(info.value, KeyboardInterrupt)
    assert [(r["loss"], r["batch_size"]) for r in info.value.rows] == [("clip", 8), ("clip", 4), ("siglip", 4)]


def test_a_failed_run_in_compare_keeps_the_finished_runs(monkeypatch):
    """The bias run fails (its start turned NaN past compare's checks; build_model refuses it) after the others."""
    from clipcourse import experiments

    real = experiments._run

    def nan_bias(setup, job, callbacks):
        if job.get("logit_bias") == 1.0:             # the run of bias_starts, trained last (fewest steps)
            job = dict(job, logit_bias=math.nan)
        return real(setup, job, callbacks)

    monkeypatch.setattr(experiments, "_run", nan_bias)
    with pytest.raises(experiments.SweepFailed, match=r"logit_bias must be finite.* 4 of 5 runs") as info:
        siglip.compare((4, 8), bias_starts=(1.0,), bias_batch_size=8, workers=1, **TINY_COMPARE)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value.__cause__, ValueError)
    kept = info.value.rows
    assert [(r["loss"], r["batch_size"], r["logit_bias"]) for r in kept] == [
        ("clip", 4, None), ("siglip", 4, -10.0), ("clip", 8, None), ("siglip", 8, -10.0)]
    assert all(len(r["tau_trajectory"]) == r["steps"] for r in kept)


def _summary(sig, soft, std=0.01):
    return [{"loss": "clip", "batch_size": 8, "logit_bias": None, "n_seeds": 2, "train_combo_acc_mean": soft,
             "train_combo_acc_std": std},
            {"loss": "siglip", "batch_size": 8, "logit_bias": -10.0, "n_seeds": 2, "train_combo_acc_mean": sig,
             "train_combo_acc_std": std}]


@pytest.mark.parametrize("sig, soft, std, answer", [(0.5, 0.3, 0.01, siglip.HOLDS), (0.3, 0.5, 0.01, siglip.FAILS),
                                                    (0.33, 0.3, 0.01, siglip.UNCLEAR),
                                                    (0.5, 0.3, 0.15, siglip.UNCLEAR)])
def test_verdict_is_honest_about_noise(sig, soft, std, answer):
    assert siglip.small_batch_verdict(_summary(sig, soft, std)).answer == answer


def _two_batches(first, second):
    """A summary at batches 8 and 32: (sigmoid, softmax) means at each, spreads of 0.01."""
    rows = []
    for b, (sig, soft) in ((8, first), (32, second)):
        rows += [dict(e, batch_size=b) for e in _summary(sig, soft)]
    return rows


@pytest.mark.parametrize("first, second, answer", [
    ((0.14, 0.16), (0.10, 0.20), siglip.FAILS),     # lesson 09's stored run: only batch 32 is clear, and it is the softmax
    ((0.40, 0.30), (0.31, 0.30), siglip.HOLDS),
    ((0.40, 0.30), (0.10, 0.20), siglip.UNCLEAR),   # each loss clearly ahead somewhere
    ((0.31, 0.30), (0.30, 0.31), siglip.UNCLEAR),
])
def test_verdict_counts_every_batch_size(first, second, answer):
    verdict = siglip.small_batch_verdict(_two_batches(first, second))
    assert verdict.answer == answer, verdict
    assert "batch 8:" in verdict.evidence and "batch 32:" in verdict.evidence and "gap" in verdict.evidence


def test_compare_refuses_bad_arguments():
    with pytest.raises(ValueError, match="losses"):
        siglip.compare((8,), [0], 64, losses=("sigmoid",))
    with pytest.raises(ValueError, match="pairs"):
        siglip.compare((64,), [0], 32)
    with pytest.raises(ValueError, match="seeds"):
        siglip.compare((8,), [], 64)
