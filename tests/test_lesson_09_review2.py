"""Lesson 09, second review: the slips the checkers now name, answers in other right forms, the b = 0 cell's check."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clipcourse import exercises, siglip, temperature
from clipcourse.exercises import lesson09


def _labels(x):
    return 2 * torch.eye(len(x)) - 1


def _logits(i, t, tau, b):
    return i @ t.T / tau + b


# each failed before this review with the generic "your loss is X; SigLIP's is Y" (or, for the ±1 targets,
# the wrong hint "Check the minus signs")
SLIPS = {
    "targets 0 and 1": lambda i, t, tau, b: F.binary_cross_entropy_with_logits(
        _logits(i, t, tau, b), _labels(i), reduction="sum") / len(i),
    "targets 0 and 1.*averages": lambda i, t, tau, b: F.binary_cross_entropy_with_logits(_logits(i, t, tau, b), _labels(i)),
    "bias is divided by τ": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * ((i @ t.T + b) / tau)).sum() / len(i),
    "exp\\(temperature\\)": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * (i @ t.T * math.exp(tau) + b)).sum() / len(i),
    "after multiplying by the labels": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * (i @ t.T) / tau + b).sum() / len(i),
    "positives are labelled 0": lambda i, t, tau, b: -F.logsigmoid((torch.eye(len(i)) - 1)
                                                                   * _logits(i, t, tau, b)).sum() / len(i),
    "feature size D = 16": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * _logits(i, t, tau, b)).sum() / i.shape[1],
    "half of SigLIP's loss": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * _logits(i, t, tau, b)).sum() / (2 * len(i)),
    "twice SigLIP's loss": lambda i, t, tau, b: -2 * F.logsigmoid(_labels(i) * _logits(i, t, tau, b)).sum() / len(i),
}


@pytest.mark.parametrize("said", SLIPS)
def test_siglip_loss_names_the_slip(said):
    feedback = lesson09.check_siglip_loss(SLIPS[said])
    assert feedback.passed is False
    assert re.search(said, feedback.message), feedback.message
    assert "minus sign" not in feedback.hint, feedback.hint


def test_the_mean_over_all_pairs_hint_says_how_with_binary_cross_entropy():
    wrong = lambda i, t, tau, b: F.binary_cross_entropy_with_logits(_logits(i, t, tau, b), torch.eye(len(i)))  # noqa: E731
    feedback = lesson09.check_siglip_loss(wrong)
    assert feedback.passed is False and "averaged over all B²" in feedback.message
    assert "reduction='sum'" in feedback.hint, feedback.hint


RIGHT_FORMS = {
    "binary_cross_entropy_with_logits, 0/1 targets": lambda i, t, tau, b: F.binary_cross_entropy_with_logits(
        _logits(i, t, tau, b), torch.eye(len(i)), reduction="sum") / len(i),
    "softplus": lambda i, t, tau, b: F.softplus(-_labels(i) * _logits(i, t, tau, b)).sum() / len(i),
    "text @ image.T (the same sum)": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * (t @ i.T / tau + b)).sum() / len(i),
    "log of sigmoid": lambda i, t, tau, b: -torch.log(torch.sigmoid(_labels(i) * _logits(i, t, tau, b))).sum() / len(i),
    "mean per row, summed": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * _logits(i, t, tau, b)).mean(dim=1).sum(),
    "positives and negatives apart": lambda i, t, tau, b: -(
        F.logsigmoid(_logits(i, t, tau, b)) * torch.eye(len(i))
        + F.logsigmoid(-_logits(i, t, tau, b)) * (1 - torch.eye(len(i)))).sum() / len(i),
    "float64": lambda i, t, tau, b: -F.logsigmoid(_labels(i).double() * (i.double() @ t.double().T / tau + b)).sum() / len(i),
}


@pytest.mark.parametrize("name", RIGHT_FORMS)
def test_siglip_loss_accepts_right_answers_in_other_forms(name):
    feedback = lesson09.check_siglip_loss(RIGHT_FORMS[name])
    assert feedback.passed is True, feedback.message


def test_the_slips_give_distinct_values_on_the_checkers_batch():
    # a slip whose value equalled another's (or the right one) would be named wrongly or never
    img, txt = lesson09._features(6, 16, seed=0)
    values = [v.item() for v, _, _ in lesson09._mistakes(img, txt, 0.1, -2.0)]
    want = lesson09.siglip_loss(img, txt, 0.1, -2.0).item()
    for k, a in enumerate(values):
        assert not math.isclose(a, want, rel_tol=1e-3), k
        assert not any(math.isclose(a, b, rel_tol=1e-3) for b in values[k + 1:]), k


@pytest.mark.parametrize("answer, said", [
    (1 / 31, "odds"),                                   # forgot the log
    (math.log(1 / 1023), "B² = 1,024 pairs"),           # one positive among all B² pairs
    (math.log(1 / 1024), "B² = 1,024 pairs"),
    (-3.4, "rounded"),                                  # typed, one decimal
])
def test_bias_start_names_the_slip(answer, said):
    feedback = lesson09.check_bias_start(answer)
    assert feedback.passed is False and said in feedback.message, feedback.message


@pytest.mark.parametrize("answer", [math.log(1 / 31), -math.log(31), math.log((1 / 32) / (31 / 32)), -3.434, -3.43,
                                    torch.logit(torch.tensor(1 / 32, dtype=torch.float64))])
def test_bias_start_accepts_right_answers(answer):
    assert lesson09.check_bias_start(answer).passed is True


def _cell(marker):
    path = next((Path(__file__).resolve().parents[1] / "notebooks").glob("09_*.ipynb"))
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    [src] = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and marker in "".join(c["source"])]
    return src


def _summary(zero_tau):
    entry = dict(loss="siglip", batch_size=32, steps=64, n_seeds=2, train_combo_acc_mean=0.1, train_combo_acc_std=0.01)
    return [dict(entry, logit_bias=-10.0, final_tau_mean=0.05, final_bias_mean=-9.0),
            dict(entry, logit_bias=0.0, final_tau_mean=zero_tau, final_bias_mean=-1.3)]


def test_the_b0_cell_checks_that_t_shrank_from_its_start(capsys):
    # the prose says t shrank from b = 0; the cell only compared it with the run from -10, which can end lower
    # still: t = 1/0.09 ≈ 11 (grown from 10) passed the old checks
    src = _cell('siglip.pick(summary, "siglip", BATCHES[1], 0.0)')
    names = dict(siglip=siglip, exercises=exercises, temperature=temperature, BATCHES=(8, 32, 128))
    exec(src, dict(names, summary=_summary(0.381)))                    # the stored run: t = 2.6
    with pytest.raises(AssertionError, match="t shrank"):
        exec(src, dict(names, summary=_summary(0.09)))
