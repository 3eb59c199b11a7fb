"""Lesson 09's checkers: the right answers pass, the usual wrong ones are named, learner code never crashes them."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipcourse.exercises import lesson09


def right(image_features, text_features, temperature, bias):
    logits = image_features @ text_features.T / temperature + bias
    labels = 2 * torch.eye(len(logits)) - 1
    return -F.logsigmoid(labels * logits).sum() / len(logits)


def _labels(x):
    return 2 * torch.eye(len(x)) - 1


WRONG_LOSSES = {
    "bias is missing": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * (i @ t.T / tau)).sum() / len(i),
    "subtracted": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * (i @ t.T / tau - b)).sum() / len(i),
    "multiplied by τ": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * (i @ t.T * tau + b)).sum() / len(i),
    "labelled \\+1": lambda i, t, tau, b: -F.logsigmoid(i @ t.T / tau + b).sum() / len(i),
    "only the positives": lambda i, t, tau, b: -F.logsigmoid((i @ t.T / tau + b).diagonal()).sum() / len(i),
    "labels 0/1": lambda i, t, tau, b: -F.logsigmoid(torch.eye(len(i)) * (i @ t.T / tau + b)).sum() / len(i),
    "averaged over all B²": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * (i @ t.T / tau + b)).mean(),
    "without dividing by B": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * (i @ t.T / tau + b)).sum(),
    # 1 - 2 * eye: the same value as flipped logits, so the message must name both
    "labels|flipped labels": lambda i, t, tau, b: -F.logsigmoid(-_labels(i) * (i @ t.T / tau + b)).sum() / len(i),
    "logits|flipped logits": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * -(i @ t.T / tau + b)).sum() / len(i),
    "CLIP's softmax": lambda i, t, tau, b: (F.cross_entropy(i @ t.T / tau + b, torch.arange(len(i)))
                                             + F.cross_entropy((i @ t.T / tau + b).T, torch.arange(len(i)))) / 2,
    "hard-coded|batch of 9": lambda i, t, tau, b: -F.logsigmoid((2 * torch.eye(6) - 1)[:len(i), :len(i)]
                                                                * (i @ t.T / 0.1 - 2.0)).sum() / len(i),
    "not a tensor": lambda i, t, tau, b: right(i, t, tau, b).item(),
    "shape \\(6, 6\\)": lambda i, t, tau, b: -F.logsigmoid(_labels(i) * (i @ t.T / tau + b)),
    "raised": lambda i, t, tau, b: i @ t,
    # the right value, cut off from autograd: nothing would train
    "no gradient flows": lambda i, t, tau, b: right(i, t, tau, b).detach(),
    "no gradient flows|detached logits": lambda i, t, tau, b: -F.logsigmoid(
        _labels(i) * (i @ t.T / tau + b).detach()).sum() / len(i),
    "no gradient reaches the text": lambda i, t, tau, b: right(i, t.detach(), tau, b),
    "gradient is not": lambda i, t, tau, b: (right(i, t, tau, b) + right(i, t, tau, b).detach()) / 2,   # half of it
}


def test_siglip_loss_right_answer_passes():
    assert lesson09.check_siglip_loss(right).passed is True


def test_siglip_loss_not_attempted():
    assert lesson09.check_siglip_loss(None).passed is None
    assert lesson09.check_siglip_loss(lambda *a: None).passed is None


@pytest.mark.parametrize("name", WRONG_LOSSES)
def test_siglip_loss_wrong_answers_are_named(name):
    feedback = lesson09.check_siglip_loss(WRONG_LOSSES[name])
    assert feedback.passed is False
    assert any(__import__("re").search(p, feedback.message) for p in name.split("|")), feedback.message


def test_bias_start():
    assert lesson09.check_bias_start(None).passed is None
    assert lesson09.check_bias_start(math.log(1 / 31)).passed is True
    assert lesson09.check_bias_start(torch.tensor(math.log(1 / 31))).passed is True
    cases = {math.log(1 / 32): "log-probability", -math.log(1 / 31): "wrong sign", 1 / 32: "probability",
             -10.0: "paper", math.log10(1 / 31): "log10", "-3.43": "string", float("nan"): "not finite",
             -1e6: "not 1/32", 2.0: "not 1/32"}
    for answer, said in cases.items():
        feedback = lesson09.check_bias_start(answer)
        assert feedback.passed is False and said in feedback.message, (answer, feedback.message)


def _lesson09_cell(marker):
    import json
    from pathlib import Path

    path = next((Path(__file__).resolve().parents[1] / "notebooks").glob("09_*.ipynb"))
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    [src] = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and marker in "".join(c["source"])]
    return src


@pytest.mark.parametrize("turns, below", [({8: 0.14, 32: 0.15, 128: 0.11}, []),
                                          ({8: 0.14, 32: 0.15, 128: 0.04}, [128]),
                                          ({8: 0.05, 32: 0.03, 128: 0.0}, [8, 32, 128])])
def test_turn_count_reads_each_batch_against_the_noise_ceiling(turns, below, capsys):
    # τ turning well below what pure noise gives means its steps kept their direction: a hint of signal, not
    # "the count cannot tell noise from signal" (batch 128 has 16 steps: one turn less on another computer)
    from clipcourse import exercises
    exec(_lesson09_cell("math.acos(0.9)"), {"math": math, "exercises": exercises, "BATCHES": (8, 32, 128),
                                            "PAIRS": 2048, "turns": turns})
    lines = capsys.readouterr().out.splitlines()
    said_below = [line for line in lines if "well below" in line]
    said_near = [line for line in lines if "cannot tell" in line]
    if below:
        [line] = said_below
        assert all(str(b) in line for b in below) and "cannot tell" not in line, lines
    else:
        assert not said_below, lines
    near = [b for b in (8, 32, 128) if b not in below]
    assert bool(said_near) == bool(near), lines
    assert not said_near or all(str(b) in said_near[0] for b in near), lines
