"""Bad input gets a clear error naming the argument, not a silent NaN, a plausible wrong number or a raw torch error.

One test per case an audit found slipping through; each passed through (or crashed deep inside) before its check.
"""

import pytest
import torch
import torch.nn.functional as F

from clipcourse import data, diagnostics, evaluate, temperature_maths


def unit(n, d, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_retrieval_recall_refuses_nan_features_and_bad_ks():
    img, txt = unit(6, 8), unit(6, 8, seed=1)
    with pytest.raises(ValueError, match="image_features holds NaN or infinity"):
        evaluate.retrieval_recall(torch.full_like(img, float("nan")), txt)     # was: recall 1.0 everywhere
    with pytest.raises(ValueError, match="text_features holds NaN or infinity"):
        evaluate.retrieval_recall(img, torch.full_like(txt, float("inf")))
    with pytest.raises(ValueError, match=r"ks must be .* >= 1.*\(0,\)"):
        evaluate.retrieval_recall(img, txt, ks=(0,))                           # was: R@0 = 0.0


def test_zero_shot_accuracy_refuses_labels_outside_the_classes():
    img, classes = unit(6, 8), unit(4, 8, seed=1)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 4\).*from -1 to 9"):
        evaluate.zero_shot_accuracy(img, classes, torch.tensor([0, 1, 2, 3, 9, -1]))  # was: counted as misses


def test_alignment_and_uniformity_refuse_a_bad_exponent():
    x, y = unit(6, 8), unit(6, 8, seed=1)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        evaluate.alignment(x, y, alpha=-1.0)                                   # was: a plausible 0.65
    with pytest.raises(ValueError, match="t must be finite"):
        evaluate.uniformity(x, t=float("nan"))                                 # was: nan


def test_similarities_names_the_argument_instead_of_a_matmul_error():
    with pytest.raises(ValueError, match="image_features and text_features need the same feature size"):
        temperature_maths.similarities(unit(6, 8), unit(6, 4))                 # was: mat1 and mat2 shapes ...
    with pytest.raises(ValueError, match="image_features is not L2-normalised"):
        temperature_maths.similarities(unit(6, 8) * 5, unit(6, 8))             # was: "cosines" of 5


def test_optimal_temperature_refuses_unnormalised_features_and_a_tiny_grid():
    img, txt = unit(6, 8), unit(6, 8, seed=1)
    with pytest.raises(ValueError, match="image_features is not L2-normalised"):
        temperature_maths.optimal_temperature(img * 10, txt * 10)              # was: τ* = 10, an end
    with pytest.raises(ValueError, match="grid must be a whole number >= 3"):
        temperature_maths.optimal_temperature(img, txt, grid=1)                # was: τ* = 0.001 silently
    with pytest.raises(ValueError, match="steps must be a whole number >= 0"):
        temperature_maths.descend_log_temperature(img, txt, 0.07, -1)          # was: ([], [])


def test_hardest_negatives_checks_sims_and_k():
    sims = temperature_maths.similarities(unit(6, 8), unit(6, 8, seed=1))
    with pytest.raises(ValueError, match=r"sims must be a square \(B, B\) matrix"):
        diagnostics.hardest_negatives(sims[:3])                                # was: a raw RuntimeError
    with pytest.raises(ValueError, match="sims holds NaN"):
        diagnostics.hardest_negatives(torch.full((3, 3), float("nan")))        # was: NaN negatives
    with pytest.raises(ValueError, match=r"k \(how many hardest negatives\)"):
        diagnostics.hardest_negatives(sims, k=-1)                              # was: topk's RuntimeError


def test_shift_along_refuses_a_nan_vector():
    x = unit(6, 8)
    with pytest.raises(ValueError, match="vector holds NaN or infinity"):
        diagnostics.shift_along(x, torch.full((8,), float("nan")), -1.0)      # was: all-NaN embeddings


def test_scenes_must_hold_valid_integer_attributes():
    bad_colour = torch.tensor([[[9, 0, 0, 0, 1], [1, 1, 0, 1, 1]]])
    with pytest.raises(ValueError, match=r"scenes\[0, 0, 0\] = 9 is out of range"):
        data.swap_family(bad_colour)                                           # was: family 210, a valid id
    with pytest.raises(ValueError, match=r"scenes\[0, 0, 1\] = 9 is out of range"):
        data.render(torch.tensor([[[0, 9, 0, 0, 1], [0, 0, 0, 0, 0]]]))        # was: a blank picture
    scenes = data.sample_scenes(4, two_object_prob=1.0, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="scenes must hold integer attributes"):
        data.swap_family(scenes.float())                                       # was: float family ids


def test_generate_names_a_bad_seed():
    with pytest.raises(TypeError, match="seed must be an int"):
        data.ShapesWorld.generate(4, seed=None)                                # was: manual_seed's RuntimeError
