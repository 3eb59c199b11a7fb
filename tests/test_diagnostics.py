"""clipcourse.diagnostics (lesson 12) against hand computations, its refusals of bad input, the sweep's
kept features, and the lesson's exercise checkers on learner-style wrong answers."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipcourse import diagnostics, experiments
from clipcourse import temperature_maths as tm
from clipcourse.exercises import lesson12


def _pairs(n=16, dim=8, seed=0, shift=1.0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, dim, generator=g, dtype=torch.float64)
    lean = torch.zeros(dim, dtype=torch.float64)
    lean[0] = shift
    img = F.normalize(base + lean, dim=-1)
    txt = F.normalize(base - lean + 0.3 * torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
    return img, txt


def test_modality_gap_is_the_distance_between_centroids():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    gap = diagnostics.modality_gap(img, txt)
    assert gap.distance == pytest.approx(math.sqrt(2))              # centroids (.5, .5) and (-.5, -.5)
    assert torch.allclose(gap.vector, torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert diagnostics.modality_gap(img, img).distance == 0.0
    assert "1.414" in str(gap)


def test_modality_gap_takes_sets_of_different_sizes_and_numpy():
    img, txt = _pairs()
    gap = diagnostics.modality_gap(img.numpy(), txt[:5].numpy())
    assert gap.distance == pytest.approx(float((img.mean(0) - txt[:5].mean(0)).norm()))


def test_cone_cosine_is_the_mean_off_diagonal_cosine():
    img, _ = _pairs(n=10)
    sims = img @ img.T
    by_hand = sims[~torch.eye(10, dtype=torch.bool)].mean()
    assert diagnostics.cone_cosine(img) == pytest.approx(float(by_hand), rel=1e-12)
    same = F.normalize(torch.ones(4, 3), dim=-1)
    assert diagnostics.cone_cosine(same) == pytest.approx(1.0)


def test_shift_along_moves_and_renormalises():
    img, txt = _pairs()
    gap = diagnostics.modality_gap(img, txt)
    moved = diagnostics.shift_along(img, gap.vector, -0.5)
    assert torch.allclose(moved, F.normalize(img - 0.5 * gap.vector, dim=-1))
    assert torch.allclose(moved.norm(dim=1), torch.ones(len(img), dtype=torch.float64))
    assert diagnostics.modality_gap(moved, txt).distance < gap.distance
    assert torch.allclose(diagnostics.shift_along(img, gap.vector, 0.0), img)
    with pytest.raises(ValueError, match="vector must be a tensor of shape \\(8,\\)"):
        diagnostics.shift_along(img, gap.vector[:3], 1.0)
    with pytest.raises(TypeError, match="amount"):
        diagnostics.shift_along(img, gap.vector, "half")
    unit = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="origin"):
        diagnostics.shift_along(unit, torch.tensor([1.0, 0.0]), -1.0)


def test_diagnose_matches_hand_computations():
    img, txt = _pairs(n=12)
    tau = 0.1
    report = diagnostics.diagnose(img, txt, tau=tau, k=4)
    sims = img @ txt.T
    p = torch.softmax(sims / tau, dim=1)
    h = -(p * p.log()).sum(dim=1)
    assert report.n == 12 and report.dim == 8 and report.tau == tau
    assert report.mean_entropy == pytest.approx(float(h.mean()), rel=1e-10)
    assert report.effective_negatives == pytest.approx(float(h.exp().mean()), rel=1e-10)
    assert report.loss_at_tau == pytest.approx(tm.loss_at(img, txt, tau), rel=1e-12)
    labels = torch.arange(12)
    by_hand = (F.cross_entropy(sims / tau, labels) + F.cross_entropy(sims.T / tau, labels)) / 2
    assert report.loss_at_tau == pytest.approx(float(by_hand), rel=1e-10)
    # the loss-optimal τ: no τ on a fine grid does better
    grid = torch.logspace(-3, 1, 400, dtype=torch.float64)
    assert report.loss_at_optimum <= min(tm.loss_at(img, txt, float(t)) for t in grid) + 1e-9
    assert report.matched == pytest.approx(float((sims.argmax(1) == labels).double().mean()))   # no ties here
    assert report.gap == pytest.approx(diagnostics.modality_gap(img, txt).distance)
    # hardest negatives: every off-diagonal pair, sorted
    pairs = sorted(((float(sims[i, j]), i, j) for i in range(12) for j in range(12) if i != j), reverse=True)[:4]
    assert [(x.image, x.text) for x in report.hardest] == [(i, j) for _, i, j in pairs]
    assert [x.similarity for x in report.hardest] == pytest.approx([s for s, _, _ in pairs])
    assert all(x.positive == pytest.approx(float(sims[x.image, x.image])) for x in report.hardest)
    text = str(report)
    assert "loss-optimal τ" in text and "hardest negatives" in text and "effective negatives" in text


def test_hardest_negatives_flag_those_above_and_tied_with_the_match():
    sims = torch.tensor([[0.5, 0.9, 0.1], [0.2, 0.8, 0.3], [0.4, 0.6, 0.6]], dtype=torch.float64)
    hardest = diagnostics.hardest_negatives(sims, k=6)
    assert [(h.image, h.text) for h in hardest] == [(0, 1), (2, 1), (2, 0), (1, 2), (1, 0), (0, 2)]
    verdicts = {(h.image, h.text): h.verdict for h in hardest}
    assert verdicts[(0, 1)] == "ranked above the match"
    assert verdicts[(2, 1)] == "tied with the match"
    assert verdicts[(1, 2)] == ""
    img = torch.eye(3, dtype=torch.float64)
    txt = torch.stack([img[1], img[1], img[2]])        # caption 0 is caption 1: image 1 ties with its match
    report = diagnostics.diagnose(img, txt, tau=0.1, k=6)
    assert "tied with the match" in str(report)
    # image 1's own caption ties with caption 0, its identical twin: on top, not a miss (argmax said 2/3);
    # image 0 meets only zeros, a tie with every caption, so it counts too
    assert report.matched == 1.0
    txt = torch.stack([img[1], img[0], img[2]])        # captions 0 and 1 swapped: two clear misses
    assert diagnostics.diagnose(img, txt, tau=0.1).matched == pytest.approx(1 / 3)


def test_diagnose_reports_an_optimum_at_the_edge():
    img = torch.eye(4, dtype=torch.float64)
    report = diagnostics.diagnose(img, img.clone(), k=0)   # perfectly separated: the loss keeps falling as τ → 0
    assert report.optimal_tau == pytest.approx(tm.TAU_RANGE[0])
    assert report.at_optimum_edge and "an end of the searched range" in str(report)
    assert report.hardest == ()


@pytest.mark.parametrize("image, text, error, match", [
    ([[1.0, 0.0]], None, TypeError, "image_features must be a torch tensor"),
    (torch.ones(3, 2, dtype=torch.long), None, TypeError, "image_features must hold real floating-point"),
    (torch.ones(3), None, ValueError, r"image_features must have shape \(N, D\)"),
    (F.normalize(torch.ones(1, 4), dim=-1), None, ValueError, "at least 2 embeddings"),
    (torch.ones(3, 4), None, ValueError, "image_features is not L2-normalised: row 0 has length 2"),
    (None, torch.ones(3, 4), ValueError, "text_features is not L2-normalised"),
    (torch.full((3, 4), math.nan), None, ValueError, "image_features holds NaN or infinity .first in row 0"),
    (F.normalize(torch.ones(3, 5), dim=-1), None, ValueError, "widths differ .5 and 4."),
    (F.normalize(torch.ones(2, 4), dim=-1), None, ValueError, "must be pairs"),
])
def test_diagnose_refuses_bad_input_naming_the_argument(image, text, error, match):
    good = F.normalize(torch.ones(3, 4), dim=-1)
    with pytest.raises(error, match=match):
        diagnostics.diagnose(good if image is None else image, good if text is None else text)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(tau=0.0), ValueError, "tau must be a finite number > 0"),
    (dict(tau=math.inf), ValueError, "tau must be a finite number > 0"),
    (dict(tau="0.07"), TypeError, "tau must be a number"),
    (dict(k=-1), ValueError, "k .how many hardest negatives."),
])
def test_diagnose_refuses_bad_settings(kwargs, error, match):
    img, txt = _pairs(n=4)
    with pytest.raises(error, match=match):
        diagnostics.diagnose(img, txt, **kwargs)


def test_sweep_keeps_features_only_when_asked():
    common = dict(steps=2, n_train=64, batch_size=32, n_heldout=41, learnable=False, workers=1, threads=1,
                  precision="float32")
    plain = experiments.sweep([0.1], [0], **common)[0]
    kept = experiments.sweep([0.1], [0], **common, keep_features=True)[0]
    assert "features" not in plain
    f = kept.pop("features")
    assert plain["heldout_acc"] == kept["heldout_acc"] and plain["final_loss"] == kept["final_loss"]
    assert f["image"].shape == f["text"].shape == f["image_init"].shape == (41, 64)
    assert f["classes"].shape == (48, 64) and f["labels"].shape == (41,) and len(f["captions"]) == 41
    assert isinstance(f["image"], np.ndarray)
    assert diagnostics.modality_gap(f["image_init"], f["text_init"]).distance > 0.5   # the cone effect
    acc = (torch.as_tensor(f["image"]) @ torch.as_tensor(f["classes"]).T).argmax(1) == torch.as_tensor(f["labels"])
    assert float(acc.float().mean()) == pytest.approx(kept["heldout_acc"])


# --- the lesson's exercise checkers --------------------------------------------------------------

def _gap_answers():
    img, txt = lesson12.exercise_features()
    ci, ct = img.mean(0), txt.mean(0)
    return img, txt, ci, ct


def test_check_modality_gap_accepts_the_answer_in_any_number_type():
    img, txt, ci, ct = _gap_answers()
    for answer in ((ci - ct).norm(), (ci - ct).norm().item(), np.float64((ci - ct).norm().item()),
                   torch.linalg.norm(ci.float() - ct.float())):
        assert lesson12.check_modality_gap(answer).passed, answer
    assert lesson12.check_modality_gap(None).passed is None


@pytest.mark.parametrize("make, says", [
    (lambda img, txt, ci, ct: (ci - ct).norm() ** 2, "squared distance"),
    (lambda img, txt, ci, ct: (img - txt).norm(dim=1).mean(), "each image and its own caption"),
    (lambda img, txt, ci, ct: (img - txt).norm(dim=1).square().mean(), "mean squared distance"),
    (lambda img, txt, ci, ct: (F.normalize(ci, dim=0) - F.normalize(ct, dim=0)).norm(), "normalised the centroids"),
    (lambda img, txt, ci, ct: (img.mean(1) - txt.mean(1)).norm(), "dim=1"),
    (lambda img, txt, ci, ct: (img.sum(0) - txt.sum(0)).norm(), "summed"),
    (lambda img, txt, ci, ct: F.cosine_similarity(ci, ct, dim=0), "cosine between the two centroids"),
    (lambda img, txt, ci, ct: 1 - F.cosine_similarity(ci, ct, dim=0), "cosine distance"),
    (lambda img, txt, ci, ct: (img @ txt.T).mean(), "mean cosine similarity"),
    (lambda img, txt, ci, ct: (ci - ct).abs().sum(), "L1"),
    (lambda img, txt, ci, ct: ci - ct, "gap \\*vector\\*"),
    (lambda img, txt, ci, ct: ct - ci, "gap \\*vector\\*"),
    (lambda img, txt, ci, ct: ci, "tensor of 8 numbers"),
    (lambda img, txt, ci, ct: (img - txt).norm(dim=1), "one per pair"),
    (lambda img, txt, ci, ct: -(ci - ct).norm(), "cannot be negative"),
    (lambda img, txt, ci, ct: str(float((ci - ct).norm())), "string"),
    (lambda img, txt, ci, ct: [float((ci - ct).norm())], "got a list"),
    (lambda img, txt, ci, ct: math.nan, "NaN|nan"),
    (lambda img, txt, ci, ct: 0.3, "not the distance between the centroids"),
])
def test_check_modality_gap_names_the_mistake(make, says):
    feedback = lesson12.check_modality_gap(make(*_gap_answers()))
    assert feedback.passed is False
    assert re.search(says, str(feedback)), str(feedback)


def _right(sims):
    return sims.masked_fill(torch.eye(len(sims), dtype=torch.bool), float("-inf")).argmax(dim=1)


def test_check_hardest_negative_accepts_right_answers():
    def with_max(sims):
        return (sims - 10 * torch.eye(len(sims), dtype=sims.dtype)).max(dim=1).indices   # a large enough penalty

    def as_list(sims):
        return _right(sims).tolist()

    for answer in (_right, with_max, as_list):
        assert lesson12.check_hardest_negative(answer).passed, answer.__name__
    assert lesson12.check_hardest_negative(None).passed is None


def _zeroed(sims):
    s = sims.clone()
    s.fill_diagonal_(0)
    return s.argmax(dim=1)


def _in_place(sims):
    sims.fill_diagonal_(-math.inf)
    return sims.argmax(dim=1)


@pytest.mark.parametrize("answer, says", [
    (_zeroed, "set the positives to 0"),
    (lambda s: (s - torch.eye(len(s), dtype=s.dtype)).argmax(dim=1), "subtracted 1 from the positives"),  # once accepted
    (_in_place, "changed the similarity matrix"),
    (lambda s: s.argmax(dim=1), "own caption"),
    (lambda s: _right(s.T), "dim=0"),
    (lambda s: s.masked_fill(torch.eye(len(s), dtype=torch.bool), math.inf).argmin(dim=1), "least"),
    (lambda s: s.masked_fill(torch.eye(len(s), dtype=torch.bool), -math.inf).max(dim=1).values, "similarities"),
    (lambda s: s.masked_fill(torch.eye(len(s), dtype=torch.bool), -math.inf).max(dim=1), "values, indices"),
    (lambda s: s.masked_fill(torch.eye(6, dtype=torch.bool), -math.inf).argmax(dim=1), "batch size written"),
    (lambda s: s.masked_fill(torch.eye(len(s), dtype=torch.bool), -math.inf).argmax(dim=1, keepdim=True), "shape"),
    (lambda s: torch.arange(len(s)), "own caption"),
    (lambda s: (torch.arange(len(s)) + 1) % len(s), "hardest negative is column"),
    (lambda s: None, "NoneType"),
    (lambda s: undefined_name, "not defined"),       # noqa: F821
    (42, "expected a function"),
])
def test_check_hardest_negative_names_the_mistake(answer, says):
    feedback = lesson12.check_hardest_negative(answer)
    assert feedback.passed is False
    assert says in str(feedback), str(feedback)


def test_diagnose_takes_bfloat16_embeddings_normalised_in_bfloat16():
    """A review found bfloat16 features refused ("row 23 has length 1.001 ... Normalise each embedding first"),
    advice that cannot help: bfloat16 rounds a length of 1 by up to 2⁻⁷."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(64, 32, generator=g), dim=-1).bfloat16()
    assert ((x.double().norm(dim=-1) - 1).abs() > diagnostics.NORM_TOLERANCE).any()    # the case itself
    report = diagnostics.diagnose(x, x, k=0)
    assert report.matched == 1.0 and report.tied_at_top == 1.0
    with pytest.raises(ValueError, match="image_features is not L2-normalised"):
        diagnostics.diagnose(x * 1.05, x, k=0)                                          # 5 % off is still refused


