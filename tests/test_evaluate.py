"""Evaluation: retrieval recall@k, zero-shot accuracy and prompt ensembling, alignment, uniformity."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipcourse import data, evaluate
from clipcourse.model import build_model
from clipcourse.text import Tokenizer


def random_unit(n, d, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


# --- retrieval recall ----------------------------------------------------------------------------

def test_recall_of_identical_features_is_one():
    x = random_unit(50, 16)
    recall = evaluate.retrieval_recall(x, x.clone())
    assert set(recall) == {f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)}
    assert all(v == 1.0 for v in recall.values())


def test_recall_of_a_shifted_pairing():
    # text i is mostly image i+1: every true partner is beaten by exactly one candidate
    n = 12
    img = torch.eye(n)
    txt = 0.9 * img.roll(-1, dims=0) + 0.1 * img
    recall = evaluate.retrieval_recall(img, txt, ks=(1, 2, 5))
    assert recall == {"image_to_text_R@1": 0.0, "image_to_text_R@2": 1.0, "image_to_text_R@5": 1.0,
                      "text_to_image_R@1": 0.0, "text_to_image_R@2": 1.0, "text_to_image_R@5": 1.0}


def test_recall_of_a_permutation_with_fixed_points():
    n = 10
    perm = torch.tensor([0, 1, 2, 3, 5, 4, 7, 6, 9, 8])  # four pairs kept, six swapped
    img = torch.eye(n)
    txt = 0.9 * img[perm] + 0.1 * img      # swapped partners still score above the rest: no ties
    recall = evaluate.retrieval_recall(img, txt, ks=(1, 2))
    assert recall["image_to_text_R@1"] == pytest.approx(0.4)
    assert recall["text_to_image_R@1"] == pytest.approx(0.4)
    assert recall["image_to_text_R@2"] == recall["text_to_image_R@2"] == 1.0


def test_recall_at_k_with_known_ranks():
    # images are the basis vectors; text j scores its own image 1 and r_j other images 2,
    # so text j's partner is ranked r_j (0 = first) when retrieving images
    n = 20
    ranks = [j % 12 for j in range(n)]
    txt = torch.zeros(n, n)
    for j, r in enumerate(ranks):
        txt[j, j] = 1.0
        others = [k for k in range(n) if k != j][:r]
        txt[j, others] = 2.0
    txt = F.normalize(txt, dim=-1)
    img = torch.eye(n)
    recall = evaluate.retrieval_recall(img, txt, ks=(1, 5, 10, 20))
    for k in (1, 5, 10, 20):
        assert recall[f"text_to_image_R@{k}"] == pytest.approx(sum(r < k for r in ranks) / n)
    # swapping the roles swaps the directions
    swapped = evaluate.retrieval_recall(txt, img, ks=(1, 5, 10, 20))
    for k in (1, 5, 10, 20):
        assert swapped[f"image_to_text_R@{k}"] == recall[f"text_to_image_R@{k}"]
        assert swapped[f"text_to_image_R@{k}"] == recall[f"image_to_text_R@{k}"]


def test_recall_grows_with_k():
    img, txt = random_unit(64, 8, seed=1), random_unit(64, 8, seed=2)
    recall = evaluate.retrieval_recall(img, txt, ks=(1, 5, 10, 64))
    for d in ("image_to_text", "text_to_image"):
        values = [recall[f"{d}_R@{k}"] for k in (1, 5, 10, 64)]
        assert values == sorted(values)
        assert values[-1] == 1.0
        assert values[0] < 0.2  # random pairs: about chance
    # paired noisy copies do much better
    noisy = F.normalize(img + 0.3 * random_unit(64, 8, seed=3), dim=-1)
    assert evaluate.retrieval_recall(img, noisy)["image_to_text_R@1"] > 0.5


def test_recall_rejects_unpaired_features():
    with pytest.raises(ValueError, match="paired"):
        evaluate.retrieval_recall(random_unit(5, 8), random_unit(6, 8))


def test_collapsed_features_do_not_get_perfect_recall():
    img = random_unit(20, 8)
    txt = random_unit(1, 8).expand(20, 8)  # a text encoder that ignores its input
    assert evaluate.retrieval_recall(img, txt)["image_to_text_R@1"] < 0.5


# --- zero-shot -----------------------------------------------------------------------------------

def test_zero_shot_accuracy_on_constructed_features():
    classes = torch.eye(4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    images = F.normalize(classes[labels] + 0.1 * random_unit(8, 4), dim=-1)
    assert evaluate.zero_shot_accuracy(images, classes, labels) == 1.0
    wrong = labels.clone()
    wrong[:3] = (wrong[:3] + 1) % 4
    assert evaluate.zero_shot_accuracy(images, classes, wrong) == pytest.approx(5 / 8)
    assert torch.equal(evaluate.zero_shot_predict(images, classes), labels)


def test_zero_shot_accuracy_checks_lengths():
    with pytest.raises(ValueError, match="labels"):
        evaluate.zero_shot_accuracy(random_unit(5, 4), torch.eye(4), torch.zeros(4, dtype=torch.long))


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, seed=0).eval()


def test_zero_shot_classifier_with_one_template_is_the_prompt_embedding(model, tok):
    names = ["red circle", "orange ring", "blue square"]
    classes = evaluate.zero_shot_classifier(model, tok, names)
    expected = evaluate.embed_texts(model, tok(["a red circle", "an orange ring", "a blue square"]))
    assert classes.shape == (3, model.cfg.embed_dim)
    torch.testing.assert_close(classes, expected)


def test_prompt_ensembling_averages_and_renormalises(model, tok):
    templates = ("a {}", "a picture of a {}", "there is a large {}")
    names = ["green cross", "orange diamond"]
    classes = evaluate.zero_shot_classifier(model, tok, names, templates)
    torch.testing.assert_close(classes.norm(dim=1), torch.ones(2))
    for name, row in zip(names, classes):
        prompts = [t.format(name).replace("a orange", "an orange") for t in templates]
        each = evaluate.embed_texts(model, tok(prompts))
        mean = each.mean(0)
        assert mean.norm() < 0.999  # the average of different unit vectors is shorter...
        torch.testing.assert_close(row, mean / mean.norm())  # ...and is renormalised


def test_embed_images_matches_encode_image_and_restores_mode(tok, tiny_world):
    model = build_model(tok, seed=0).train()
    features = evaluate.embed_images(model, tiny_world.images, batch_size=10)
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = model.encode_image(data.to_float(tiny_world.images))
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    assert not features.requires_grad
    texts = evaluate.embed_texts(model, tok(tiny_world.captions), batch_size=7)
    with torch.no_grad():
        torch.testing.assert_close(texts, model.encode_text(tok(tiny_world.captions)), rtol=1e-4, atol=1e-5)


# --- alignment and uniformity (Wang & Isola) --------------------------------------------------------

def test_alignment_of_identical_features_is_zero():
    x = random_unit(30, 8)
    assert evaluate.alignment(x, x) == 0.0


def test_alignment_of_opposite_features():
    x = random_unit(30, 8)
    assert evaluate.alignment(x, -x) == pytest.approx(4.0)           # ||2 x||^2
    assert evaluate.alignment(x, -x, alpha=1.0) == pytest.approx(2.0)


def test_alignment_of_orthogonal_features():
    assert evaluate.alignment(torch.eye(4)[:2], torch.eye(4)[2:]) == pytest.approx(2.0)


@pytest.mark.parametrize("t", [1.0, 2.0, 3.0])
def test_uniformity_of_two_antipodal_points(t):
    x = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    assert evaluate.uniformity(x, t=t) == pytest.approx(math.log(math.exp(-t * 4.0)))  # = -4t


def test_uniformity_of_an_orthonormal_set():
    # every pair at squared distance 2
    assert evaluate.uniformity(torch.eye(5)) == pytest.approx(-4.0)


def test_uniformity_is_lower_for_spread_points_than_clustered_ones():
    spread = random_unit(200, 8, seed=0)
    pole = torch.zeros(1, 8)
    pole[0, 0] = 1.0
    clustered = F.normalize(pole + 0.2 * random_unit(200, 8, seed=1), dim=-1)
    collapsed = pole.expand(200, 8)
    u_spread, u_clustered, u_collapsed = (evaluate.uniformity(x) for x in (spread, clustered, collapsed))
    assert u_spread < u_clustered < u_collapsed
    assert u_collapsed == pytest.approx(0.0)


def test_uniformity_needs_two_points():
    with pytest.raises(ValueError, match="at least 2"):
        evaluate.uniformity(random_unit(1, 4))


# --- tolerance (Wang & Liu) ------------------------------------------------------------------------

def _pair_means_by_brute_force(x, labels):
    s = F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).T                 # (N, N) cosines
    same = labels[:, None] == labels[None, :]
    distinct = ~torch.eye(len(x), dtype=torch.bool)
    return s[same & distinct].mean().item(), s[~same].mean().item()


@pytest.mark.parametrize("seed", range(3))
def test_tolerance_is_the_mean_cosine_of_distinct_pictures_of_one_class(seed):
    g = torch.Generator().manual_seed(seed)
    x, labels = 3 * torch.randn(60, 8, generator=g), torch.randint(0, 5, (60,), generator=g)   # not unit length
    same, other = _pair_means_by_brute_force(x, labels)
    assert evaluate.tolerance(x, labels) == pytest.approx(same, abs=1e-6)
    assert evaluate.other_class_similarity(x, labels) == pytest.approx(other, abs=1e-6)


def test_tolerance_of_clusters():
    poles = torch.eye(4)                                                # 4 classes on orthogonal axes
    labels = torch.arange(4).repeat_interleave(10)
    tight = poles[labels]
    assert evaluate.tolerance(tight, labels) == pytest.approx(1.0)      # every picture of a class alike
    assert evaluate.other_class_similarity(tight, labels) == pytest.approx(0.0, abs=1e-12)
    loose = F.normalize(tight + 0.5 * random_unit(40, 4, seed=3), dim=-1)
    assert 0.0 < evaluate.tolerance(loose, labels) < 1.0


def test_tolerance_takes_any_integer_class_ids():
    g = torch.Generator().manual_seed(4)
    x, labels = torch.randn(40, 6, generator=g), torch.randint(0, 4, (40,), generator=g)
    ids = torch.tensor([1, 7, 19, 40])[labels]                          # held-out ids are not 0..C-1
    assert evaluate.tolerance(x, ids) == pytest.approx(evaluate.tolerance(x, labels))
    assert evaluate.other_class_similarity(x, ids.int()) == pytest.approx(evaluate.other_class_similarity(x, labels))


def test_tolerance_and_its_baseline_need_their_own_pairs():
    singletons = evaluate.other_class_similarity(random_unit(5, 3), torch.arange(5))   # no two of one class: fine
    assert singletons == pytest.approx(_pair_means_by_brute_force(random_unit(5, 3), torch.arange(5))[1], abs=1e-6)
    with pytest.raises(ValueError, match="tolerance needs two pictures of one class"):
        evaluate.tolerance(random_unit(5, 3), torch.arange(5))
    with pytest.raises(ValueError, match="other_class_similarity needs pictures of two classes"):
        evaluate.other_class_similarity(random_unit(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="tolerance needs"):
        evaluate.tolerance(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_tolerance_says_what_is_wrong():
    with pytest.raises(ValueError, match=r"tolerance: features must be \(N, D\).*\(5, 3\) and \(4,\)"):
        evaluate.tolerance(torch.randn(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must be integer class ids, got dtype torch.float32"):
        evaluate.other_class_similarity(torch.randn(5, 3), torch.zeros(5))
    with pytest.raises(TypeError, match="takes tensors"):
        evaluate.tolerance(torch.randn(5, 3), [0, 0, 1, 1, 2])


# --- BatchNorm statistics for the current weights (lesson 06) ---------------------------------------

def _batchnorms(m):
    return [x for x in m.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]


def test_recalibrate_batchnorm_computes_exact_statistics_and_leaves_the_model_alone():
    tok = Tokenizer.for_shapesworld()
    m = build_model(tok, seed=0)
    world = data.ShapesWorld.generate(64, seed=0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fresh = evaluate.recalibrate_batchnorm(m, world.images, batch_size=64)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())     # the original is untouched
    assert fresh is not m and fresh.training == m.training
    assert torch.equal(_batchnorms(m.visual)[0].running_mean, torch.zeros(32))        # a new model's, still
    # one batch of all 64 pictures: the first BatchNorm's running mean is that batch's channel mean
    first = _batchnorms(fresh.visual)[0]
    captured = {}
    handle = _batchnorms(m.visual)[0].register_forward_hook(lambda mod, inp, out: captured.update(x=inp[0].clone()))
    m.train()
    with torch.no_grad():
        m.encode_image(data.to_float(world.images))
    handle.remove()
    torch.testing.assert_close(first.running_mean, captured["x"].mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, captured["x"].var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)


def test_recalibrate_batchnorm_restores_accuracy_that_stale_statistics_lost():
    # stale statistics, made on purpose: statistics of other pictures (all black), then the fresh ones
    tok = Tokenizer.for_shapesworld()
    m = build_model(tok, seed=0)
    world = data.ShapesWorld.generate(256, seed=0)
    fresh = evaluate.recalibrate_batchnorm(m, world.images)
    stale = evaluate.recalibrate_batchnorm(m, torch.zeros_like(world.images[:64]))
    f_fresh, f_stale = evaluate.embed_images(fresh, world.images), evaluate.embed_images(stale, world.images)
    again = evaluate.embed_images(evaluate.recalibrate_batchnorm(stale, world.images), world.images)
    assert not torch.allclose(f_fresh, f_stale, atol=1e-3)
    torch.testing.assert_close(again, f_fresh)                  # recalibrating undoes whatever came before


@pytest.mark.parametrize("images, error", [
    (torch.zeros(0, 3, 8, 8, dtype=torch.uint8), ValueError),
    (torch.zeros(4, 8, 8, dtype=torch.uint8), ValueError),
    (torch.zeros(4, 3, 8, 8), TypeError),
    ([1, 2, 3], ValueError),
])
def test_recalibrate_batchnorm_refuses_bad_images(images, error):
    tok = Tokenizer.for_shapesworld()
    with pytest.raises(error, match="images"):
        evaluate.recalibrate_batchnorm(build_model(tok, seed=0), images)


# --- eval mode survives an exception; empty input; bad features, prompts and templates --------------

class _Exploding(torch.nn.Module):
    """A model whose encoders raise: embed_* must still put it back in training mode."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def encode_image(self, images):
        raise RuntimeError("boom")

    encode_text = encode_image


def test_embed_restores_training_mode_when_the_encoder_raises():
    model = _Exploding().train()
    with pytest.raises(RuntimeError, match="boom"):
        evaluate.embed_images(model, torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    assert model.training
    with pytest.raises(RuntimeError, match="boom"):
        evaluate.embed_texts(model, torch.zeros(2, 16, dtype=torch.long))
    assert model.training


def test_embedding_nothing_gives_an_empty_0_by_d_tensor(model, tok):
    empty = evaluate.embed_images(model, torch.zeros(0, 3, 32, 32, dtype=torch.uint8))
    assert empty.shape == (0, model.cfg.embed_dim) and empty.dtype == torch.float32
    assert evaluate.embed_texts(model, tok([])).shape == (0, model.cfg.embed_dim)


@pytest.mark.parametrize("x, y, error, match", [
    (random_unit(4, 8), random_unit(1, 8), ValueError, r"x and y need the same batch size.*\(4, 8\).*\(1, 8\)"),
    (random_unit(4, 8), random_unit(4, 5), ValueError, r"x and y need the same feature size"),
    (random_unit(0, 8), random_unit(0, 8), ValueError, r"empty batch"),
    (10 * random_unit(4, 8), random_unit(4, 8), ValueError, r"x is not L2-normalised: row 0 has length 10"),
    (random_unit(4, 8), random_unit(4, 8).long(), TypeError, r"y must be floating point"),
    (random_unit(4, 8).tolist(), random_unit(4, 8), TypeError, r"x must be a torch.Tensor, got list"),
])
def test_alignment_refuses_mismatched_or_unnormalised_features(x, y, error, match):
    with pytest.raises(error, match=match):
        evaluate.alignment(x, y)


@pytest.mark.parametrize("x, error, match", [
    (10 * random_unit(10, 8), ValueError, r"x is not L2-normalised: row 0 has length 10"),
    (random_unit(10, 8)[:, :0], ValueError, r"x must be \(N, D\) with N >= 2 and D >= 1 .*got shape \(10, 0\)"),
    (random_unit(10, 8)[0], ValueError, r"x must be \(N, D\).*got shape \(8,\)"),
    (torch.full((3, 4), math.nan), ValueError, r"x is not L2-normalised: row 0 has length nan"),
    (random_unit(3, 4).int(), TypeError, r"x must be floating point"),
])
def test_uniformity_refuses_bad_features(x, error, match):
    with pytest.raises(error, match=match):
        evaluate.uniformity(x)


def test_metrics_take_bfloat16_produced_features():
    # autocast's bfloat16 features, cast to float32, are unit length only to about 4e-3
    x = random_unit(50, 64).bfloat16().float()
    assert (x.norm(dim=1) - 1).abs().max() > 1e-4
    assert evaluate.alignment(x, x) == 0.0
    assert math.isfinite(evaluate.uniformity(x))
    assert evaluate.zero_shot_accuracy(x, x[:10], torch.arange(50) % 10) >= 0.0


def test_zero_shot_accuracy_casts_float64_features():
    classes = torch.eye(4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    images = F.normalize(classes[labels] + 0.1 * random_unit(8, 4), dim=-1)
    assert evaluate.zero_shot_accuracy(images.double(), classes, labels) == 1.0
    assert evaluate.zero_shot_accuracy(images, classes.double(), labels) == 1.0


@pytest.mark.parametrize("images, classes, labels, error, match", [
    (random_unit(5, 4), random_unit(3, 6), torch.zeros(5, dtype=torch.long), ValueError,
     r"image_features \(5, 4\) and class_embeddings \(3, 6\) must have the same width"),
    (random_unit(5, 4), 3 * random_unit(3, 4), torch.zeros(5, dtype=torch.long), ValueError,
     r"class_embeddings is not L2-normalised"),
    (random_unit(5, 4), random_unit(3, 4), torch.zeros(5), TypeError, r"labels must be integer class ids"),
    (random_unit(0, 4), random_unit(3, 4), torch.zeros(0, dtype=torch.long), ValueError,
     r"image_features must be \(N, D\) with N >= 1"),
])
def test_zero_shot_accuracy_refuses_bad_input(images, classes, labels, error, match):
    with pytest.raises(error, match=match):
        evaluate.zero_shot_accuracy(images, classes, labels)


@pytest.mark.parametrize("templates, match", [
    (("a picture",), r"each template needs exactly one '\{\}' for the class name, got 'a picture'"),
    (("a {} {}",), r"exactly one '\{\}'.*got 'a \{\} \{\}'"),
    (("a {color} {shape}",), r"got 'a \{color\} \{shape\}'.*named fields.*PROMPT_TEMPLATE"),
    ("a {}", r"templates must be a sequence of strings such as \('a \{\}',\), got the string 'a \{\}'"),
    ((), r"templates is empty"),
])
def test_zero_shot_classifier_refuses_templates_without_one_slot(model, tok, templates, match):
    with pytest.raises(ValueError, match=match):
        evaluate.zero_shot_classifier(model, tok, ["red circle"], templates)


def test_recall_of_no_pairs_is_an_error_not_nan():
    with pytest.raises(ValueError, match=r"recall of no pairs.*\(0, 8\)"):
        evaluate.retrieval_recall(random_unit(0, 8), random_unit(0, 8))


# --- the linear probe (lesson 11) ------------------------------------------------------------------

def test_linear_probe_reads_a_label_the_features_hold_and_not_one_they_do_not():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 8, (600,), generator=g)
    held = F.one_hot(labels, 8).float() + 0.15 * torch.randn(600, 8, generator=g)       # (600, 8): the label, noisy
    features = torch.cat([held, torch.randn(600, 24, generator=g)], dim=1)              # (600, 32) and noise
    assert evaluate.linear_probe(features, labels) > 0.95
    unrelated = torch.randint(0, 8, (600,), generator=g)                                # a label they do not hold
    assert abs(evaluate.linear_probe(features, unrelated) - 1 / 8) < 0.06
    # fitted on the first half only: labels that flip meaning in the second half cannot be read there
    flipped = torch.cat([labels[:300], (labels[300:] + 1) % 8])
    assert evaluate.linear_probe(features, flipped) < 0.05


def test_linear_probe_refuses_bad_input():
    x, y = torch.randn(10, 4), torch.arange(10) % 2
    with pytest.raises(ValueError, match=r"features must be \(N, D\) and labels \(N,\), got \(10, 4\) and \(9,\)"):
        evaluate.linear_probe(x, y[:9])
    with pytest.raises(TypeError, match="labels must be integer class ids"):
        evaluate.linear_probe(x, y.float())
    with pytest.raises(ValueError, match="features must be finite"):
        evaluate.linear_probe(torch.full_like(x, float("nan")), y)
    with pytest.raises(ValueError, match="fit_fraction must leave rows to fit and rows to score, got 1.0 of 10"):
        evaluate.linear_probe(x, y, fit_fraction=1.0)
    with pytest.raises(TypeError, match=r"takes tensors .*ndarray"):
        evaluate.linear_probe(x.numpy(), y)