def test_diagnose_names_a_collapsed_text_tower_instead_of_a_perfect_match():
    """Every caption with one embedding ties every image's top: 'own caption on top 100 %' alone would read as
    perfect. The report counts the ties and names the collapse."""
    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(1, 16, generator=g), dim=-1).expand(40, 16)
    report = diagnostics.diagnose(img, txt, k=0)
    assert report.matched == 1.0 and report.tied_at_top == 40.0
    assert "40 captions tie at the top on average: the text features hardly differ" in str(report)
    pairs = diagnostics.diagnose(img, img, k=0)                                          # distinct captions
    assert pairs.tied_at_top == 1.0 and "tie at the top" not in str(pairs)


def test_hardest_negatives_name_a_repeated_caption_once_per_image():
    """ShapesWorld repeats captions: three copies of one caption must not fill three of an image's k places."""
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    txt[3] = txt[4] = txt[5] = F.normalize(img[0] + 0.1 * txt[3], dim=-1)    # one caption, three times, close to img 0
    hardest = diagnostics.hardest_negatives(img @ txt.T, k=3)
    first = hardest[0]
    assert first.image == 0 and first.text in (3, 4, 5) and sorted((first.text, *first.copies)) == [3, 4, 5]
    assert not any(h.image == 0 and h.text in (3, 4, 5) for h in hardest[1:])   # was: (0, 3), (0, 4), (0, 5)
    assert all(h.copies == () or h.text in (3, 4, 5) for h in hardest)
    report = diagnostics.diagnose(img, txt, k=3)
    assert "(the same caption 2 more times)" in str(report)
